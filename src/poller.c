/* poller.c: the engine's interest set — the sockets curl asked us to watch
 * (through CURLMOPT_SOCKETFUNCTION) and a wake-up descriptor. epoll on
 * Linux: the epoll descriptor is itself pollable, so a host can watch one
 * descriptor for the whole engine. Elsewhere (or built with -DKP_NO_EPOLL)
 * a plain poll() over the list. No fd_set anywhere, so descriptors above
 * FD_SETSIZE work. Pure C: nothing here touches Lua. */
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include "core.h"

#if defined(__linux__) && !defined(KP_NO_EPOLL)
#define KP_USE_EPOLL 1
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif

#define MIN_EVENTS 64

#ifndef KP_USE_EPOLL
static void set_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  fl = fcntl(fd, F_GETFD);
  if (fl >= 0) (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}
#endif

int kp_poller_init(kp_poller *p) {
  p->epfd = p->wake_r = p->wake_w = -1;
  p->watches = NULL;
  p->n_watches = 0;
  p->cap = MIN_EVENTS;
#ifdef KP_USE_EPOLL
  p->buf = malloc(MIN_EVENTS * sizeof(struct epoll_event));
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  p->wake_r = p->wake_w = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
#else
  {
    int fds[2];
    p->buf = malloc(MIN_EVENTS * sizeof(struct pollfd));
    if (pipe(fds) == 0) {
      set_nonblock_cloexec(fds[0]);
      set_nonblock_cloexec(fds[1]);
      p->wake_r = fds[0];
      p->wake_w = fds[1];
    }
  }
#endif
  if (!p->buf || p->wake_r < 0
#ifdef KP_USE_EPOLL
      || p->epfd < 0
#endif
  ) {
    kp_poller_close(p);
    return -1;
  }
  return 0;
}

void kp_poller_close(kp_poller *p) {
  while (p->watches) {
    kp_watch *w = p->watches;
    p->watches = w->next;
    free(w);
  }
  p->n_watches = 0;
  if (p->epfd >= 0) close(p->epfd);
  if (p->wake_w >= 0 && p->wake_w != p->wake_r) close(p->wake_w);
  if (p->wake_r >= 0) close(p->wake_r);
  p->epfd = p->wake_r = p->wake_w = -1;
  free(p->buf);
  p->buf = NULL;
  p->cap = 0;
}

#ifdef KP_USE_EPOLL
static int epoll_set(kp_poller *p, int op, curl_socket_t s, int what) {
  struct epoll_event ev;
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  ev.data.u64 = 0;
  ev.data.fd = (int)s; /* never a pointer: an event may outlive its watch */
  if (epoll_ctl(p->epfd, op, (int)s, &ev) == 0) return 0;
  /* a descriptor number reused behind our back: fix the set up */
  if (op == EPOLL_CTL_ADD && errno == EEXIST) return epoll_ctl(p->epfd, EPOLL_CTL_MOD, (int)s, &ev);
  if (op == EPOLL_CTL_MOD && errno == ENOENT) return epoll_ctl(p->epfd, EPOLL_CTL_ADD, (int)s, &ev);
  return -1;
}
#endif

static void unlink_watch(kp_poller *p, kp_watch *w) {
  if (w->prev) w->prev->next = w->next; else p->watches = w->next;
  if (w->next) w->next->prev = w->prev;
  p->n_watches--;
  free(w);
}

/* The CURLMOPT_SOCKETFUNCTION work: start, change or stop watching s.
 * `w` is what curl_multi_assign stored for s (NULL the first time).
 * Returns 0, or -1 (curl then fails the transfer). */
int kp_poller_update(kp_poller *p, CURLM *multi, curl_socket_t s, int what, kp_watch *w) {
  if (what == CURL_POLL_REMOVE) {
#ifdef KP_USE_EPOLL
    /* curl calls this before it closes s; ENOENT/EBADF are harmless */
    (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, (int)s, NULL);
#endif
    if (w) unlink_watch(p, w);
    return 0;
  }
  if (!w) {
    w = (kp_watch *)malloc(sizeof *w);
    if (!w) return -1;
    w->fd = s;
    w->what = 0;
    w->prev = NULL;
    w->next = p->watches;
    if (p->watches) p->watches->prev = w;
    p->watches = w;
    p->n_watches++;
    if (curl_multi_assign(multi, s, w) != CURLM_OK) { unlink_watch(p, w); return -1; }
#ifdef KP_USE_EPOLL
    if (epoll_set(p, EPOLL_CTL_ADD, s, what) != 0) {
      curl_multi_assign(multi, s, NULL);
      unlink_watch(p, w);
      return -1;
    }
#endif
    w->what = what;
    return 0;
  }
#ifdef KP_USE_EPOLL
  if (w->what != what && epoll_set(p, EPOLL_CTL_MOD, s, what) != 0) return -1;
#endif
  w->what = what;
  return 0;
}

/* Makes the scratch buffer hold at least n entries of `size` bytes; on
 * failure the old (smaller) buffer stays, which only means fewer events
 * per call. */
static void reserve(kp_poller *p, int n, size_t size) {
  void *b;
  int cap = p->cap;
  if (n <= cap) return;
  while (cap < n) cap *= 2;
  b = realloc(p->buf, (size_t)cap * size);
  if (!b) return;
  p->buf = b;
  p->cap = cap;
}

static int curl_bits(int in, int out, int err) {
  /* an error or hang-up is read (or written) by curl, which then reports
   * the transfer's real cause */
  return (in || err ? CURL_CSELECT_IN : 0) | (out || err ? CURL_CSELECT_OUT : 0);
}

/* Calls fn(ud, socket, curl_bits) for each watched socket that is ready
 * now (never blocks). Returns how many, or -1 with errno. */
int kp_poller_scan(kp_poller *p, kp_ready_fn fn, void *ud) {
  int n, i;
#ifdef KP_USE_EPOLL
  struct epoll_event *ev;
  if (p->n_watches == 0) return 0;
  reserve(p, p->n_watches, sizeof *ev);
  ev = (struct epoll_event *)p->buf;
  do n = epoll_wait(p->epfd, ev, p->cap, 0); while (n < 0 && errno == EINTR);
  for (i = 0; i < n; i++) {
    unsigned int e = ev[i].events;
    fn(ud, (curl_socket_t)ev[i].data.fd,
       curl_bits((e & EPOLLIN) != 0, (e & EPOLLOUT) != 0, (e & (EPOLLERR | EPOLLHUP)) != 0));
  }
#else
  struct pollfd *pf;
  kp_watch *w;
  int m = 0;
  if (p->n_watches == 0) return 0;
  reserve(p, p->n_watches, sizeof *pf);
  pf = (struct pollfd *)p->buf;
  for (w = p->watches; w && m < p->cap; w = w->next, m++) {
    pf[m].fd = (int)w->fd;
    pf[m].events = (short)(((w->what & CURL_POLL_IN) ? POLLIN : 0) | ((w->what & CURL_POLL_OUT) ? POLLOUT : 0));
    pf[m].revents = 0;
  }
  do n = poll(pf, (nfds_t)m, 0); while (n < 0 && errno == EINTR);
  /* fn may change the list; walk the copy */
  for (i = 0; i < m && n > 0; i++) {
    short e = pf[i].revents;
    if (!e) continue;
    fn(ud, (curl_socket_t)pf[i].fd,
       curl_bits((e & POLLIN) != 0, (e & POLLOUT) != 0, (e & (POLLERR | POLLHUP | POLLNVAL)) != 0));
  }
#endif
  return n;
}

static void drain_wake(kp_poller *p) {
  char buf[64];
  while (read(p->wake_r, buf, sizeof buf) > 0) {}
}

/* Sleeps until a watched socket is ready, kp_poller_wake() is called, or
 * timeout_ms passes (-1: no limit). Consumes the wake-up, not the socket
 * events (they stay ready for kp_poller_scan). Returns the number of ready
 * descriptors (0: timeout or signal), or -1 with errno. */
int kp_poller_sleep(kp_poller *p, int timeout_ms) {
  int n;
#ifdef KP_USE_EPOLL
  struct pollfd pf[2];
  pf[0].fd = p->epfd; pf[0].events = POLLIN; pf[0].revents = 0;
  pf[1].fd = p->wake_r; pf[1].events = POLLIN; pf[1].revents = 0;
  n = poll(pf, 2, timeout_ms);
  if (n > 0 && pf[1].revents) drain_wake(p);
#else
  struct pollfd *pf;
  kp_watch *w;
  int m = 1;
  reserve(p, p->n_watches + 1, sizeof *pf);
  pf = (struct pollfd *)p->buf;
  pf[0].fd = p->wake_r; pf[0].events = POLLIN; pf[0].revents = 0;
  for (w = p->watches; w && m < p->cap; w = w->next, m++) {
    pf[m].fd = (int)w->fd;
    pf[m].events = (short)(((w->what & CURL_POLL_IN) ? POLLIN : 0) | ((w->what & CURL_POLL_OUT) ? POLLOUT : 0));
    pf[m].revents = 0;
  }
  n = poll(pf, (nfds_t)m, timeout_ms);
  if (n > 0 && pf[0].revents) drain_wake(p);
#endif
  if (n < 0 && errno == EINTR) n = 0;
  return n;
}

/* Makes a concurrent (or the next) kp_poller_sleep return. Async-signal
 * and thread safe: one write(2). */
void kp_poller_wake(kp_poller *p) {
#ifdef KP_USE_EPOLL
  unsigned long long one = 1;
  ssize_t r = write(p->wake_w, &one, sizeof one);
#else
  char one = 1;
  ssize_t r = write(p->wake_w, &one, 1);
#endif
  (void)r; /* EAGAIN: a wake-up is already pending */
}

/* The one descriptor a host can poll for readability (the epoll set), or
 * -1 where there is none (the poll() fallback: use the watch list). */
int kp_poller_fd(const kp_poller *p) { return p->epfd; }
