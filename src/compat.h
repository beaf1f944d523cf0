/* compat.h: the one place that knows about Lua and libcurl versions.
 * Lua 5.1 (and LuaJIT), 5.2, 5.3, 5.4; libcurl >= 7.66 (curl_multi_poll). */
#ifndef KOOPHONE_COMPAT_H
#define KOOPHONE_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <curl/curl.h>

#if LIBCURL_VERSION_NUM < 0x074200
#error "koophone needs libcurl 7.66.0 or newer (curl_multi_poll)"
#endif

/* For clang-tidy's analyzer (make tidy) only: luaL_error never returns (it
 * longjmps), which Lua's headers do not say; without this every
 * `if (!p) luaL_error(...)` is followed by a false "null pointer" report. */
#ifdef __clang_analyzer__
#include <stdlib.h>
#define luaL_error(...) (luaL_error(__VA_ARGS__), abort(), 0)
#endif

/* Every userdata here carries one user value: a plain table. */
#if LUA_VERSION_NUM >= 504
#define kp_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 1)
#define kp_setuservalue(L, idx) ((void)lua_setiuservalue((L), (idx), 1))
#define kp_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#elif LUA_VERSION_NUM >= 502
#define kp_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define kp_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define kp_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define kp_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define kp_setuservalue(L, idx) ((void)lua_setfenv((L), (idx)))
#define kp_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif

#if LUA_VERSION_NUM < 502
#define kp_rawlen(L, idx) lua_objlen((L), (idx))
#define kp_absindex(L, idx) \
  (((idx) > 0 || (idx) <= LUA_REGISTRYINDEX) ? (idx) : lua_gettop(L) + (idx) + 1)
void kp_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
void *kp_testudata(lua_State *L, int ud, const char *tname);
#else
#define kp_rawlen(L, idx) lua_rawlen((L), (idx))
#define kp_absindex(L, idx) lua_absindex((L), (idx))
#define kp_setfuncs(L, l, nup) luaL_setfuncs((L), (l), (nup))
#define kp_testudata(L, ud, tname) luaL_testudata((L), (ud), (tname))
#endif

/* Newer curl options, guarded here and nowhere else. */
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
#define KP_HAVE_PROTOCOLS_STR 1
#endif
#if LIBCURL_VERSION_NUM >= 0x075000 /* 7.80.0 */
#define KP_HAVE_PREREQFUNCTION 1
#endif

#endif
