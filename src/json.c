/* json.c: JSON through a private lua-cjson instance (cjson.new()), so a
 * host's own cjson settings are neither read nor changed. */
#include "core.h"

static void call_setting(lua_State *L, int inst, const char *name, int arg) {
  lua_getfield(L, inst, name);
  if (!lua_isfunction(L, -1)) { lua_pop(L, 1); return; }
  lua_pushinteger(L, arg);
  lua_call(L, 1, 0);
}

static void call_setting_bool(lua_State *L, int inst, const char *name, int on) {
  lua_getfield(L, inst, name);
  if (!lua_isfunction(L, -1)) { lua_pop(L, 1); return; }
  lua_pushboolean(L, on);
  lua_call(L, 1, 0);
}

/* Pushes a fresh cjson instance configured for wire data: bounded nesting,
 * no NaN/Infinity either way, sparse arrays refused rather than guessed. */
void kp_json_new(lua_State *L) {
  int inst;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  if (!lua_isfunction(L, -1))
    luaL_error(L, "koophone.core: lua-cjson without cjson.new()");
  lua_call(L, 0, 1);
  lua_remove(L, -2);
  inst = lua_gettop(L);
  call_setting(L, inst, "decode_max_depth", 64);
  call_setting(L, inst, "encode_max_depth", 64);
  call_setting_bool(L, inst, "decode_invalid_numbers", 0);
  call_setting_bool(L, inst, "encode_invalid_numbers", 0);
}

int kp_json_decode(lua_State *L, int cjson_idx, const char *s, size_t n) {
  lua_getfield(L, cjson_idx, "decode");
  lua_pushlstring(L, s, n);
  return lua_pcall(L, 1, 1, 0) == 0;
}

int kp_json_encode(lua_State *L, int cjson_idx, int value_idx) {
  value_idx = kp_absindex(L, value_idx);
  lua_getfield(L, cjson_idx, "encode");
  lua_pushvalue(L, value_idx);
  return lua_pcall(L, 1, 1, 0) == 0;
}
