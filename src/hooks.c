/* hooks.c: what the two readers behind the fast path's hook share
 * (src/cmd_rows.c: a sync-command reply's rows; src/job_rows.c: a task
 * query's): reading a key or a text field in place, running a hooked list
 * reader with its stack slots, checking that the rows built are the
 * reply's, running a reader under lua_pcall, and the core functions
 * that run one on a string. */
#include <string.h>
#include "fast.h"

int kp_fast_skip(kp_fast *f) {
  const char *s;
  size_t n;
  kp_fast_ws(f);
  if (f->p < f->end && *f->p == '"' && kp_fast_plain(f, &s, &n)) return 1;
  if (!kp_fast_value(f)) return 0;
  lua_pop(f->L, 1);
  return 1;
}

int kp_fast_text(kp_fast *f, int slot) {
  if (f->p >= f->end) return -1;
  if (*f->p == '"') {
    if (f->end - f->p >= 2 && f->p[1] == '"') { f->p += 2; return 0; }
    if (!kp_fast_string(f)) return -1; /* escapes are unescaped, never to "" */
    lua_replace(f->L, slot);
    return 1;
  }
  return kp_fast_word(f, "null", 4) ? 0 : -1;
}

int kp_fast_hook_list(kp_fast *f, int slots, int rows, kp_list_reader read, void *data) {
  lua_State *L = f->L;
  const char *start = f->p;
  int top = lua_gettop(L), ok;
  if (!lua_checkstack(L, slots + 16)) return 0;
  lua_settop(L, top + slots);
  /* items sit two levels below the hooked key (the list, the item): depth
   * counts them, so that nesting is limited as in the ordinary path */
  f->depth += 2;
  ok = read(f, data, top + 1);
  f->depth -= 2;
  if (!ok) {
    lua_settop(L, top);
    f->p = start;
    return 0;
  }
  lua_pushvalue(L, -1);
  lua_replace(L, rows);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 1;
}

int kp_fast_is_at(lua_State *L, int body, int value, const char *const *path, int keys) {
  int k, same;
  if (lua_isnil(L, value)) return 0;
  lua_pushvalue(L, body);
  for (k = 0; k < keys; k++) {
    if (lua_type(L, -1) != LUA_TTABLE) { lua_pop(L, 1); return 0; }
    lua_pushstring(L, path[k]);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  same = lua_rawequal(L, -1, value);
  lua_pop(L, 1);
  return same;
}

int kp_fast_run(lua_State *L, int reader, int arg, const char *s, size_t n, int nresults) {
  kp_span in;
  int top = lua_gettop(L);
  reader = kp_absindex(L, reader);
  arg = kp_absindex(L, arg);
  in.s = s;
  in.n = n;
  if (!lua_checkstack(L, nresults + 3)) return 0;
  lua_pushvalue(L, reader);
  lua_pushlightuserdata(L, &in);
  lua_pushvalue(L, arg);
  if (lua_pcall(L, 2, nresults, 0) != 0 || lua_isnil(L, -nresults)) {
    lua_settop(L, top);
    return 0;
  }
  return 1;
}

void kp_fast_push_reader(lua_State *L, lua_CFunction fn, const char *const *names, int count) {
  int k;
  luaL_checkstack(L, count, "koophone reader");
  for (k = 0; k < count; k++) lua_pushstring(L, names[k]);
  lua_pushcclosure(L, fn, count);
}

int kp_fast_reply(lua_State *L, int nresults) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!kp_fast_run(L, lua_upvalueindex(1), 2, s, n, nresults)) {
    lua_pushnil(L);
    return 1;
  }
  if (!lua_isnil(L, -(nresults - 1))) return nresults; /* rows were built */
  lua_pop(L, nresults - 1);
  return 1;
}
