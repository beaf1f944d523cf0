/* encode.c: request bodies encoded straight into the request's buffer.
 * A request's `json` is encoded here when it is plain — tables of string
 * keys, dense lists, strings and booleans — and by the engine's cjson
 * otherwise: lua-cjson stays the reference, and what this path writes is
 * byte for byte what cjson writes (keys in lua_next order, strings escaped
 * with cjson's table: '"', '\\', '/', control bytes and DEL; other bytes
 * as they are). Numbers (cjson prints them with "%.14g"), sparse lists,
 * other key types, metatables and deep nesting go to cjson. cjson walks
 * every table twice, once to tell a list from an object, and copies the
 * result into a Lua string; here each table is walked once.
 * bench/json_check.lua checks both against each other. */
#include <stdlib.h>
#include <string.h>
#include "core.h"

#define ENCODE_MAX_DEPTH 16        /* cjson's limit is 64: deeper goes to it */

/* cjson's escapes (char2escape in lua_cjson.c): NULL for bytes copied. */
static const char *const ESCAPE[128] = {
  "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
  "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
  "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
  "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
  NULL, NULL, "\\\"", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "\\/",
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "\\\\", NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "\\u007f"
};

/* Room for n more bytes in b (and its NUL): 0 when memory ran out. */
static int reserve(kp_buf *b, size_t n) {
  size_t cap;
  char *d;
  if (b->data && b->len + n + 1 <= b->cap) return 1;
  cap = b->cap ? b->cap : 256;
  while (cap < b->len + n + 1) cap *= 2;
  d = (char *)realloc(b->data, cap);
  if (!d) return 0;
  b->data = d;
  b->cap = cap;
  return 1;
}

/* s as a JSON string, escaped as cjson escapes it (at most 6 bytes a
 * byte): the plain run first, copied at once, then byte by byte. */
static int put_string(kp_buf *b, const char *s, size_t n) {
  size_t i = 0;
  char *o;
  if (n > ((size_t)-1 - 8) / 6 || !reserve(b, n * 6 + 2)) return 0;
  o = b->data + b->len;
  *o++ = '"';
  while (i < n && ((unsigned char)s[i] >= 128 || !ESCAPE[(unsigned char)s[i]])) i++;
  memcpy(o, s, i);
  o += i;
  for (; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *e = c < 128 ? ESCAPE[c] : NULL;
    if (!e) { *o++ = (char)c; continue; }
    while (*e) *o++ = *e++;
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  return 1;
}

static int put_char(kp_buf *b, char c) {
  if (!reserve(b, 1)) return 0;
  b->data[b->len++] = c;
  return 1;
}

static int put_value(lua_State *L, int idx, kp_buf *b, int depth);

/* 1 when the key below the top is the integer i. */
static int key_is_index(lua_State *L, lua_Integer i) {
  if (lua_type(L, -2) != LUA_TNUMBER) return 0;
#if LUA_VERSION_NUM >= 503
  {
    int isint = 0;
    lua_Integer k = lua_tointegerx(L, -2, &isint);
    return isint && k == i;
  }
#else
  return lua_tonumber(L, -2) == (lua_Number)i;
#endif
}

/* The table at t, whose first key is a number: a list when lua_next gives
 * the keys 1, 2, ... n in order (a table built as a list keeps them in its
 * array part, which it walks first and in order), as cjson writes a dense
 * list; anything else (a sparse list, keys in the hash part) is cjson's. */
static int put_list(lua_State *L, int t, kp_buf *b, int depth) {
  lua_Integer i = 1;
  if (!put_char(b, '[')) return 0;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    if (!key_is_index(L, i) || (i > 1 && !put_char(b, ',')) || !put_value(L, lua_gettop(L), b, depth)) {
      lua_pop(L, 2);
      return 0;
    }
    lua_pop(L, 1);
    i++;
  }
  return put_char(b, ']');
}

/* The table at t, whose keys are all strings: an object, keys in lua_next
 * order as cjson writes them. */
static int put_object(lua_State *L, int t, kp_buf *b, int depth) {
  int first = 1;
  if (!put_char(b, '{')) return 0;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    size_t n;
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 2); return 0; }
    k = lua_tolstring(L, -2, &n);
    if ((!first && !put_char(b, ',')) || !put_string(b, k, n) || !put_char(b, ':') ||
        !put_value(L, lua_gettop(L), b, depth)) {
      lua_pop(L, 2);
      return 0;
    }
    first = 0;
    lua_pop(L, 1);
  }
  return put_char(b, '}');
}

/* A table: "{}" when empty (as cjson), a list when its first key is a
 * number, else an object. */
static int put_table(lua_State *L, int t, kp_buf *b, int depth) {
  int key;
  if (depth >= ENCODE_MAX_DEPTH || lua_getmetatable(L, t)) return 0; /* (a metatable stays pushed) */
  if (!lua_checkstack(L, 6)) return 0;
  lua_pushnil(L);
  if (lua_next(L, t) == 0) {
    if (!reserve(b, 2)) return 0;
    memcpy(b->data + b->len, "{}", 2);
    b->len += 2;
    return 1;
  }
  key = lua_type(L, -2);
  lua_pop(L, 2);
  if (key == LUA_TNUMBER) return put_list(L, t, b, depth + 1);
  return put_object(L, t, b, depth + 1);
}

static int put_value(lua_State *L, int idx, kp_buf *b, int depth) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return put_string(b, s, n);
    }
    case LUA_TBOOLEAN: {
      int on = lua_toboolean(L, idx);
      if (!reserve(b, 5)) return 0;
      memcpy(b->data + b->len, on ? "true" : "false", on ? 4 : 5);
      b->len += on ? 4 : 5;
      return 1;
    }
    case LUA_TTABLE:
      return put_table(L, idx, b, depth);
    default:
      return 0; /* numbers, null, functions...: cjson's */
  }
}

int kp_json_encode_fast(lua_State *L, int idx, kp_buf *out) {
  int top = lua_gettop(L), ok;
  idx = kp_absindex(L, idx);
  out->data = NULL;
  out->len = out->cap = 0;
  ok = put_value(L, idx, out, 0);
  lua_settop(L, top);
  if (!ok) kp_buf_free(out);
  return ok;
}

/* core.json_encode(v [, fast_only]) -> string | nil, message
 * v encoded as the engine encodes a request's json: this path, else the
 * private cjson instance (an upvalue). With fast_only, nil alone when this
 * path leaves v to cjson (for checking it: bench/json_check.lua). */
static int core_json_encode(lua_State *L) {
  kp_buf b;
  luaL_checkany(L, 1);
  lua_settop(L, 2);
  if (kp_json_encode_fast(L, 1, &b)) {
    lua_pushlstring(L, b.data, b.len);
    kp_buf_free(&b);
    return 1;
  }
  if (lua_toboolean(L, 2)) {
    lua_pushnil(L);
    return 1;
  }
  if (kp_json_encode(L, lua_upvalueindex(1), 1)) return 1;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

int kp_encode_open(lua_State *L) {
  kp_json_new(L);
  lua_pushcclosure(L, core_json_encode, 1);
  lua_setfield(L, -2, "json_encode");
  return 0;
}
