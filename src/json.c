/* json.c: JSON through a private lua-cjson instance (cjson.new()), so a
 * host's own cjson settings are neither read nor changed; replies are
 * decoded by a fast path first (below), with cjson as the reference. */
#include <string.h>
#include "fast.h"

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

/* ---- the fast path ----
 *
 * Replies are plain JSON: objects of short keys, lists, strings without
 * escapes, small integers. lua-cjson grows every table key by key (a
 * 5-key object is rehashed four times); here each container's values are
 * parsed onto the Lua stack first and the table is created at its final
 * size. The fast path takes only what it is sure of — anything else (any
 * error, a fraction or exponent, a \u surrogate, a raw control character,
 * deep nesting, a huge container) makes it give up, and the body goes to
 * lua-cjson, which stays the reference: whatever the fast path accepts,
 * cjson decodes to the same values (numbers as floats, null as
 * lightuserdata NULL, the last of duplicate keys), and every error message
 * is cjson's. The state (kp_fast) is in fast.h: src/cmd_rows.c reads a
 * sync-command reply's results with these same functions. */

#define FAST_MAX_DIGITS 15        /* integers exact in a double */

/* Bytes that end a plain run inside a string: '"', '\\', controls. */
static const unsigned char STOP[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0
};

static int hex4(const char *s) {
  int v = 0, i;
  for (i = 0; i < 4; i++) {
    int c = (unsigned char)s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') d = (c | 0x20) - 'a' + 10;
    else return -1;
    v = (v << 4) | d;
  }
  return v;
}

/* A string with escapes, from `s` (after the quote) */
static int fast_escaped(kp_fast *f, const char *s) {
  luaL_Buffer b;
  const char *p = s, *end = f->end;
  luaL_buffinit(f->L, &b);
  while (p < end) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      luaL_pushresult(&b);
      f->p = p + 1;
      return 1;
    }
    if (c < 0x20) return 0;
    if (c != '\\') { luaL_addchar(&b, (char)c); p++; continue; }
    if (end - p < 2) return 0;
    switch (p[1]) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u': {
        int cp;
        if (end - p < 6 || (cp = hex4(p + 2)) < 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        if (cp <= 0x7F) {
          luaL_addchar(&b, (char)cp);
        } else if (cp <= 0x7FF) {
          luaL_addchar(&b, (char)(0xC0 | (cp >> 6)));
          luaL_addchar(&b, (char)(0x80 | (cp & 0x3F)));
        } else {
          luaL_addchar(&b, (char)(0xE0 | (cp >> 12)));
          luaL_addchar(&b, (char)(0x80 | ((cp >> 6) & 0x3F)));
          luaL_addchar(&b, (char)(0x80 | (cp & 0x3F)));
        }
        p += 6;
        continue;
      }
      default: return 0;
    }
    p += 2;
  }
  return 0;
}

static void push_plain(kp_fast *f, const char *s, size_t n) {
  lua_State *L = f->L;
  unsigned slot;
  if (n > KP_FAST_CACHE_MAX_LEN) { lua_pushlstring(L, s, n); return; }
  slot = (unsigned)(n * 7 + (n ? (unsigned)(unsigned char)s[0] * 3u + (unsigned char)s[n - 1] : 0u)) % KP_FAST_CACHE_SLOTS;
  if (f->cached[slot] && f->cached_len[slot] == n && memcmp(f->cached[slot], s, n) == 0) {
    lua_pushvalue(L, f->cache_base + (int)slot);
    return;
  }
  lua_pushlstring(L, s, n);
  lua_pushvalue(L, -1);
  lua_replace(L, f->cache_base + (int)slot);
  f->cached[slot] = s;
  f->cached_len[slot] = (unsigned char)n;
}

int kp_fast_plain(kp_fast *f, const char **s, size_t *n) {
  const char *b = f->p + 1, *p = b, *end = f->end;
  while (p < end && !STOP[(unsigned char)*p]) p++;
  if (p >= end || *p != '"') return 0;
  *s = b;
  *n = (size_t)(p - b);
  f->p = p + 1;
  return 1;
}

int kp_fast_string(kp_fast *f) {
  const char *s = f->p + 1, *p = s, *end = f->end;
  while (p < end && !STOP[(unsigned char)*p]) p++;
  if (p >= end || *p != '"') {
    if (p < end && *p == '\\') return fast_escaped(f, s); /* the rest has escapes */
    return 0;
  }
  push_plain(f, s, (size_t)(p - s));
  f->p = p + 1;
  return 1;
}

/* -?(0|[1-9][0-9]*), at most 15 digits, not followed by '.', 'e', 'E' */
static int fast_number(kp_fast *f) {
  const char *p = f->p, *end = f->end, *d;
  double v = 0;
  int neg = 0;
  if (*p == '-') { neg = 1; p++; }
  d = p;
  while (p < end && *p >= '0' && *p <= '9') { v = v * 10 + (*p - '0'); p++; }
  if (p == d || p - d > FAST_MAX_DIGITS || (*d == '0' && p - d > 1)) return 0;
  if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
  lua_pushnumber(f->L, (lua_Number)(neg ? -v : v));
  f->p = p;
  return 1;
}

int kp_fast_word(kp_fast *f, const char *w, size_t n) {
  if ((size_t)(f->end - f->p) < n || memcmp(f->p, w, n) != 0) return 0;
  f->p += n;
  return 1;
}

/* 1 when the key just pushed is the hook path's key at this depth. */
static int on_hook_path(kp_fast *f) {
  const char *want = f->hook_path[f->depth - 1];
  size_t n, wn = strlen(want);
  const char *k = lua_tolstring(f->L, -1, &n);
  return n == wn && memcmp(k, want, n) == 0;
}

/* The value of a key of an object at this depth: the hook's, when the key
 * ends the hook path, else decoded (with the path followed inside). */
static int object_value(kp_fast *f) {
  int ok;
  if (!f->hook || f->matched != f->depth - 1 || !on_hook_path(f)) return kp_fast_value(f);
  if (f->depth == f->hook_keys) {
    kp_fast_ws(f);
    return f->hook(f) || kp_fast_value(f);
  }
  f->matched++;
  ok = kp_fast_value(f);
  f->matched--;
  return ok;
}

static int fast_object(kp_fast *f) {
  lua_State *L = f->L;
  int base = lua_gettop(L), n = 0, t, i, more;
  f->p++;
  kp_fast_ws(f);
  if (f->p < f->end && *f->p == '}') {
    f->p++;
    lua_createtable(L, 0, 0);
    return 1;
  }
  for (;;) {
    if (!lua_checkstack(L, 8)) return 0;
    if (f->p >= f->end || *f->p != '"' || !kp_fast_string(f)) return 0;
    kp_fast_ws(f);
    if (f->p >= f->end || *f->p != ':') return 0;
    f->p++;
    if (!object_value(f)) return 0;
    n++;
    if ((more = kp_fast_next(f, '}')) <= 0) break;
  }
  if (more < 0) return 0;
  /* in order, so that the last of duplicate keys wins, as with cjson */
  lua_createtable(L, 0, n);
  t = lua_gettop(L);
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, base + 1 + 2 * i);
    lua_pushvalue(L, base + 2 + 2 * i);
    lua_rawset(L, t);
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return 1;
}

static int fast_array(kp_fast *f) {
  lua_State *L = f->L;
  int base = lua_gettop(L), n = 0, more;
  f->p++;
  kp_fast_ws(f);
  if (f->p < f->end && *f->p == ']') {
    f->p++;
    lua_createtable(L, 0, 0);
    return 1;
  }
  for (;;) {
    if (!lua_checkstack(L, 8)) return 0;
    if (!kp_fast_value(f)) return 0;
    n++;
    if ((more = kp_fast_next(f, ']')) <= 0) break;
  }
  if (more < 0) return 0;
  lua_createtable(L, n, 0);
  lua_insert(L, base + 1);
  for (; n > 0; n--) lua_rawseti(L, base + 1, n); /* pops element n */
  return 1;
}

int kp_fast_value(kp_fast *f) {
  int ok;
  kp_fast_ws(f);
  if (f->p >= f->end) return 0;
  switch (*f->p) {
    case '"': return kp_fast_string(f);
    case '{':
    case '[':
      if (++f->depth > KP_FAST_MAX_DEPTH) return 0;
      ok = *f->p == '{' ? fast_object(f) : fast_array(f);
      f->depth--;
      return ok;
    case 't':
      if (!kp_fast_word(f, "true", 4)) return 0;
      lua_pushboolean(f->L, 1);
      return 1;
    case 'f':
      if (!kp_fast_word(f, "false", 5)) return 0;
      lua_pushboolean(f->L, 0);
      return 1;
    case 'n':
      if (!kp_fast_word(f, "null", 4)) return 0;
      lua_pushlightuserdata(f->L, NULL); /* cjson.null */
      return 1;
    default:
      if (*f->p == '-' || (*f->p >= '0' && *f->p <= '9')) return fast_number(f);
      return 0;
  }
}

int kp_fast_begin(kp_fast *f, lua_State *L, const char *s, size_t n) {
  int i;
  if (!lua_checkstack(L, KP_FAST_CACHE_SLOTS + 8)) return 0;
  f->L = L;
  f->p = s;
  f->end = s + n;
  f->depth = 0;
  f->cache_base = lua_gettop(L) + 1;
  for (i = 0; i < KP_FAST_CACHE_SLOTS; i++) lua_pushnil(L);
  memset((void *)f->cached, 0, sizeof f->cached);
  memset(f->cached_len, 0, sizeof f->cached_len);
  f->hook = NULL;
  f->hook_path = NULL;
  f->hook_keys = f->matched = 0;
  f->hook_data = NULL;
  return 1;
}

int kp_fast_document(kp_fast *f) {
  if (!kp_fast_value(f)) return 0;
  kp_fast_ws(f);
  return f->p == f->end;
}

/* Under lua_pcall (a memory error is a decode failure, as with cjson):
 * the decoded value, or nothing when the fast path gives up. */
static int fast_decode(lua_State *L) {
  const kp_span *in = (const kp_span *)lua_touserdata(L, 1);
  kp_fast f;
  if (!kp_fast_begin(&f, L, in->s, in->n)) return 0;
  return kp_fast_document(&f);
}

int kp_json_decode_fast(lua_State *L, const char *s, size_t n) {
  kp_span in;
  int top = lua_gettop(L);
  in.s = s;
  in.n = n;
  if (!lua_checkstack(L, 3)) return 0;
  lua_pushcfunction(L, fast_decode);
  lua_pushlightuserdata(L, &in);
  if (lua_pcall(L, 1, 1, 0) != 0 || lua_isnil(L, -1)) {
    lua_settop(L, top);
    return 0;
  }
  return 1;
}

/* Decodes s: the fast path, else the cjson instance at cjson_idx. Pushes
 * the value (1) or cjson's error message (0). */
int kp_json_decode(lua_State *L, int cjson_idx, const char *s, size_t n) {
  cjson_idx = kp_absindex(L, cjson_idx);
  if (kp_json_decode_fast(L, s, n)) return 1;
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

/* core.json_decode(s [, fast_only]) -> value | nil, message
 * Decodes s as the engine decodes replies: the fast path, else the private
 * cjson instance (an upvalue). With fast_only, nil alone when the fast path
 * gives up (for checking it against cjson: bench/json_check.lua). */
static int core_json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int fast_only = lua_toboolean(L, 2);
  lua_settop(L, 1);
  if (fast_only) {
    if (!kp_json_decode_fast(L, s, n)) lua_pushnil(L);
    return 1;
  }
  if (kp_json_decode(L, lua_upvalueindex(1), s, n)) return 1;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

int kp_json_open(lua_State *L) {
  kp_json_new(L);
  lua_pushcclosure(L, core_json_decode, 1);
  lua_setfield(L, -2, "json_decode");
  return 0;
}
