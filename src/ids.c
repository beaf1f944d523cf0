/* ids.c: checking a list of ids before sending, in C. It runs for every
 * id of every request; in Lua (two pattern matches and a table per call)
 * it cost about 4,500 instructions per id, here about 500.
 * (Building result rows stays in Lua: a table constructor beats the C API.) */
#include <string.h>
#include "core.h"

/* Characters an id may not hold: controls, space, '/', '?', '#', DEL. */
static int forbidden(unsigned char c) {
  return c <= 32 || c == '/' || c == '?' || c == '#' || c == 127;
}

/* core.check_ids(ids, n, max_chars) -> nil | index, problem
 * problem: "type", "empty", "length", "char" or "duplicate" (then a third
 * value: the index of the first occurrence), or index 0 and "map" when the
 * table has keys besides 1..n. */
/* Up to SMALL ids (a request's usual list: 32 for sync-command), the
 * duplicate check compares each id with the ones before it (the strings
 * stay referenced by the list meanwhile); above, a table of the ids seen. */
#define SMALL 64

static int check_ids(lua_State *L) {
  lua_Integer n, i, max_chars;
  const char *small_s[SMALL];
  size_t small_len[SMALL];
  int small;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = luaL_checkinteger(L, 2);
  max_chars = luaL_checkinteger(L, 3);
  lua_settop(L, 3);
  small = n <= SMALL;
  if (small) lua_pushnil(L);
  else lua_createtable(L, 0, n > 0 && n < 1000000 ? (int)n : 0); /* 4: seen */
  for (i = 1; i <= n; i++) {
    size_t len, k;
    const char *s;
    lua_rawgeti(L, 1, (int)i);                                /* 5 */
    if (lua_type(L, 5) != LUA_TSTRING) { lua_pushinteger(L, i); lua_pushliteral(L, "type"); return 2; }
    s = lua_tolstring(L, 5, &len);
    if (len == 0) { lua_pushinteger(L, i); lua_pushliteral(L, "empty"); return 2; }
    if ((lua_Integer)len > max_chars) { lua_pushinteger(L, i); lua_pushliteral(L, "length"); return 2; }
    for (k = 0; k < len; k++)
      if (forbidden((unsigned char)s[k])) { lua_pushinteger(L, i); lua_pushliteral(L, "char"); return 2; }
    if (small) {
      lua_Integer j;
      for (j = 0; j < i - 1; j++) {
        if (small_len[j] == len && (small_s[j] == s || memcmp(small_s[j], s, len) == 0)) {
          lua_pushinteger(L, i);
          lua_pushliteral(L, "duplicate");
          lua_pushinteger(L, j + 1);
          return 3;
        }
      }
      small_s[i - 1] = s; /* the list keeps the string alive */
      small_len[i - 1] = len;
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, 5);
    lua_rawget(L, 4);
    if (!lua_isnil(L, -1)) {
      lua_pushinteger(L, i);
      lua_pushliteral(L, "duplicate");
      lua_pushvalue(L, -3);
      return 3;
    }
    lua_pop(L, 1);
    lua_pushinteger(L, i);
    lua_rawset(L, 4); /* seen[id] = i; pops the index and the id */
  }
  /* a list with other keys too would be encoded as a JSON object */
  {
    lua_Integer keys = 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { lua_pop(L, 1); keys++; }
    if (keys != n) { lua_pushinteger(L, 0); lua_pushliteral(L, "map"); return 2; }
  }
  return 0;
}

int kp_ids_open(lua_State *L) {
  lua_pushcfunction(L, check_ids);
  lua_setfield(L, -2, "check_ids");
  return 0;
}
