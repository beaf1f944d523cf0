/* waker.c: a thread that turns "an engine has something to do" into one
 * byte on a unix socket, for hosts that can wait only on sockets they
 * opened themselves (OpenResty's cosockets cannot watch curl's sockets,
 * nor the engine's epoll descriptor).
 *
 *   local w = core.waker()            -- listens on w:path()
 *   w:add(engine)                     -- watch this engine's descriptor
 *   -- the host connects to "unix:" .. w:path() and then, in turn:
 *   --   writes "<ms>\n" (arms the thread: curl's timer is due in ms
 *   --                    milliseconds; -1: no timer)
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
 * Linux only (epoll, eventfd); elsewhere core.waker is absent and hosts
 * step instead. The thread blocks every signal, so the host's handlers
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
#include <sys/un.h>
#include <unistd.h>

#define KP_WAKER_MT "koophone.waker"

typedef struct kp_waker {
  int hub;              /* epoll set of the engines' descriptors and `ring` */
  int ring;             /* eventfd: w:ring() */
  int retime;           /* eventfd: w:retime(ms) */
  long long retime_due; /* now_ms() the next timer is due by, -1: none
                           (__atomic: the host's thread sets it) */
  int stop;             /* eventfd: w:close() */
  int listener;
  pid_t pid;            /* the process that may connect */
  pthread_t thread;
  int started, closed;
  int linger_ms;        /* see serve() */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} kp_waker;

static kp_waker *check_waker(lua_State *L) {
  kp_waker *w = (kp_waker *)luaL_checkudata(L, 1, KP_WAKER_MT);
  if (w->closed) luaL_error(L, "koophone waker is closed");
  return w;
}

static void drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) > 0) {}
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The host's messages, "<ms>\n" each, as they come (a read may hold part
 * of one, or several): each complete one arms the thread with its timer. */
typedef struct arming {
  long long acc;     /* the number read so far */
  int neg, digits;
  int armed;
  long long due;     /* now_ms() when the timer is due; -1: none */
} arming;

static void take(arming *a, const char *p, ssize_t n) {
  ssize_t i;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (c >= '0' && c <= '9') {
      if (a->acc < 86400000LL) a->acc = a->acc * 10 + (c - '0');
      a->digits++;
    } else if (c == '-') {
      a->neg = 1;
    } else if (c == '\n') {
      a->armed = 1;
      a->due = (a->neg || !a->digits) ? -1 : now_ms() + a->acc;
      a->acc = 0;
      a->neg = a->digits = 0;
    }
  }
}

/* Serves one connection until its host end closes (0) or stop rings (1).
 * With linger_ms, a reply that comes within 10 linger_ms of the last byte
 * (a burst: the replies to queries sent together) is held linger_ms, so
 * that the host reads the rest of the burst in the same turn. */
static int serve(kp_waker *w, int conn) {
  arming a = {0, 0, 0, 1, -1};
  long long last_sent = -1, hold_until = -1;
  for (;;) {
    struct pollfd p[4] = {
      {w->stop, POLLIN, 0}, {conn, POLLIN, 0}, {w->retime, POLLIN, 0}, {w->hub, POLLIN, 0}
    };
    long long now = now_ms(), next = -1;
    int holding = a.armed && hold_until >= 0, watch_hub = a.armed && !holding, fire = 0, timeout = -1;
    if (a.armed && a.due >= 0) next = a.due;
    if (holding && (next < 0 || hold_until < next)) next = hold_until;
    if (next >= 0) timeout = next <= now ? 0 : (int)(next - now);
    if (poll(p, watch_hub ? 4 : 3, timeout) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents) return 1;
    if (p[1].revents) {
      char buf[64];
      ssize_t n = read(conn, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return 0;
      if (n > 0) take(&a, buf, n);
      continue; /* look at the hub and the timer again before reporting */
    }
    if (p[2].revents) {
      /* an earlier timer: only while armed (the host's next arming reads
       * every engine's timer anyway). One that comes in the same poll as
       * an arming applies to it: at worst an early byte, never a lost
       * timer (the host may retime right after it armed). */
      long long due = __atomic_exchange_n(&w->retime_due, -1LL, __ATOMIC_ACQ_REL);
      drain(w->retime);
      if (a.armed && due >= 0 && (a.due < 0 || due < a.due)) a.due = due;
      continue;
    }
    now = now_ms();
    if (a.armed && a.due >= 0 && now >= a.due) fire = 1;
    if (holding && now >= hold_until) fire = 1;
    if (!fire && watch_hub && p[3].revents) {
      if (w->linger_ms > 0 && last_sent >= 0 && now - last_sent < 10LL * w->linger_ms) {
        hold_until = now + w->linger_ms;
        continue;
      }
      fire = 1;
    }
    if (fire) {
      drain(w->ring);
      if (send(conn, "!", 1, MSG_NOSIGNAL) != 1) return 0;
      a.armed = 0;
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
  if (w->hub >= 0) close(w->hub);
  if (w->ring >= 0) close(w->ring);
  if (w->retime >= 0) close(w->retime);
  if (w->stop >= 0) close(w->stop);
  w->listener = w->hub = w->ring = w->retime = w->stop = -1;
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
  struct epoll_event ev;
  long linger;
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  linger = kp_opt_range(L, 1, "linger_ms", 0, 1000, "waker option", "ms a reply of a burst is held");
  w = (kp_waker *)lua_newuserdata(L, sizeof *w);
  memset(w, 0, sizeof *w);
  w->linger_ms = (int)linger;
  w->hub = w->ring = w->retime = w->stop = w->listener = -1;
  w->retime_due = -1;
  w->pid = getpid();
  luaL_getmetatable(L, KP_WAKER_MT);
  lua_setmetatable(L, -2);
  w->hub = epoll_create1(EPOLL_CLOEXEC);
  w->ring = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->retime = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->stop = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = w->ring;
  if (w->hub < 0 || w->ring < 0 || w->retime < 0 || w->stop < 0 || epoll_ctl(w->hub, EPOLL_CTL_ADD, w->ring, &ev) < 0 ||
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
  struct epoll_event ev;
  if (fd < 0) return luaL_error(L, "koophone waker: this engine has no descriptor to watch");
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(w->hub, EPOLL_CTL_ADD, fd, &ev) < 0 && errno != EEXIST)
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

/* w:retime(ms): the armed thread's timer is due in ms milliseconds at the
 * latest (a new transfer's curl timer), without a byte to the host now. */
static int waker_retime(lua_State *L) {
  kp_waker *w = check_waker(L);
  lua_Number ms = luaL_checknumber(L, 2);
  long long due, seen;
  uint64_t one = 1;
  if (!(ms >= 0)) ms = 0;
  if (ms > 86400000) ms = 86400000;
  due = now_ms() + (long long)ms;
  seen = __atomic_load_n(&w->retime_due, __ATOMIC_ACQUIRE);
  while (seen < 0 || due < seen) { /* keep the earliest */
    if (__atomic_compare_exchange_n(&w->retime_due, &seen, due, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
  }
  if (write(w->retime, &one, sizeof one) < 0) { /* saturated: the thread looks anyway */ }
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
