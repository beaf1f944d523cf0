/* engine.c: the engine userdata. One CURLM (the transfers and their
 * connection pool) and one CURLSH (DNS cache and TLS sessions) per engine;
 * every request of a client goes through it. curl is driven with
 * curl_multi_socket_action: it tells us which sockets to watch
 * (on_socket -> the poller's interest set) and when its timer is due
 * (on_timer); perform() hands it the ready sockets and the due timer.
 * Nothing here blocks except engine:wait(), and no curl callback ever
 * calls into Lua: finished transfers are recorded in C (the finished list)
 * and reported by the next perform(). */
#include <stdlib.h>
#include <stdio.h>
#include <time.h>
#include "core.h"

/* Limits of the numeric engine options. */
#define MAX_CONNECTIONS 1000000L
#define MAX_POOL 1000000L
/* engine:wait() sleeps at most a day per call */
#define MAX_WAIT_MS 86400000

/* Slots of the engine's user value table. */
#define SLOT_INFLIGHT 1 /* lightuserdata(kp_request*) -> request userdata */
#define SLOT_JSON 2     /* the private cjson instance */

kp_engine *kp_check_engine(lua_State *L, int idx) {
  kp_engine *e = (kp_engine *)luaL_checkudata(L, idx, KP_ENGINE_MT);
  if (e->closed) luaL_error(L, "koophone engine is closed");
  return e;
}

CURL *kp_engine_take_easy(kp_engine *e) {
  if (e->pool_len > 0) return e->pool[--e->pool_len];
  return curl_easy_init();
}

/* Reset handles keep their live connections' cache entries out of the way
 * (those belong to the multi), so reuse saves only the allocation. */
void kp_engine_give_easy(kp_engine *e, CURL *easy) {
  if (e->pool_len < e->pool_cap) {
    curl_easy_reset(easy);
    e->pool[e->pool_len++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

/* An empty buffer for b (which holds none) when the engine has one kept. */
void kp_engine_lend_buf(kp_engine *e, kp_buf *b) {
  if (b->data || e->n_spare == 0) return;
  *b = e->spare[--e->n_spare];
  b->len = 0;
}

/* Takes b's memory back for a later reply (or frees it); b is left empty.
 * A closed engine keeps nothing: close() has freed its spares. */
void kp_engine_keep_buf(kp_engine *e, kp_buf *b) {
  if (b->data && !e->closed && e->n_spare < KP_SPARES && b->cap <= KP_SPARE_MAX) {
    e->spare[e->n_spare++] = *b;
    b->data = NULL;
    b->len = b->cap = 0;
  }
  kp_buf_free(b);
}

static int opt_boolean(lua_State *L, int t, const char *k, int dflt) {
  int v = dflt;
  if (lua_isnoneornil(L, t)) return dflt;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* The engine's random source (for request ids): xorshift128+ seeded from
 * /dev/urandom, falling back to the clock and the engine's address. */
static void seed_random(kp_engine *e) {
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = 0;
  if (f) { got = fread(e->rng, sizeof e->rng, 1, f); fclose(f); }
  if (got != 1 || (e->rng[0] | e->rng[1]) == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->rng[0] = (unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (unsigned long long)(size_t)e;
    e->rng[1] = (unsigned long long)ts.tv_sec ^ 0xD1B54A32D192ED03ULL;
  }
}

static unsigned long long next_random(kp_engine *e) {
  unsigned long long s1 = e->rng[0];
  const unsigned long long s0 = e->rng[1];
  e->rng[0] = s0;
  s1 ^= s1 << 23;
  e->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return e->rng[1] + s0;
}

/* engine:uuid() -> a random UUID v4 string (a fresh x-request-id) */
static int engine_uuid(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  unsigned long long a = next_random(e), b = next_random(e);
  static const char HEX[] = "0123456789abcdef";
  char s[36];
  int i, k = 0;
  a = (a & 0xFFFFFFFFFFFF0FFFULL) | 0x4000ULL;          /* version 4 */
  b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL; /* variant 10 */
  /* 8-4-4-4-12 lower-case hex digits (what snprintf's %llx gave, without
   * its cost on every request) */
  for (i = 60; i >= 0; i -= 4) {
    if (k == 8 || k == 13) s[k++] = '-';
    s[k++] = HEX[(a >> i) & 15];
  }
  for (i = 60; i >= 0; i -= 4) {
    if (k == 18 || k == 23) s[k++] = '-';
    s[k++] = HEX[(b >> i) & 15];
  }
  lua_pushlstring(L, s, 36);
  return 1;
}

/* ---- curl's callbacks: C only ---- */

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* CURLMOPT_SOCKETFUNCTION: curl says which sockets to watch, for what */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  kp_engine *e = (kp_engine *)userp;
  (void)easy;
  return kp_poller_update(&e->poller, e->multi, s, what, (kp_watch *)socketp);
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) in timeout_ms
 * (-1: no timer). Only recorded: calling curl from here is not allowed. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  kp_engine *e = (kp_engine *)userp;
  (void)multi;
  /* firing early is harmless (curl re-reports its timer), overflow is not */
  if (timeout_ms > MAX_WAIT_MS) timeout_ms = MAX_WAIT_MS;
  e->timer_due = timeout_ms < 0 ? -1 : now_us() + (long long)timeout_ms * 1000;
  return 0;
}

/* ---- the in-flight and finished lists ---- */

/* Takes r out of the list it is on: in flight while KP_PENDING, finished
 * (not yet reported) once KP_DONE. */
void kp_engine_unlist(kp_engine *e, kp_request *r) {
  kp_request **head = r->state == KP_PENDING ? &e->inflight : &e->done_head;
  if (r->prev) r->prev->next = r->next; else *head = r->next;
  if (r->next) r->next->prev = r->prev;
  else if (r->state != KP_PENDING) e->done_tail = r->prev;
  r->prev = r->next = NULL;
  if (r->state == KP_PENDING) e->n_inflight--;
}

static void append_done(kp_engine *e, kp_request *r) {
  r->next = NULL;
  r->prev = e->done_tail;
  if (e->done_tail) e->done_tail->next = r; else e->done_head = r;
  e->done_tail = r;
}

/* Moves every transfer curl says is done to the finished list. */
static void collect(kp_engine *e) {
  CURLMsg *m;
  int msgs = 0;
  while ((m = curl_multi_info_read(e->multi, &msgs)) != NULL) {
    kp_request *r = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (!r || r->engine != e || r->state != KP_PENDING) continue;
    kp_engine_unlist(e, r);
    kp_request_finish(r, m->data.result); /* state becomes KP_DONE */
    append_done(e, r);
  }
}

static void on_ready(void *ud, curl_socket_t s, int bits) {
  kp_engine *e = (kp_engine *)ud;
  int running = 0;
  curl_multi_socket_action(e->multi, s, bits, &running);
}

/* Runs curl's timer if it is due. A premature call is harmless: curl then
 * reports its timer again. Returns 1 when it ran. */
static int run_timer(kp_engine *e, int force) {
  int running = 0;
  if (!force && (e->timer_due < 0 || e->timer_due > now_us())) return 0;
  e->timer_due = -1;
  curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  return 1;
}

/* Advances every transfer without blocking: the ready sockets, then the
 * timer (a few rounds while curl asks for "again at once"). Pure C. */
static int drive(kp_engine *e) {
  int rounds = 0;
  if (kp_poller_scan(&e->poller, on_ready, e) < 0) return -1;
  while (rounds < 4 && run_timer(e, 0)) rounds++;
  collect(e);
  return 0;
}

/* Used by request.c once r is in the in-flight map: hands r's easy handle
 * to the multi and starts the transfer now (connect, send). Never raises;
 * returns curl's code, and on failure nothing changed. A request that ends
 * already (e.g. a malformed URL, or a refused connect) is on the finished
 * list, for the next perform() to report. */
int kp_engine_add(kp_engine *e, kp_request *r) {
  CURLMcode mc = curl_multi_add_handle(e->multi, r->easy);
  if (mc != CURLM_OK) return (int)mc;
  r->engine = e;
  r->state = KP_PENDING;
  r->prev = NULL;
  r->next = e->inflight;
  if (e->inflight) e->inflight->prev = r;
  e->inflight = r;
  e->n_inflight++;
  run_timer(e, 1);
  collect(e);
  return CURLM_OK;
}

/* ---- the engine userdata ---- */

/* core.engine{max_connections=, max_host_connections=, multiplex=, pool=} */
static int engine_new(lua_State *L) {
  kp_engine *e;
  long max_total, max_host, pool;
  int multiplex;
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  max_total = kp_opt_range(L, 1, "max_connections", 0, MAX_CONNECTIONS, "engine option", "0: no limit");
  max_host = kp_opt_range(L, 1, "max_host_connections", 0, MAX_CONNECTIONS, "engine option", "0: no limit");
  pool = kp_opt_range(L, 1, "pool", 256, MAX_POOL, "engine option", "idle easy handles kept");
  multiplex = opt_boolean(L, 1, "multiplex", 1);

  e = (kp_engine *)kp_newuserdata(L, sizeof *e);
  e->multi = NULL; e->share = NULL; e->inflight = NULL; e->n_inflight = 0;
  e->done_head = e->done_tail = NULL;
  e->pool = NULL; e->pool_len = 0; e->pool_cap = 0; e->closed = 1;
  e->timer_due = -1;
  e->spin_credit = 0;
  e->n_spare = 0;
  e->poller.epfd = e->poller.wake_r = e->poller.wake_w = -1;
  e->poller.watches = NULL; e->poller.n_watches = 0; e->poller.buf = NULL; e->poller.cap = 0;

  /* user value first: the JSON instance may raise, and a half-built engine
   * must not have a __gc that frees what it does not own */
  lua_createtable(L, 2, 0);
  lua_newtable(L);
  lua_rawseti(L, -2, SLOT_INFLIGHT);
  kp_json_new(L);
  lua_rawseti(L, -2, SLOT_JSON);
  kp_setuservalue(L, -2);

  e->multi = curl_multi_init();
  e->share = curl_share_init();
  e->pool = (CURL **)calloc((size_t)(pool > 0 ? pool : 1), sizeof(CURL *));
  if (!e->multi || !e->share || !e->pool || kp_poller_init(&e->poller) != 0) {
    if (e->multi) curl_multi_cleanup(e->multi);
    if (e->share) curl_share_cleanup(e->share);
    free(e->pool);
    kp_poller_close(&e->poller);
    return luaL_error(L, "koophone engine: out of memory or descriptors");
  }
  e->pool_cap = (int)pool;
  /* Connections are pooled by the multi itself (every handle added to it
   * shares its connection cache); the share handle adds DNS and TLS
   * session reuse across handles. */
  curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING,
                    multiplex ? CURLPIPE_MULTIPLEX : CURLPIPE_NOTHING);
  curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_total);
  curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
  /* keep as many idle connections as a batch had open, so the next batch
   * reuses them instead of reconnecting (curl's default keeps 4 x handles) */
  curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, max_total > 0 ? max_total : 256L);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e);
  seed_random(e);
  e->closed = 0;
  luaL_getmetatable(L, KP_ENGINE_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* Pushes the engine's user value slot `slot` (engine at index idx). */
static void push_slot(lua_State *L, int idx, int slot) {
  kp_getuservalue(L, idx);
  lua_rawgeti(L, -1, slot);
  lua_remove(L, -2);
}

/* Used by request.c before kp_engine_add: the in-flight map keeps the
 * request (at req_idx) alive until perform() reports it. May raise (out of
 * memory) — then the map is unchanged. */
void kp_engine_track(lua_State *L, int engine_idx, int req_idx, kp_request *r) {
  req_idx = kp_absindex(L, req_idx);
  push_slot(L, engine_idx, SLOT_INFLIGHT);
  lua_pushlightuserdata(L, r);
  lua_pushvalue(L, req_idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Drops r from the in-flight map (never raises: assigning nil to an
 * existing key does not allocate). */
void kp_engine_forget(lua_State *L, int engine_idx, kp_request *r) {
  push_slot(L, engine_idx, SLOT_INFLIGHT);
  lua_pushlightuserdata(L, r);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Pushes the engine's private cjson instance (engine at idx). */
void kp_engine_push_json(lua_State *L, int idx) { push_slot(L, idx, SLOT_JSON); }

/* engine:perform() -> running, finished
 * Advances every transfer without blocking (the sockets that are ready
 * now, and curl's timer if due). `finished` lists the requests that ended
 * since the last perform() — here or inside submit() — (nil when none).
 * Each finished request is reported once: koophone.loop, the one caller,
 * wakes whoever waits on it. */
static int engine_perform(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  kp_request *r;
  int n = 0, map;
  if (drive(e) != 0) return luaL_error(L, "koophone engine: poll failed");
  lua_pushinteger(L, e->n_inflight);
  if (!e->done_head) {
    lua_pushnil(L);
    return 2;
  }
  for (r = e->done_head; r; r = r->next) n++;
  /* everything that may raise (allocation) first, then unlink */
  lua_createtable(L, n, 0);
  push_slot(L, 1, SLOT_INFLIGHT);
  map = lua_gettop(L);
  n = 0;
  for (r = e->done_head; r; r = r->next) {
    lua_pushlightuserdata(L, r);
    lua_rawget(L, map);
    lua_rawseti(L, map - 1, ++n);
  }
  while ((r = e->done_head) != NULL) {
    kp_engine_unlist(e, r);
    r->engine = NULL;
    lua_pushlightuserdata(L, r);
    lua_pushnil(L);
    lua_rawset(L, map);
  }
  lua_remove(L, map);
  return 2;
}

/* Milliseconds until curl's timer is due (0: now, -1: none). */
static long timer_ms(const kp_engine *e) {
  long long left;
  if (e->timer_due < 0) return -1;
  left = e->timer_due - now_us();
  if (left <= 0) return 0;
  left = (left + 999) / 1000;
  return left > MAX_WAIT_MS ? MAX_WAIT_MS : (long)left;
}

/* Polls for up to SPIN_US without sleeping; returns what kp_poller_sleep
 * does (0: nothing came). Used while spinning has paid (e->spin_credit >
 * 0): events come within a sleep's own wake-up time (a server on this
 * machine or the LAN answering at full speed), and a sleep then costs
 * more than the wait (the wake-up, and often a move to another CPU, while
 * the server waits for the next request). A spin that finds something,
 * or a sleep that ends within QUICK_US, earns a credit; a spin that finds
 * nothing costs two: waits on a slower server, or on a machine too busy
 * to answer that fast, soon sleep at once. */
#define SPIN_US 50
#define QUICK_US 200  /* a sleep's own wake-up takes tens of us */
#define SPIN_CREDIT_MAX 4
static int spin(kp_engine *e) {
  long long until = now_us() + SPIN_US;
  int n;
  do n = kp_poller_sleep(&e->poller, 0); while (n == 0 && now_us() < until);
  e->spin_credit += n != 0 ? 1 : -2;
  return n;
}

/* engine:wait(timeout_ms) -> number of ready descriptors
 * Sleeps until a watched socket is ready, curl's timer is due,
 * engine:wakeup() is called, or timeout_ms (at most a day) passes. */
static int engine_wait(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  lua_Number ms = luaL_optnumber(L, 2, 1000);
  long t = timer_ms(e);
  int wait_ms, n;
  luaL_argcheck(L, ms == ms, 2, "timeout must be a number of milliseconds, not NaN");
  if (ms < 0) ms = 0;
  if (ms > MAX_WAIT_MS) ms = MAX_WAIT_MS;
  wait_ms = (int)ms;
  if (t >= 0 && t < wait_ms) wait_ms = (int)t;
  /* a finished request waits to be reported: do not sleep */
  if (e->done_head) wait_ms = 0;
  n = wait_ms > 0 && e->spin_credit > 0 && e->n_inflight > 0 ? spin(e) : 0;
  if (n == 0) {
    long long t0 = now_us();
    n = kp_poller_sleep(&e->poller, wait_ms);
    if (n > 0 && now_us() - t0 < QUICK_US) e->spin_credit++;
  }
  if (e->spin_credit > SPIN_CREDIT_MAX) e->spin_credit = SPIN_CREDIT_MAX;
  if (e->spin_credit < -SPIN_CREDIT_MAX) e->spin_credit = -SPIN_CREDIT_MAX;
  if (n < 0) return luaL_error(L, "koophone engine: poll failed");
  lua_pushinteger(L, n);
  return 1;
}

/* engine:wakeup(): makes a concurrent (or the next) engine:wait() return. */
static int engine_wakeup(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  kp_poller_wake(&e->poller);
  return 0;
}

/* engine:timeout() -> milliseconds until curl wants perform() called
 * (-1: no timer; only socket activity matters). 0 also while a finished
 * request waits to be reported. */
static int engine_timeout(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  lua_pushinteger(L, e->done_head ? 0 : timer_ms(e));
  return 1;
}

/* engine:fd() -> one descriptor that is readable whenever a watched socket
 * is ready (the epoll set), or nil where there is none (use fds()). */
static int engine_fd(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  int fd = kp_poller_fd(&e->poller);
  if (fd < 0) lua_pushnil(L); else lua_pushinteger(L, fd);
  return 1;
}

/* engine:fds() -> readable, writable: arrays of the sockets curl watches,
 * by interest, for an external loop to poll before calling perform(). */
static int engine_fds(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  kp_watch *w;
  int nr = 0, nw = 0;
  lua_createtable(L, e->poller.n_watches, 0);
  lua_createtable(L, e->poller.n_watches, 0);
  for (w = e->poller.watches; w; w = w->next) {
    if (w->what & CURL_POLL_IN) { lua_pushinteger(L, (lua_Integer)w->fd); lua_rawseti(L, -3, ++nr); }
    if (w->what & CURL_POLL_OUT) { lua_pushinteger(L, (lua_Integer)w->fd); lua_rawseti(L, -2, ++nw); }
  }
  return 2;
}

/* engine:inflight() -> number of requests not yet finished */
static int engine_inflight(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  lua_pushinteger(L, e->n_inflight);
  return 1;
}

/* engine:close(): cancels every request in flight and frees everything.
 * Safe to call twice; __gc calls it. */
static int engine_close(lua_State *L) {
  kp_engine *e = (kp_engine *)luaL_checkudata(L, 1, KP_ENGINE_MT);
  if (e->closed) return 0;
  e->closed = 1;
  while (e->inflight) kp_request_detach(e->inflight);
  while (e->done_head) kp_request_detach(e->done_head);
  while (e->pool_len > 0) curl_easy_cleanup(e->pool[--e->pool_len]);
  free(e->pool);
  e->pool = NULL;
  while (e->n_spare > 0) kp_buf_free(&e->spare[--e->n_spare]);
  /* may still call on_socket (closing cached connections): the poller
   * goes after it */
  curl_multi_cleanup(e->multi);
  curl_share_cleanup(e->share);
  e->multi = NULL;
  e->share = NULL;
  kp_poller_close(&e->poller);
  kp_getuservalue(L, 1);
  if (lua_istable(L, -1)) {
    lua_newtable(L);
    lua_rawseti(L, -2, SLOT_INFLIGHT);
  }
  return 0;
}

static int engine_tostring(lua_State *L) {
  kp_engine *e = (kp_engine *)luaL_checkudata(L, 1, KP_ENGINE_MT);
  if (e->closed) lua_pushliteral(L, "koophone.engine (closed)");
  else lua_pushfstring(L, "koophone.engine (%d in flight)", e->n_inflight);
  return 1;
}

int kp_engine_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"submit", kp_request_new},
    {"perform", engine_perform},
    {"wait", engine_wait},
    {"wakeup", engine_wakeup},
    {"timeout", engine_timeout},
    {"fd", engine_fd},
    {"fds", engine_fds},
    {"inflight", engine_inflight},
    {"uuid", engine_uuid},
    {"close", engine_close},
    {NULL, NULL}
  };
  kp_new_type(L, KP_ENGINE_MT, methods, engine_close, engine_tostring);
  lua_pushcfunction(L, engine_new);
  lua_setfield(L, -2, "engine");
  return 0;
}
