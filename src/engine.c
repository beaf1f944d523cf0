/* engine.c: the engine userdata. One CURLM (the transfers and their
 * connection pool) and one CURLSH (DNS cache and TLS sessions) per engine;
 * every request of a client goes through it. Nothing here blocks except
 * engine:wait(), and no curl callback ever calls into Lua. */
#include <stdlib.h>
#include <stdio.h>
#include <time.h>
#include <sys/select.h>
#include "core.h"

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

static long opt_integer(lua_State *L, int t, const char *k, long dflt) {
  long v = dflt;
  if (lua_isnoneornil(L, t)) return dflt;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1)) luaL_error(L, "engine option '%s' must be a number", k);
    v = (long)lua_tointeger(L, -1);
    if (v < 0) luaL_error(L, "engine option '%s' must be >= 0", k);
  }
  lua_pop(L, 1);
  return v;
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
  char s[37];
  a = (a & 0xFFFFFFFFFFFF0FFFULL) | 0x4000ULL;          /* version 4 */
  b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL; /* variant 10 */
  snprintf(s, sizeof s, "%08llx-%04llx-%04llx-%04llx-%012llx",
           a >> 32, (a >> 16) & 0xFFFF, a & 0xFFFF, b >> 48, b & 0xFFFFFFFFFFFFULL);
  lua_pushlstring(L, s, 36);
  return 1;
}

/* core.engine{max_connections=, max_host_connections=, multiplex=, pool=} */
static int engine_new(lua_State *L) {
  kp_engine *e;
  long max_total, max_host, pool;
  int multiplex;
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  max_total = opt_integer(L, 1, "max_connections", 0);
  max_host = opt_integer(L, 1, "max_host_connections", 0);
  pool = opt_integer(L, 1, "pool", 256);
  multiplex = opt_boolean(L, 1, "multiplex", 1);

  e = (kp_engine *)kp_newuserdata(L, sizeof *e);
  e->multi = NULL; e->share = NULL; e->inflight = NULL; e->n_inflight = 0;
  e->pool = NULL; e->pool_len = 0; e->pool_cap = 0; e->closed = 1;
  e->completed = 0;

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
  if (!e->multi || !e->share || !e->pool) {
    if (e->multi) curl_multi_cleanup(e->multi);
    if (e->share) curl_share_cleanup(e->share);
    free(e->pool);
    return luaL_error(L, "koophone engine: out of memory");
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

/* Used by request.c: registers a new in-flight request (at req_idx). */
void kp_engine_track(lua_State *L, int engine_idx, int req_idx, kp_request *r);
void kp_engine_track(lua_State *L, int engine_idx, int req_idx, kp_request *r) {
  kp_engine *e = (kp_engine *)lua_touserdata(L, engine_idx);
  req_idx = kp_absindex(L, req_idx);
  push_slot(L, engine_idx, SLOT_INFLIGHT);
  lua_pushlightuserdata(L, r);
  lua_pushvalue(L, req_idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  r->engine = e;
  r->prev = NULL;
  r->next = e->inflight;
  if (e->inflight) e->inflight->prev = r;
  e->inflight = r;
  e->n_inflight++;
}

/* Unlinks r from the in-flight list; the map entry is dropped by perform. */
void kp_engine_untrack(kp_engine *e, kp_request *r);
void kp_engine_untrack(kp_engine *e, kp_request *r) {
  if (r->prev) r->prev->next = r->next; else e->inflight = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
  e->n_inflight--;
}

/* Pushes the engine's private cjson instance (engine at idx). */
void kp_engine_push_json(lua_State *L, int idx);
void kp_engine_push_json(lua_State *L, int idx) { push_slot(L, idx, SLOT_JSON); }

/* engine:perform() -> running, finished, completed
 * Advances every transfer without blocking. `finished` lists the requests
 * that completed during this call (nil when none); `completed` counts every
 * transfer ever finished, so a scheduler can tell whether some other caller
 * of perform() took news it was waiting for. */
static int engine_perform(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  int running = 0, msgs = 0, n = 0;
  CURLMsg *m;
  CURLMcode mc = curl_multi_perform(e->multi, &running);
  if (mc != CURLM_OK) return luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(mc));
  lua_pushinteger(L, running);
  lua_pushnil(L);
  push_slot(L, 1, SLOT_INFLIGHT);
  while ((m = curl_multi_info_read(e->multi, &msgs)) != NULL) {
    kp_request *r = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (!r) continue;
    kp_request_finish(r, m->data.result);
    e->completed++;
    if (n == 0) { lua_newtable(L); lua_replace(L, -3); }
    lua_pushlightuserdata(L, r);
    lua_rawget(L, -2);
    lua_rawseti(L, -3, ++n);
    lua_pushlightuserdata(L, r);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  lua_pushinteger(L, e->completed);
  return 3;
}

/* engine:wait(timeout_ms) -> number of ready descriptors
 * Sleeps in curl_multi_poll until a socket is ready, curl's own timer is
 * due, engine:wakeup() is called, or timeout_ms passes. */
static int engine_wait(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  lua_Number ms = luaL_optnumber(L, 2, 1000);
  int numfds = 0;
  CURLMcode mc;
  if (ms < 0) ms = 0;
  if (ms > 86400000) ms = 86400000;
  mc = curl_multi_poll(e->multi, NULL, 0, (int)ms, &numfds);
  if (mc != CURLM_OK) return luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(mc));
  lua_pushinteger(L, numfds);
  return 1;
}

/* engine:wakeup(): makes a concurrent engine:wait() return at once. */
static int engine_wakeup(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  curl_multi_wakeup(e->multi);
  return 0;
}

/* engine:timeout() -> milliseconds until curl wants perform() called
 * (-1: no timer; only socket activity matters). */
static int engine_timeout(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  long ms = -1;
  curl_multi_timeout(e->multi, &ms);
  lua_pushinteger(L, ms);
  return 1;
}

/* engine:fds() -> readable, writable: arrays of the descriptors an external
 * event loop must watch before calling perform() again. */
static int engine_fds(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  fd_set r, w, x;
  int maxfd = -1, fd, nr = 0, nw = 0;
  FD_ZERO(&r); FD_ZERO(&w); FD_ZERO(&x);
  curl_multi_fdset(e->multi, &r, &w, &x, &maxfd);
  lua_newtable(L);
  lua_newtable(L);
  for (fd = 0; fd <= maxfd; fd++) {
    if (FD_ISSET(fd, &r)) { lua_pushinteger(L, fd); lua_rawseti(L, -3, ++nr); }
    if (FD_ISSET(fd, &w)) { lua_pushinteger(L, fd); lua_rawseti(L, -2, ++nw); }
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
  while (e->pool_len > 0) curl_easy_cleanup(e->pool[--e->pool_len]);
  free(e->pool);
  e->pool = NULL;
  curl_multi_cleanup(e->multi);
  curl_share_cleanup(e->share);
  e->multi = NULL;
  e->share = NULL;
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
    {"fds", engine_fds},
    {"inflight", engine_inflight},
    {"uuid", engine_uuid},
    {"close", engine_close},
    {NULL, NULL}
  };
  luaL_newmetatable(L, KP_ENGINE_MT);
  lua_newtable(L);
  kp_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, engine_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, engine_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, engine_new);
  lua_setfield(L, -2, "engine");
  return 0;
}
