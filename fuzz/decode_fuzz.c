/* fuzz/decode_fuzz.c: libFuzzer target over koophone's response path.
 *
 * Each input is one reply body. It goes through the C decode path that
 * engine:perform() uses (src/json.c: kp_json_new + kp_json_decode, compiled
 * in here with ASan/UBSan, i.e. the private lua-cjson instance configured
 * for wire data), then through the Lua mapping to rows/errors
 * (fuzz/driver.lua: sync_command, async/install tasks, restart, query_task,
 * job, jobs) with the first input byte choosing the HTTP status. A crash,
 * a sanitizer report, or a Lua error escaping the mapping aborts. Where
 * the fast decoder takes a text, cjson's value for it must be the same
 * (differential): a difference aborts too.
 *
 * Build and run: fuzz/run.sh (needs clang, libclang-rt-dev, liblua5.4-dev). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "core.h"
#include <lualib.h>

void kp_json_new(lua_State *L);
int kp_json_decode(lua_State *L, int cjson_idx, const char *s, size_t n);

static lua_State *L;
static int json_idx, feed_ref, feed_text_ref, same_ref;
static const int STATUS[] = { 200, 200, 200, 200, 200, 200, 200, 200, 201, 400, 401, 404, 429, 500, 503, 502 };

static void die(const char *what) {
  fprintf(stderr, "decode_fuzz: %s: %s\n", what, lua_tostring(L, -1));
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L,
      "package.path = 'lua/?.lua;lua/?/init.lua;./?.lua;' .. package.path\n"
      "package.cpath = 'build/lua5.4/?.so;' .. package.cpath\n"
      "local d = require('fuzz.driver').new()\n"
      "FEED = function(st, body, raw, derr)\n"
      "  local ok, e = pcall(d.feed, d, st, body, raw, derr)\n"
      "  if ok then return true end\n"
      "  if type(e) == 'table' and e.finding == 'loop' and not os.getenv('FUZZ_STRICT') then return true end\n"
      "  return false, type(e) == 'table' and (tostring(e.finding) .. ': ' .. tostring(e.message)) or tostring(e)\n"
      "end\n"
      "SAME = require('bench.sync_replies').same\n"))
    die("init");
  lua_getglobal(L, "FEED");
  feed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getglobal(L, "SAME");
  same_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  feed_text_ref = 0;
  kp_json_new(L); /* the private instance, configured as the engine's */
  json_idx = lua_gettop(L);
  return 0;
}

/* Where the fast decoder takes a text, cjson must decode it to the same
 * value (the fast path stands in for cjson: src/json.c). */
static void differential(const char *s, size_t n) {
  int top = lua_gettop(L);
  if (!kp_json_decode_fast(L, s, n)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, same_ref);
  lua_insert(L, -2);
  lua_getfield(L, json_idx, "decode");
  lua_pushlstring(L, s, n);
  if (lua_pcall(L, 1, 1, 0) != 0) die("the fast decoder took a text cjson refuses");
  if (lua_pcall(L, 2, 1, 0) != 0) die("same() raised");
  if (!lua_toboolean(L, -1)) {
    lua_pushliteral(L, "values differ");
    die("the fast decoder and cjson differ");
  }
  lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int status = 200, top = lua_gettop(L);
  if (size > 0) { status = STATUS[data[0] & 15]; data++; size--; }
  if (size > 0) differential((const char *)data, size);
  lua_rawgeti(L, LUA_REGISTRYINDEX, feed_ref);
  lua_pushinteger(L, status);
  if (size == 0) {
    lua_pushnil(L); lua_pushnil(L); lua_pushnil(L);
  } else if (kp_json_decode(L, json_idx, (const char *)data, size)) {
    lua_pushnil(L); lua_pushnil(L);                /* body, raw=nil, decode_error=nil */
  } else {
    /* stack: err message; feed(status, nil, raw, err) */
    lua_pushnil(L);
    lua_insert(L, -2);                              /* nil, err */
    lua_pushlstring(L, (const char *)data, size);
    lua_insert(L, -2);                              /* nil, raw, err */
  }
  if (lua_pcall(L, 4, 2, 0) != 0) die("feed raised");
  if (!lua_toboolean(L, -2)) die("finding");
  lua_settop(L, top);
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
