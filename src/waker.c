/* waker.c: a thread that turns "an engine has something to do" into one
 * byte on a unix socket, for hosts that can wait only on sockets they
 * opened themselves (OpenResty's cosockets cannot watch curl's sockets,
 * nor the engine's epoll descriptor).
 *
 *   local w = core.waker()            -- listens on w:path()
 *   w:add(engine)                     -- watch this engine's descriptor
 *   -- the host connects to "unix:" .. w:path() and then, in turn:
 *   --   w:arm(ms)       (arms the thread: curl's timer is due in ms
 *   --                    milliseconds; -1: no timer) or, the same,
 *   --                    writes "<ms>\n" to the socket
 *   --   reads one byte  (an engine is ready, the timer is due, or
 *   --                    w:ring() was called)
 *   --   drives the engines
 *   w:retime(ms)                      -- (any thread of the host's) the timer
 *                                     -- is due in ms at the latest: a new
 *                                     -- transfer, without waking the host
 *   w:close()                         -- stops and joins the thread
 *
 * One byte per arming: however many replies arrive, the host wakes once
 * for each turn it takes, and the thread never spins on a descriptor that
 * stays ready until the host has driven the engines. The thread keeps the
 * timer too, so the host's read never times out (an OpenResty cosocket
 * logs an error for every read that does). When the host closes its end,
 * the thread goes back to accepting (an OpenResty driver connects anew
 * each time it starts). Only the creating process may connect
 * (SO_PEERCRED), and the socket file is mode 0600.
 *
 * w:arm and w:retime never wake the thread: they set its timer (a timerfd)
 * and re-enable its one-shot watch of the engines in the epoll set it
 * sleeps on. So the thread runs only when it has a byte to send: on a
 * host's CPU, each wake-up of another thread delays what the host serves
 * next (an OpenResty worker's other requests). An arming written to the
 * socket wakes it to read the message, then works the same way.
 *
 * Linux only (epoll, eventfd, timerfd); elsewhere core.waker is absent and
 * hosts step instead. The thread blocks every signal, so the host's handlers
 * (nginx's SIGQUIT, SIGHUP, ...) keep running in the host's own thread. */
#define _GNU_SOURCE
#include "core.h"

#if defined(__linux__) && !defined(KP_NO_EPOLL)
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define KP_WAKER_MT "koophone.waker"

/* what the thread's epoll set (`top`) holds, by tag */
enum { TAG_STOP, TAG_CONN, TAG_HUB, TAG_TIMER };

typedef struct kp_waker {
  int top;              /* the epoll set the thread sleeps on: stop, the
                           host's connection, and (one-shot, re-enabled by
                           each arming) hub and timer */
  int hub;              /* epoll set of the engines' descriptors and `ring` */
  int ring;             /* eventfd: w:ring() */
  int timer;            /* timerfd (CLOCK_MONOTONIC): the armed timer */
  int stop;             /* eventfd: w:close() */
  int listener;
  pthread_mutex_t mu;   /* guards the next three (the host's thread and
                           the waker's both change them) */
  int armed;            /* a byte may go: set by an arming, cleared by the
                           byte */
  long long due;        /* now_ms() the armed timer is due; -1: none */
  long long pending;    /* a retime made while disarmed: applies to the
                           next arming; -1: none */
  int hold;             /* this arming's first reply may be held (the host
                           has other transfers in flight) */
  pid_t pid;            /* the process that may connect */
  pthread_t thread;
  int started, closed, mu_made;
  int linger_ms;        /* see serve() */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} kp_waker;

static kp_waker *check_waker(lua_State *L) {
  kp_waker *w = (kp_waker *)luaL_checkudata(L, 1, KP_WAKER_MT);
  if (w->closed) luaL_error(L, "koophone waker is closed");
  return w;
}

/* empties an eventfd: whether it had rung */
static int drain(int fd) {
  uint64_t v;
  int rang = 0;
  while (read(fd, &v, sizeof v) > 0) rang = 1;
  return rang;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* (un)sets the timerfd to fire at now_ms() `due` (-1: never) */
static void set_timer(kp_waker *w, long long due) {
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  if (due >= 0) {
    its.it_value.tv_sec = (time_t)(due / 1000);
    its.it_value.tv_nsec = (long)(due % 1000) * 1000000L;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1; /* 0 disarms */
  }
  timerfd_settime(w->timer, due >= 0 ? TFD_TIMER_ABSTIME : 0, &its, NULL);
}

/* epoll_ctl(set, op, fd) for `events`, with `tag` as the event's data */
static int watch(int set, int op, int fd, uint32_t events, uint32_t tag) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events;
  ev.data.u32 = tag;
  return epoll_ctl(set, op, fd, &ev);
}

/* re-enables a one-shot entry of the thread's epoll set */
static void enable(kp_waker *w, int fd, uint32_t tag) {
  watch(w->top, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLONESHOT, tag);
}

/* Arms the thread: one byte when an engine is ready or, with ms >= 0, in
 * ms milliseconds (or sooner: a retime made while disarmed). With `hold`,
 * a reply is held linger_ms even if it is the first in a while (see
 * serve()). From either thread; it does not wake the waker's unless there
 * is a byte to send. */
static void arm(kp_waker *w, long long ms, int hold) {
  long long due = ms < 0 ? -1 : now_ms() + ms;
  pthread_mutex_lock(&w->mu);
  if (w->pending >= 0 && (due < 0 || w->pending < due)) due = w->pending;
  w->pending = -1;
  w->due = due;
  w->hold = hold;
  set_timer(w, due); /* before `armed`: resets an expiry of the last arming */
  w->armed = 1;
  pthread_mutex_unlock(&w->mu);
  enable(w, w->hub, TAG_HUB);
  enable(w, w->timer, TAG_TIMER);
}

/* The timer is due by now_ms() `due`: earlier than armed moves it; while
 * disarmed (the host is taking its turn) it waits for the next arming. */
static void retime(kp_waker *w, long long due) {
  pthread_mutex_lock(&w->mu);
  if (!w->armed) {
    if (w->pending < 0 || due < w->pending) w->pending = due;
  } else if (w->due < 0 || due < w->due) {
    w->due = due;
    set_timer(w, due);
  }
  pthread_mutex_unlock(&w->mu);
}

/* The armed thread holds its first reply too (see serve()); ignored while
 * disarmed (the next arming says). */
static void hold(kp_waker *w) {
  pthread_mutex_lock(&w->mu);
  if (w->armed) w->hold = 1;
  pthread_mutex_unlock(&w->mu);
}

/* The thread's side of a byte: 1 if armed (and now disarmed), 2 if armed
 * with `hold`, 0 if not armed. */
static int disarm(kp_waker *w) {
  int was;
  pthread_mutex_lock(&w->mu);
  was = w->armed ? 1 + (w->hold != 0) : 0;
  w->armed = 0;
  pthread_mutex_unlock(&w->mu);
  return was;
}

/* The host's messages on the socket, "<ms>\n" each, as they come (a read
 * may hold part of one, or several): each complete one arms the thread. */
typedef struct message {
  long long acc;     /* the number read so far */
  int neg, digits;
} message;

static void take(kp_waker *w, message *m, const char *p, ssize_t n) {
  ssize_t i;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (c >= '0' && c <= '9') {
      if (m->acc < 86400000LL) m->acc = m->acc * 10 + (c - '0');
      m->digits++;
    } else if (c == '-') {
      m->neg = 1;
    } else if (c == '\n') {
      arm(w, (m->neg || !m->digits) ? -1 : m->acc, 0);
      m->acc = 0;
      m->neg = m->digits = 0;
    }
  }
}

/* Serves one connection until its host end closes (0) or stop rings (1).
 * With linger_ms, a reply is held linger_ms, so that the host reads the
 * rest of its burst (the replies to queries sent together) in the same
 * turn, when it comes within 10 linger_ms of the last byte (the rest of a
 * burst already begun) or the host armed with `hold` (other transfers are
 * in flight: the first of a burst). A lone reply is not held. */
static int serve(kp_waker *w, int conn) {
  message m = {0, 0, 0};
  long long last_sent = -1, hold_until = -1;
  if (watch(w->top, EPOLL_CTL_ADD, conn, EPOLLIN | EPOLLRDHUP, TAG_CONN) < 0) return 0;
  arm(w, -1, 0); /* a new host: armed, no timer */
  for (;;) {
    struct epoll_event evs[4];
    long long now = now_ms();
    int timeout = hold_until < 0 ? -1 : hold_until <= now ? 0 : (int)(hold_until - now);
    int n = epoll_wait(w->top, evs, 4, timeout), i, ready = 0, due = 0, fire = 0, armed;
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (i = 0; i < n; i++) {
      uint32_t tag = evs[i].data.u32;
      if (tag == TAG_STOP) return 1;
      if (tag == TAG_CONN) {
        char buf[64];
        ssize_t k = read(conn, buf, sizeof buf);
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN)) return 0;
        if (k > 0) take(w, &m, buf, k);
      } else if (tag == TAG_TIMER) {
        uint64_t expired;
        /* nothing to read: an expiry the host's last arming reset */
        due = read(w->timer, &expired, sizeof expired) == (ssize_t)sizeof expired;
      } else if (tag == TAG_HUB) {
        ready = 1;
      }
    }
    now = now_ms();
    if (hold_until >= 0) {
      fire = due || now >= hold_until;
    } else if ((due || ready) && (armed = disarm(w)) != 0) {
      /* (a ring is not a reply: not held) */
      if (!due && w->linger_ms > 0 && (armed == 2 || (last_sent >= 0 && now - last_sent < 10LL * w->linger_ms)) &&
          !drain(w->ring)) {
        hold_until = now + w->linger_ms;
        continue;
      }
      fire = 1;
    }
    if (fire) {
      drain(w->ring);
      if (send(conn, "!", 1, MSG_NOSIGNAL) != 1) return 0;
      hold_until = -1;
      last_sent = now;
    }
  }
}

/* accepts a connection of the creating process (-1: stop rang) */
static int accept_own(kp_waker *w) {
  for (;;) {
    struct pollfd p[2] = {{w->stop, POLLIN, 0}, {w->listener, POLLIN, 0}};
    struct ucred cred;
    socklen_t len = sizeof cred;
    int conn;
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (p[0].revents) return -1;
    conn = accept4(w->listener, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) continue;
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == w->pid) return conn;
    close(conn);
  }
}

static void *waker_main(void *arg) {
  kp_waker *w = (kp_waker *)arg;
  pthread_setname_np(pthread_self(), "koophone-waker"); /* for top -H, and the specs */
  for (;;) {
    int conn = accept_own(w), stopped;
    if (conn < 0) break;
    stopped = serve(w, conn);
    close(conn);
    if (stopped) break;
  }
  return NULL;
}

static void close_fds(kp_waker *w) {
  if (w->listener >= 0) close(w->listener);
  if (w->top >= 0) close(w->top);
  if (w->hub >= 0) close(w->hub);
  if (w->ring >= 0) close(w->ring);
  if (w->timer >= 0) close(w->timer);
  if (w->stop >= 0) close(w->stop);
  w->listener = w->top = w->hub = w->ring = w->timer = w->stop = -1;
  if (w->mu_made) pthread_mutex_destroy(&w->mu);
  w->mu_made = 0;
}

/* w:close(): stops and joins the thread, removes the socket file. Twice is
 * fine; __gc calls it. A child process (after fork) only closes its
 * descriptors: the thread and the file are its parent's. */
static int waker_close(lua_State *L) {
  kp_waker *w = (kp_waker *)luaL_checkudata(L, 1, KP_WAKER_MT);
  if (w->closed) return 0;
  w->closed = 1;
  if (w->started && w->pid == getpid()) {
    uint64_t one = 1;
    if (write(w->stop, &one, sizeof one) < 0) { /* the eventfd cannot be full */ }
    pthread_join(w->thread, NULL);
    unlink(w->path);
  }
  close_fds(w);
  return 0;
}

/* Removes the socket files of processes that are gone (killed before
 * close() could remove theirs): koophone-waker-<pid>-* whose pid is dead. */
static void sweep_stale(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  if (!d) return;
  while ((e = readdir(d)) != NULL) {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    long pid;
    int n;
    if (strncmp(e->d_name, "koophone-waker-", 15) != 0) continue;
    pid = strtol(e->d_name + 15, NULL, 10);
    if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (n > 0 && (size_t)n < sizeof path) unlink(path);
  }
  closedir(d);
}

/* the socket file: $TMPDIR (or /tmp) / koophone-waker-<pid>-<random> */
static int bind_listener(kp_waker *w) {
  struct sockaddr_un sa;
  const char *dir = getenv("TMPDIR");
  unsigned long long tag = 0;
  int n;
  if (!dir || !*dir) dir = "/tmp";
  if (getrandom(&tag, sizeof tag, GRND_NONBLOCK) != (ssize_t)sizeof tag)
    tag = (unsigned long long)time(NULL) ^ ((unsigned long long)w->pid << 32);
  n = snprintf(w->path, sizeof w->path, "%s/koophone-waker-%ld-%016llx", dir, (long)w->pid, tag);
  if (n < 0 || (size_t)n >= sizeof w->path) return -1;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, w->path, (size_t)n + 1);
  sweep_stale(dir);
  w->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (w->listener < 0) return -1;
  if (bind(w->listener, (struct sockaddr *)&sa, sizeof sa) < 0) return -1;
  if (chmod(w->path, 0600) < 0 || listen(w->listener, 4) < 0) {
    unlink(w->path);
    return -1;
  }
  return 0;
}

static int start_thread(kp_waker *w) {
  sigset_t all, old;
  int rc;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the thread */
  rc = pthread_create(&w->thread, NULL, waker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

/* core.waker{linger_ms = 0} -> a waker, or nil and a message */
static int waker_new(lua_State *L) {
  kp_waker *w;
  long linger;
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  linger = kp_opt_range(L, 1, "linger_ms", 0, 1000, "waker option", "ms a reply of a burst is held");
  w = (kp_waker *)lua_newuserdata(L, sizeof *w);
  memset(w, 0, sizeof *w);
  w->linger_ms = (int)linger;
  w->top = w->hub = w->ring = w->timer = w->stop = w->listener = -1;
  w->due = w->pending = -1;
  w->pid = getpid();
  luaL_getmetatable(L, KP_WAKER_MT);
  lua_setmetatable(L, -2);
  w->mu_made = pthread_mutex_init(&w->mu, NULL) == 0;
  w->top = epoll_create1(EPOLL_CLOEXEC);
  w->hub = epoll_create1(EPOLL_CLOEXEC);
  w->ring = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  w->stop = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!w->mu_made || w->top < 0 || w->hub < 0 || w->ring < 0 || w->timer < 0 || w->stop < 0 ||
      watch(w->hub, EPOLL_CTL_ADD, w->ring, EPOLLIN, 0) < 0 ||
      watch(w->top, EPOLL_CTL_ADD, w->stop, EPOLLIN, TAG_STOP) < 0 ||
      /* disarmed until a host connects */
      watch(w->top, EPOLL_CTL_ADD, w->hub, EPOLLONESHOT, TAG_HUB) < 0 ||
      watch(w->top, EPOLL_CTL_ADD, w->timer, EPOLLONESHOT, TAG_TIMER) < 0 ||
      bind_listener(w) < 0) {
    int err = errno;
    w->closed = 1;
    close_fds(w);
    lua_pushnil(L);
    lua_pushfstring(L, "koophone waker: %s", strerror(err));
    return 2;
  }
  if (start_thread(w) != 0) {
    w->closed = 1;
    unlink(w->path);
    close_fds(w);
    lua_pushnil(L);
    lua_pushliteral(L, "koophone waker: cannot start its thread");
    return 2;
  }
  w->started = 1;
  return 1;
}

/* w:add(engine) -> true: the thread watches the engine's descriptor too
 * (until the engine closes). Adding one twice is fine. */
static int waker_add(lua_State *L) {
  kp_waker *w = check_waker(L);
  kp_engine *e = kp_check_engine(L, 2);
  int fd = kp_poller_fd(&e->poller);
  if (fd < 0) return luaL_error(L, "koophone waker: this engine has no descriptor to watch");
  /* (the hub's event data is never read: any ready engine means a turn) */
  if (watch(w->hub, EPOLL_CTL_ADD, fd, EPOLLIN, 0) < 0 && errno != EEXIST)
    return luaL_error(L, "koophone waker: cannot watch the engine: %s", strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* w:ring(): the host gets a byte at its next turn even if no engine is
 * ready (a new wait whose curl timer is sooner than the host's timeout). */
static int waker_ring(lua_State *L) {
  kp_waker *w = check_waker(L);
  uint64_t one = 1;
  if (write(w->ring, &one, sizeof one) < 0) { /* saturated: it rings anyway */ }
  return 0;
}

/* milliseconds from argument 2: at most a day; below 0 (and NaN) -> `low` */
static long long check_ms(lua_State *L, long long low) {
  lua_Number ms = luaL_checknumber(L, 2);
  if (!(ms >= 0)) return low;
  return ms > 86400000 ? 86400000 : (long long)ms;
}

/* w:arm(ms [, hold]): what writing "<ms>\n" to the socket does (ms < 0:
 * no timer), without waking the thread: the host's next byte comes when an
 * engine is ready or the timer is due. With hold (the host has several
 * transfers in flight), the first reply is held linger_ms too. Call it
 * only after reading the last byte. */
static int waker_arm(lua_State *L) {
  kp_waker *w = check_waker(L);
  arm(w, check_ms(L, -1), lua_toboolean(L, 3));
  return 0;
}

/* w:retime(ms): the armed thread's timer is due in ms milliseconds at the
 * latest (a new transfer's curl timer), without a byte to the host now,
 * and without waking the thread. Made while the thread is disarmed (the
 * host is taking its turn), it applies to the next arming. */
static int waker_retime(lua_State *L) {
  kp_waker *w = check_waker(L);
  retime(w, now_ms() + check_ms(L, 0));
  return 0;
}

/* w:hold(): as if the arming had `hold` (the host has started more
 * transfers since: their replies may come as a burst), without waking the
 * thread. Ignored while disarmed. */
static int waker_hold(lua_State *L) {
  hold(check_waker(L));
  return 0;
}

/* w:path() -> the socket file to connect to */
static int waker_path(lua_State *L) {
  kp_waker *w = check_waker(L);
  lua_pushstring(L, w->path);
  return 1;
}

static int waker_tostring(lua_State *L) {
  kp_waker *w = (kp_waker *)luaL_checkudata(L, 1, KP_WAKER_MT);
  if (w->closed) lua_pushliteral(L, "koophone.waker (closed)");
  else lua_pushfstring(L, "koophone.waker (%s)", w->path);
  return 1;
}

int kp_waker_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"add", waker_add},
    {"arm", waker_arm},
    {"hold", waker_hold},
    {"ring", waker_ring},
    {"retime", waker_retime},
    {"path", waker_path},
    {"close", waker_close},
    {NULL, NULL}
  };
  kp_new_type(L, KP_WAKER_MT, methods, waker_close, waker_tostring);
  lua_pushcfunction(L, waker_new);
  lua_setfield(L, -2, "waker");
  return 0;
}

#else /* no epoll: no waker; hosts step */
int kp_waker_open(lua_State *L) {
  (void)L;
  return 0;
}
#endif
