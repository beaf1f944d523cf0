/* sign.c: AK/SK request signing (SDK-HMAC-SHA256), as the vendor's SDKs do
 * it (Go core/auth/signer/signer.go, Java AKSKSigner, Python signer.py; see
 * docs/credentials.md). SHA-256 and HMAC come from OpenSSL's libcrypto.
 * Every string is built on the Lua stack, so a Lua error cannot leak. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "core.h"

#define ALGORITHM "SDK-HMAC-SHA256"
#define DATE_LEN 16 /* yyyyMMddTHHmmssZ */

/* ---- bytes ---- */

/* The SDKs keep only A-Z a-z 0-9 - _ . ~ and write the rest as %XX. */
static int unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
      || c == '-' || c == '_' || c == '.' || c == '~';
}

static void push_escaped(lua_State *L, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (unreserved(c)) { luaL_addchar(&b, (char)c); continue; }
    luaL_addchar(&b, '%');
    luaL_addchar(&b, hex[c >> 4]);
    luaL_addchar(&b, hex[c & 15]);
  }
  luaL_pushresult(&b);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* %XX-decodes s (and '+' as a space in a query, as url.ParseQuery does);
 * a '%' not followed by two hex digits stays as it is. */
static void push_unescaped(lua_State *L, const char *s, size_t n, int plus_space) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0
        && (lo = hexval(s[i + 2])) >= 0) {
      luaL_addchar(&b, (char)(hi * 16 + lo));
      i += 2;
    } else if (plus_space && s[i] == '+') {
      luaL_addchar(&b, ' ');
    } else {
      luaL_addchar(&b, s[i]);
    }
  }
  luaL_pushresult(&b);
}

/* Decode, then encode: the canonical form whatever escaping the URL used. */
static void push_canonical_part(lua_State *L, const char *s, size_t n, int plus_space) {
  size_t len;
  const char *d;
  push_unescaped(L, s, n, plus_space);
  d = lua_tolstring(L, -1, &len);
  push_escaped(L, d, len);
  lua_remove(L, -2);
}

static void push_hex(lua_State *L, const unsigned char *d, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  lua_pushlstring(L, out, 2 * n);
}

static void push_sha256_hex(lua_State *L, const char *s, size_t n) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(s, n, md, &len, EVP_sha256(), NULL)) luaL_error(L, "sign: SHA-256 failed");
  push_hex(L, md, len);
}

static void push_hmac_sha256_hex(lua_State *L, const char *key, size_t klen,
                                 const char *s, size_t n) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (klen > 0x7fffffff || !HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)s, n, md, &len))
    luaL_error(L, "sign: HMAC-SHA256 failed");
  push_hex(L, md, len);
}

/* ---- the URL ---- */

typedef struct sign_url {
  const char *host, *path, *query;
  size_t host_len, path_len, query_len;
} sign_url;

/* scheme://host[:port][/path][?query][#fragment]; the host keeps its port
 * unless it is the scheme's default (curl's Host header leaves it out). */
static int parse_url(const char *url, sign_url *u) {
  const char *p = strstr(url, "://"), *end;
  int https;
  if (!p) return 0;
  https = (size_t)(p - url) == 5 && strncmp(url, "https", 5) == 0;
  u->host = p + 3;
  end = u->host + strcspn(u->host, "/?#");
  if (end == u->host || memchr(u->host, '@', (size_t)(end - u->host))) return 0;
  u->host_len = (size_t)(end - u->host);
  if (https && u->host_len > 4 && memcmp(end - 4, ":443", 4) == 0) u->host_len -= 4;
  else if (!https && u->host_len > 3 && memcmp(end - 3, ":80", 3) == 0) u->host_len -= 3;
  u->path = end;
  u->path_len = strcspn(end, "?#");
  u->query = u->path + u->path_len;
  if (*u->query == '?') {
    u->query++;
    u->query_len = strcspn(u->query, "#");
  } else {
    u->query_len = 0;
  }
  return 1;
}

/* Each segment escaped; always ends in '/' ("/v1/instances/sync-command/"). */
static void push_canonical_uri(lua_State *L, const char *p, size_t n) {
  size_t i = 0;
  lua_pushliteral(L, "");
  while (i < n) {
    size_t j = i + 1;
    while (j < n && p[j] != '/') j++;
    /* p[i] is '/' (a path always starts with one) */
    lua_pushliteral(L, "/");
    push_canonical_part(L, p + i + 1, j - i - 1, 0);
    lua_concat(L, 3);
    i = j;
  }
  {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (len > 0 && s[len - 1] == '/') return;
  }
  {
    lua_pushliteral(L, "/");
    lua_concat(L, 2);
  }
}

/* ---- sorting strings held by a Lua table ---- */

typedef struct sign_pair {
  const char *k, *v;
  size_t kl, vl;
} sign_pair;

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static int pair_cmp(const void *x, const void *y) {
  const sign_pair *a = (const sign_pair *)x, *b = (const sign_pair *)y;
  int c = bytes_cmp(a->k, a->kl, b->k, b->kl);
  return c ? c : bytes_cmp(a->v, a->vl, b->v, b->vl);
}

/* Pairs of strings from the array `t` (k1, v1, k2, v2, ...), sorted; the
 * strings stay anchored in t, the array lives in a userdata pushed here. */
static sign_pair *push_sorted_pairs(lua_State *L, int t, size_t *count) {
  size_t n = kp_rawlen(L, t) / 2, i;
  sign_pair *a = (sign_pair *)kp_newuserdata(L, (n ? n : 1) * sizeof *a);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, t, (int)(2 * i + 1));
    a[i].k = lua_tolstring(L, -1, &a[i].kl);
    lua_rawgeti(L, t, (int)(2 * i + 2));
    a[i].v = lua_tolstring(L, -1, &a[i].vl);
    lua_pop(L, 2);
  }
  qsort(a, n, sizeof *a, pair_cmp);
  *count = n;
  return a;
}

/* ---- canonical query and headers ---- */

/* Keys sorted (then values), each k=v escaped, joined by '&'. */
static void push_canonical_query(lua_State *L, const char *q, size_t n) {
  int t, top = lua_gettop(L);
  size_t i = 0, count, k;
  sign_pair *a;
  lua_newtable(L);
  t = lua_gettop(L);
  while (i < n) {
    size_t j = i, eq;
    while (j < n && q[j] != '&') j++;
    if (j > i) {
      eq = i;
      while (eq < j && q[eq] != '=') eq++;
      push_unescaped(L, q + i, eq - i, 1);
      lua_rawseti(L, t, (int)kp_rawlen(L, t) + 1);
      push_unescaped(L, q + (eq < j ? eq + 1 : j), eq < j ? j - eq - 1 : 0, 1);
      lua_rawseti(L, t, (int)kp_rawlen(L, t) + 1);
    }
    i = j + 1;
  }
  a = push_sorted_pairs(L, t, &count);
  lua_pushliteral(L, "");
  for (k = 0; k < count; k++) {
    if (k) lua_pushliteral(L, "&");
    push_escaped(L, a[k].k, a[k].kl);
    lua_pushliteral(L, "=");
    push_escaped(L, a[k].v, a[k].vl);
    lua_concat(L, k ? 5 : 4);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

static int token_char(unsigned char c) {
  return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* Adds name (lower-cased) and value (trimmed) to the list t; refuses bad
 * names, line breaks in values, and a header given twice. */
static void add_header(lua_State *L, int t, int seen, const char *name, size_t nl,
                       const char *v, size_t vl) {
  char lower[256];
  size_t i;
  if (nl == 0 || nl >= sizeof lower) luaL_error(L, "sign: header name length must be 1..255");
  for (i = 0; i < nl; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!token_char(c)) luaL_error(L, "sign: header name '%s' has a character not allowed", name);
    lower[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
  }
  for (i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
      luaL_error(L, "sign: header '%s' has a line break or NUL in its value", name);
  while (vl && (*v == ' ' || *v == '\t')) { v++; vl--; }
  while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
  lua_pushlstring(L, lower, nl);
  lua_pushvalue(L, -1);
  lua_rawget(L, seen);
  if (!lua_isnil(L, -1)) luaL_error(L, "sign: header '%s' given twice", name);
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_pushboolean(L, 1);
  lua_rawset(L, seen);
  lua_rawseti(L, t, (int)kp_rawlen(L, t) + 1);
  lua_pushlstring(L, v, vl);
  lua_rawseti(L, t, (int)kp_rawlen(L, t) + 1);
}

/* Pushes the canonical headers ("k:v\n" each, sorted) and the signed
 * header list ("k1;k2"). */
static void push_canonical_headers(lua_State *L, int t) {
  size_t count, k;
  sign_pair *a = push_sorted_pairs(L, t, &count);
  int ud = lua_gettop(L);
  lua_pushliteral(L, "");
  for (k = 0; k < count; k++) {
    lua_pushlstring(L, a[k].k, a[k].kl);
    lua_pushliteral(L, ":");
    lua_pushlstring(L, a[k].v, a[k].vl);
    lua_pushliteral(L, "\n");
    lua_concat(L, 5);
  }
  lua_pushliteral(L, "");
  for (k = 0; k < count; k++) {
    if (k) lua_pushliteral(L, ";");
    lua_pushlstring(L, a[k].k, a[k].kl);
    lua_concat(L, k ? 3 : 2);
  }
  lua_remove(L, ud);
}

/* ---- the date ---- */

static int valid_date(const char *s, size_t n) {
  size_t i;
  if (n != DATE_LEN || s[8] != 'T' || s[15] != 'Z') return 0;
  for (i = 0; i < 15; i++)
    if (i != 8 && (s[i] < '0' || s[i] > '9')) return 0;
  return 1;
}

/* `date`: a "yyyyMMddTHHmmssZ" string, Unix seconds, or nil for now. */
static void push_date(lua_State *L, int spec) {
  char out[DATE_LEN + 1];
  struct tm tm;
  time_t t;
  lua_getfield(L, spec, "date");
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (!valid_date(s, n)) luaL_error(L, "sign: date must look like 20191115T033655Z");
    return;
  }
  if (lua_isnil(L, -1)) t = time(NULL);
  else if (lua_type(L, -1) == LUA_TNUMBER) t = (time_t)lua_tonumber(L, -1);
  else luaL_error(L, "sign: date must be a string or Unix seconds");
  lua_pop(L, 1);
  if (!gmtime_r(&t, &tm) || strftime(out, sizeof out, "%Y%m%dT%H%M%SZ", &tm) != DATE_LEN)
    luaL_error(L, "sign: date out of range");
  lua_pushlstring(L, out, DATE_LEN);
}

/* ---- core.sign ---- */

static const char *field_string(lua_State *L, int spec, const char *k, size_t *n, int required) {
  const char *s;
  lua_getfield(L, spec, k);
  if (lua_isnil(L, -1) && !required) { lua_pop(L, 1); if (n) *n = 0; return NULL; }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sign: field '%s' must be a string", k);
  s = lua_tolstring(L, -1, n);
  lua_pop(L, 1); /* anchored by the spec table */
  return s;
}

/* Collects the headers to sign: the caller's, host (from the URL unless
 * given), x-sdk-date and, with temporary credentials, x-security-token. */
static void collect_headers(lua_State *L, int spec, const sign_url *u, int date, int t) {
  int seen, has_host = 0;
  size_t n, vl;
  const char *token, *v;
  lua_newtable(L);
  seen = lua_gettop(L);
  lua_getfield(L, spec, "headers");
  if (!lua_isnil(L, -1)) {
    luaL_argcheck(L, lua_type(L, -1) == LUA_TTABLE, 1, "sign: headers must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *name;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sign: headers must map names to string values");
      name = lua_tolstring(L, -2, &n);
      v = lua_tolstring(L, -1, &vl);
      add_header(L, t, seen, name, n, v, vl);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, seen, "host");
  has_host = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has_host) add_header(L, t, seen, "host", 4, u->host, u->host_len);
  v = lua_tolstring(L, date, &vl);
  add_header(L, t, seen, "x-sdk-date", 10, v, vl);
  token = field_string(L, spec, "security_token", &n, 0);
  if (token) add_header(L, t, seen, "x-security-token", 16, token, n);
  lua_pop(L, 1); /* seen */
}

/* Pushes the canonical request (six parts joined by '\n') and, below it,
 * the signed header list. */
static void push_canonical_request(lua_State *L, int spec, const sign_url *u, int date) {
  size_t ml, bl, i;
  const char *method = field_string(L, spec, "method", &ml, 1);
  const char *body = field_string(L, spec, "body", &bl, 0);
  char up[16];
  int t;
  if (ml == 0 || ml >= sizeof up) luaL_error(L, "sign: method must be 1..15 letters");
  for (i = 0; i < ml; i++) {
    char c = method[i];
    if (c >= 'a' && c <= 'z') c = (char)(c - 32);
    if (c < 'A' || c > 'Z') luaL_error(L, "sign: method must be letters");
    up[i] = c;
  }
  lua_newtable(L);
  t = lua_gettop(L);
  collect_headers(L, spec, u, date, t);
  push_canonical_headers(L, t);                 /* t+1 headers, t+2 signed */
  lua_pushvalue(L, t + 2);
  lua_replace(L, t);                            /* t: signed */
  lua_pushlstring(L, up, ml);
  lua_pushliteral(L, "\n");
  push_canonical_uri(L, u->path, u->path_len);
  lua_pushliteral(L, "\n");
  push_canonical_query(L, u->query, u->query_len);
  lua_pushliteral(L, "\n");
  lua_pushvalue(L, t + 1);
  lua_pushliteral(L, "\n");
  lua_pushvalue(L, t);
  lua_pushliteral(L, "\n");
  push_sha256_hex(L, body ? body : "", bl);
  lua_concat(L, 11);
  lua_replace(L, t + 1);
  lua_settop(L, t + 1);
}

/* core.sign{method=, url=, headers={name=value,...}, body=, ak=, sk=,
 *           date=, security_token=}
 * -> {"X-Sdk-Date: ...", ["X-Security-Token: ...",] "Authorization: ..."},
 *    canonical request (for debugging a refused signature; holds no secret)
 * `headers` are the headers to sign besides host, x-sdk-date and
 * x-security-token, which sign adds; `date` is a "yyyyMMddTHHmmssZ" string
 * or Unix seconds (default: now). */
static int sign(lua_State *L) {
  sign_url u;
  size_t akl, skl, tl;
  const char *url, *ak, *sk, *token;
  int date, creq;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  url = field_string(L, 1, "url", NULL, 1);
  ak = field_string(L, 1, "ak", &akl, 1);
  sk = field_string(L, 1, "sk", &skl, 1);
  token = field_string(L, 1, "security_token", &tl, 0);
  if (akl == 0 || skl == 0) return luaL_error(L, "sign: ak and sk must not be empty");
  if (strpbrk(ak, " ,\r\n") || strlen(ak) != akl) return luaL_error(L, "sign: ak has a character not allowed");
  if (!parse_url(url, &u)) return luaL_error(L, "sign: url must look like https://host/path");
  push_date(L, 1);                              /* 2 */
  date = 2;
  push_canonical_request(L, 1, &u, date);       /* 3 signed, 4 request */
  creq = 4;
  lua_createtable(L, 3, 0);                     /* 5 */
  lua_pushliteral(L, "X-Sdk-Date: ");
  lua_pushvalue(L, date);
  lua_concat(L, 2);
  lua_rawseti(L, 5, 1);
  if (token) {
    lua_pushliteral(L, "X-Security-Token: ");
    lua_pushlstring(L, token, tl);
    lua_concat(L, 2);
    lua_rawseti(L, 5, 2);
  }
  /* string to sign, then its HMAC */
  lua_pushliteral(L, ALGORITHM "\n");
  lua_pushvalue(L, date);
  lua_pushliteral(L, "\n");
  {
    size_t n;
    const char *s = lua_tolstring(L, creq, &n);
    push_sha256_hex(L, s, n);
  }
  lua_concat(L, 4);                             /* 6 */
  {
    size_t n;
    const char *s = lua_tolstring(L, 6, &n);
    lua_pushliteral(L, "Authorization: " ALGORITHM " Access=");
    lua_pushlstring(L, ak, akl);
    lua_pushliteral(L, ", SignedHeaders=");
    lua_pushvalue(L, 3);
    lua_pushliteral(L, ", Signature=");
    push_hmac_sha256_hex(L, sk, skl, s, n);
    lua_concat(L, 6);
  }
  lua_rawseti(L, 5, token ? 3 : 2);
  lua_pushvalue(L, 5);
  lua_pushvalue(L, creq);
  return 2;
}

int kp_sign_open(lua_State *L) {
  lua_pushcfunction(L, sign);
  lua_setfield(L, -2, "sign");
  return 0;
}
