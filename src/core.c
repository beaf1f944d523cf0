/* core.c: luaopen_koophone_core. Registers the types; holds no state. */
#include <time.h>
#include "core.h"

/* core.curl_version() -> version, has_http2, tls_library */
static int core_version(lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "none");
  return 3;
}

/* core.now() -> seconds on a monotonic clock (for deadlines and backoff) */
static int core_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* Makes the metatable of a userdata type: `methods` as its __index, `gc`
 * and `tostring` as __gc and __tostring. Leaves the stack as it was. */
void kp_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                 lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  kp_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

LUALIB_API int luaopen_koophone_core(lua_State *L);
LUALIB_API int luaopen_koophone_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"curl_version", core_version},
    {"now", core_now},
    {NULL, NULL}
  };
  /* refcounted and thread-safe in the libcurl versions we support; never
   * cleaned up, since another user of libcurl may share the process */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  lua_newtable(L);
  kp_setfuncs(L, funcs, 0);
  kp_request_open(L);
  kp_engine_open(L); /* sets field "engine" */
  kp_ids_open(L);   /* sets "check_ids" */
  kp_files_open(L); /* sets "journal_prepare" */
  kp_sign_open(L);  /* sets "sign" */
  kp_json_open(L);  /* sets "json_decode" */
  kp_encode_open(L); /* sets "json_encode" */
  kp_rows_open(L);  /* sets "item_rows", "row" */
  kp_cmd_rows_open(L); /* sets "sync_reply" */
  kp_job_rows_open(L); /* sets "task_reply" */
  kp_waker_open(L);  /* sets "waker" (Linux) */
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  lua_pushlightuserdata(L, NULL); /* the same value as cjson.null */
  lua_setfield(L, -2, "null");
  return 1;
}
