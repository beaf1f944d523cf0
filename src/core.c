/* core.c: luaopen_koophone_core. Registers the types; holds no state. */
#include "core.h"

static int core_version(lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "none");
  return 3;
}

LUALIB_API int luaopen_koophone_core(lua_State *L);
LUALIB_API int luaopen_koophone_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"engine", NULL}, /* filled below */
    {"curl_version", core_version},
    {NULL, NULL}
  };
  /* curl_global_init is refcounted and thread-safe since 7.84; calling it
   * here (and never cleanup) keeps one-time TLS setup out of the hot path. */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  lua_newtable(L);
  kp_setfuncs(L, funcs + 1, 0);
  kp_request_open(L);
  kp_engine_open(L);           /* sets field "engine" */
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  lua_pushlightuserdata(L, NULL); /* cjson.null */
  lua_setfield(L, -2, "null");
  return 1;
}
