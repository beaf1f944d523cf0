/* ids.c: checking a list of ids before sending, in C. It runs for every
 * id of every request; in Lua (two pattern matches and a table per call)
 * it cost about 4,500 instructions per id, here about 350 (the list of a
 * sync-command, 32 ids: about 11,000, against 33,000 when the duplicate
 * check compared every pair). */
#include <string.h>
#include "core.h"

/* Characters an id may not hold: controls, space, '/', '?', '#', DEL. */
static int forbidden(unsigned char c) {
  return c <= 32 || c == '/' || c == '?' || c == '#' || c == 127;
}

/* Up to SMALL ids (a request's usual list: 32 for sync-command), the
 * duplicate check is an open-addressing table on the C stack, keyed by a
 * hash computed in the loop that checks the characters (the strings stay
 * referenced by the list meanwhile); above, a Lua table of the ids seen. */
#define SMALL 64
#define SLOTS 128                  /* a power of two, at least 2 * SMALL */

typedef struct seen_ids {
  unsigned char at[SLOTS];         /* 1-based index of the id, 0: free */
  const char *s[SMALL + 1];        /* by index: the id's bytes */
  size_t len[SMALL + 1];
} seen_ids;

/* The index of an earlier id equal to s, or 0 after recording s as id i. */
static int seen_or_add(seen_ids *seen, const char *s, size_t len, unsigned hash, int i) {
  unsigned slot = hash & (SLOTS - 1);
  int j;
  while ((j = seen->at[slot]) != 0) {
    if (seen->len[j] == len && memcmp(seen->s[j], s, len) == 0) return j;
    slot = (slot + 1) & (SLOTS - 1);
  }
  seen->at[slot] = (unsigned char)i;
  seen->s[i] = s;
  seen->len[i] = len;
  return 0;
}

/* core.check_ids(ids, n, max_chars) -> nil | index, problem
 * problem: "type", "empty", "length", "char" or "duplicate" (then a third
 * value: the index of the first occurrence), or index 0 and "map" when the
 * table has keys besides 1..n. */
static int check_ids(lua_State *L) {
  lua_Integer n, i, max_chars;
  seen_ids seen;
  int small;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = luaL_checkinteger(L, 2);
  max_chars = luaL_checkinteger(L, 3);
  lua_settop(L, 3);
  small = n <= SMALL;
  if (small) {
    memset(seen.at, 0, sizeof seen.at);
    lua_pushnil(L);
  } else {
    lua_createtable(L, 0, n > 0 && n < 1000000 ? (int)n : 0); /* 4: seen */
  }
  for (i = 1; i <= n; i++) {
    size_t len, k;
    unsigned hash = 2166136261u;   /* FNV-1a */
    const char *s;
    lua_rawgeti(L, 1, (int)i);                                /* 5 */
    if (lua_type(L, 5) != LUA_TSTRING) { lua_pushinteger(L, i); lua_pushliteral(L, "type"); return 2; }
    s = lua_tolstring(L, 5, &len);
    if (len == 0) { lua_pushinteger(L, i); lua_pushliteral(L, "empty"); return 2; }
    if ((lua_Integer)len > max_chars) { lua_pushinteger(L, i); lua_pushliteral(L, "length"); return 2; }
    for (k = 0; k < len; k++) {
      unsigned char c = (unsigned char)s[k];
      if (forbidden(c)) { lua_pushinteger(L, i); lua_pushliteral(L, "char"); return 2; }
      hash = (hash ^ c) * 16777619u;
    }
    if (small) {
      int first = seen_or_add(&seen, s, len, hash, (int)i);
      if (first) {
        lua_pushinteger(L, i);
        lua_pushliteral(L, "duplicate");
        lua_pushinteger(L, first);
        return 3;
      }
      lua_pop(L, 1); /* the list keeps the string alive */
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
