/* sign.c: AK/SK request signing (SDK-HMAC-SHA256), as the vendor's SDKs do
 * it (Go core/auth/signer/signer.go, Java AKSKSigner, Python signer.py; see
 * docs/credentials.md). SHA-256 and HMAC come from OpenSSL's libcrypto.
 *
 * The canonical request is built in buffers owned by a signer userdata (an
 * upvalue of core.sign, freed by its __gc), reused from call to call: a Lua
 * error midway leaks nothing, and a warm call allocates nothing. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/params.h>
#endif
#include "core.h"

#define ALGORITHM "SDK-HMAC-SHA256"
#define DATE_LEN 16 /* yyyyMMddTHHmmssZ */
#define SIGNER_MT "koophone.signer"

/* A name and a value, as offsets into one of the signer's byte buffers
 * while they are collected, then as pointers for sorting. */
typedef struct sign_pair {
  size_t ko, kl, vo, vl;
  const char *k, *v;
} sign_pair;

typedef struct kp_signer {
  EVP_MD_CTX *md_ctx;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  /* with OpenSSL 3, EVP_sha256() and HMAC() look their implementation up
   * by name on every call (~15,000 instructions each): fetched once here */
  EVP_MD *sha256;
  EVP_MAC *hmac;
  EVP_MAC_CTX *mac_ctx;
#endif
  kp_buf creq;      /* the canonical request */
  kp_buf scratch;   /* decoded names and values, lower-cased header names */
  kp_buf pairs;     /* sign_pair[] */
} kp_signer;

/* ---- buffers ---- */

static void put(lua_State *L, kp_buf *b, const char *p, size_t n) {
  if (!kp_buf_append(b, p, n)) luaL_error(L, "sign: out of memory");
}

#define PUT_LIT(L, b, s) put((L), (b), "" s, sizeof(s) - 1)

/* The SDKs keep only A-Z a-z 0-9 - _ . ~ and write the rest as %XX. */
static int unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
      || c == '-' || c == '_' || c == '.' || c == '~';
}

static void put_escaped(lua_State *L, kp_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    char e[3];
    while (j < n && unreserved((unsigned char)s[j])) j++;
    if (j > i) put(L, b, s + i, j - i);
    if (j == n) break;
    e[0] = '%';
    e[1] = hex[(unsigned char)s[j] >> 4];
    e[2] = hex[(unsigned char)s[j] & 15];
    put(L, b, e, 3);
    i = j + 1;
  }
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* %XX-decodes s (and '+' as a space in a query, as url.ParseQuery does);
 * a '%' not followed by two hex digits stays as it is. */
static void put_unescaped(lua_State *L, kp_buf *b, const char *s, size_t n, int plus_space) {
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    int hi, lo;
    char c;
    while (j < n && s[j] != '%' && !(plus_space && s[j] == '+')) j++;
    if (j > i) put(L, b, s + i, j - i);
    if (j == n) break;
    c = s[j];
    i = j + 1;
    if (c == '+') {
      c = ' ';
    } else if (j + 2 < n && (hi = hexval(s[j + 1])) >= 0 && (lo = hexval(s[j + 2])) >= 0) {
      c = (char)(hi * 16 + lo);
      i = j + 3;
    }
    put(L, b, &c, 1);
  }
}

static void hex_lower(char *out, const unsigned char *d, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
}

/* ---- the signer: hash functions and buffers ---- */

static int signer_gc(lua_State *L) {
  kp_signer *k = (kp_signer *)luaL_checkudata(L, 1, SIGNER_MT);
  EVP_MD_CTX_free(k->md_ctx);
  k->md_ctx = NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  EVP_MAC_CTX_free(k->mac_ctx);
  EVP_MAC_free(k->hmac);
  EVP_MD_free(k->sha256);
  k->mac_ctx = NULL;
  k->hmac = NULL;
  k->sha256 = NULL;
#endif
  kp_buf_free(&k->creq);
  kp_buf_free(&k->scratch);
  kp_buf_free(&k->pairs);
  return 0;
}

/* Pushes a signer, its digests fetched at its first use (ready()):
 * loading koophone.core costs no libcrypto look-ups (~3,000,000
 * instructions with OpenSSL 3) when nothing is signed or hashed. */
static kp_signer *push_signer(lua_State *L) {
  kp_signer *k = (kp_signer *)kp_newuserdata(L, sizeof *k);
  memset(k, 0, sizeof *k);
  if (luaL_newmetatable(L, SIGNER_MT)) {
    lua_pushcfunction(L, signer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2); /* from here __gc frees what k holds */
  return k;
}

/* k, ready to hash; raises when libcrypto gives no SHA-256/HMAC (what
 * was fetched stays, for __gc or the next call). */
static kp_signer *ready(lua_State *L, kp_signer *k) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  if (k->md_ctx && k->mac_ctx) return k;
  if (!k->md_ctx) k->md_ctx = EVP_MD_CTX_new();
  if (!k->sha256) k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!k->hmac) k->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  if (!k->mac_ctx && k->hmac) {
    OSSL_PARAM params[2];
    k->mac_ctx = EVP_MAC_CTX_new(k->hmac);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (k->mac_ctx && !EVP_MAC_CTX_set_params(k->mac_ctx, params)) {
      EVP_MAC_CTX_free(k->mac_ctx);
      k->mac_ctx = NULL;
    }
  }
  if (!k->md_ctx || !k->sha256 || !k->mac_ctx) luaL_error(L, "koophone.core: libcrypto gives no SHA-256/HMAC");
#else
  if (k->md_ctx) return k;
  k->md_ctx = EVP_MD_CTX_new();
  if (!k->md_ctx) luaL_error(L, "koophone.core: out of memory");
#endif
  return k;
}

/* Writes the 64 hex digits of SHA-256(s) to out. */
static void sha256_hex(lua_State *L, kp_signer *k, const char *s, size_t n, char *out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  const EVP_MD *type = k->sha256;
#else
  const EVP_MD *type = EVP_sha256();
#endif
  if (!EVP_DigestInit_ex(k->md_ctx, type, NULL) || !EVP_DigestUpdate(k->md_ctx, s, n)
      || !EVP_DigestFinal_ex(k->md_ctx, md, &len) || len != 32)
    luaL_error(L, "sign: SHA-256 failed");
  hex_lower(out, md, 32);
}

/* Writes the 64 hex digits of HMAC-SHA256(key, s) to out. */
static void hmac_sha256_hex(lua_State *L, kp_signer *k, const char *key, size_t klen,
                            const char *s, size_t n, char *out) {
  unsigned char md[EVP_MAX_MD_SIZE];
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  size_t len = 0;
  if (!EVP_MAC_init(k->mac_ctx, (const unsigned char *)key, klen, NULL)
      || !EVP_MAC_update(k->mac_ctx, (const unsigned char *)s, n)
      || !EVP_MAC_final(k->mac_ctx, md, &len, sizeof md) || len != 32)
    luaL_error(L, "sign: HMAC-SHA256 failed");
#else
  unsigned int len = 0;
  if (klen > 0x7fffffff || !HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)s, n, md, &len)
      || len != 32)
    luaL_error(L, "sign: HMAC-SHA256 failed");
#endif
  hex_lower(out, md, 32);
}

/* ---- pairs (query parameters, headers) ---- */

static void add_pair(lua_State *L, kp_signer *k, size_t ko, size_t kl, size_t vo, size_t vl) {
  sign_pair p;
  p.ko = ko; p.kl = kl; p.vo = vo; p.vl = vl;
  p.k = p.v = NULL;
  put(L, &k->pairs, (const char *)&p, sizeof p);
}

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

/* Resolves the offsets (names in scratch; values too, or already at their
 * addresses) and sorts. */
static sign_pair *sorted_pairs(kp_signer *k, size_t *count, int values_in_scratch) {
  sign_pair *a = (sign_pair *)k->pairs.data;
  size_t n = k->pairs.len / sizeof *a, i;
  for (i = 0; i < n; i++) {
    a[i].k = k->scratch.data + a[i].ko;
    if (values_in_scratch) a[i].v = k->scratch.data + a[i].vo;
  }
  if (n > 1) qsort(a, n, sizeof *a, pair_cmp);
  *count = n;
  return a;
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

/* Each segment decoded then escaped; always ends in '/'
 * ("/v1/instances/sync-command/"). */
static void put_canonical_uri(lua_State *L, kp_signer *k, const char *p, size_t n) {
  kp_buf *b = &k->creq;
  size_t i = 0;
  while (i < n) { /* p[i] is '/': a path always starts with one */
    size_t j = i + 1;
    while (j < n && p[j] != '/') j++;
    PUT_LIT(L, b, "/");
    k->scratch.len = 0;
    put_unescaped(L, &k->scratch, p + i + 1, j - i - 1, 0);
    put_escaped(L, b, k->scratch.data, k->scratch.len);
    i = j;
  }
  if (b->len == 0 || b->data[b->len - 1] != '/') PUT_LIT(L, b, "/");
}

/* Keys sorted (then values), each k=v escaped, joined by '&'. */
static void put_canonical_query(lua_State *L, kp_signer *k, const char *q, size_t n) {
  size_t i = 0, count, j;
  sign_pair *a;
  k->scratch.len = 0;
  k->pairs.len = 0;
  while (i < n) {
    size_t end = i, eq, ko, vo;
    while (end < n && q[end] != '&') end++;
    if (end > i) {
      eq = i;
      while (eq < end && q[eq] != '=') eq++;
      ko = k->scratch.len;
      put_unescaped(L, &k->scratch, q + i, eq - i, 1);
      vo = k->scratch.len;
      if (eq < end) put_unescaped(L, &k->scratch, q + eq + 1, end - eq - 1, 1);
      add_pair(L, k, ko, vo - ko, vo, k->scratch.len - vo);
    }
    i = end + 1;
  }
  a = sorted_pairs(k, &count, 1);
  for (j = 0; j < count; j++) {
    if (j) PUT_LIT(L, &k->creq, "&");
    put_escaped(L, &k->creq, a[j].k, a[j].kl);
    PUT_LIT(L, &k->creq, "=");
    put_escaped(L, &k->creq, a[j].v, a[j].vl);
  }
}

/* ---- headers ---- */

static int token_char(unsigned char c) {
  return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* Adds a header to sign: the name lower-cased into scratch, the value
 * (trimmed) where it lies, in a Lua string the caller keeps alive. */
static int is_host(const char *name, size_t nl) {
  return nl == 4 && (name[0] | 32) == 'h' && (name[1] | 32) == 'o' && (name[2] | 32) == 's'
      && (name[3] | 32) == 't';
}

static void add_header(lua_State *L, kp_signer *k, const char *name, size_t nl,
                       const char *v, size_t vl) {
  size_t i, ko = k->scratch.len;
  if (nl == 0 || nl > 255) luaL_error(L, "sign: header name length must be 1..255");
  for (i = 0; i < nl; i++) {
    unsigned char c = (unsigned char)name[i];
    char lc = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    if (!token_char(c)) luaL_error(L, "sign: header name '%s' has a character not allowed", name);
    put(L, &k->scratch, &lc, 1);
  }
  for (i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
      luaL_error(L, "sign: header '%s' has a line break or NUL in its value", name);
  while (vl && (*v == ' ' || *v == '\t')) { v++; vl--; }
  while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
  add_pair(L, k, ko, nl, 0, vl);
  ((sign_pair *)(k->pairs.data + k->pairs.len - sizeof(sign_pair)))->v = v;
}

/* The headers to sign: the caller's, host (from the URL unless given),
 * x-sdk-date and, with temporary credentials, x-security-token. */
static void collect_headers(lua_State *L, kp_signer *k, int spec, const sign_url *u,
                            const char *date, const char *token, size_t tl) {
  size_t nl, vl;
  int has_host = 0;
  k->scratch.len = 0;
  k->pairs.len = 0;
  lua_getfield(L, spec, "headers");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TTABLE) luaL_error(L, "sign: headers must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *name, *v;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sign: headers must map names to string values");
      name = lua_tolstring(L, -2, &nl);
      v = lua_tolstring(L, -1, &vl);
      add_header(L, k, name, nl, v, vl); /* v stays in the spec's table */
      has_host |= is_host(name, nl);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (!has_host) add_header(L, k, "host", 4, u->host, u->host_len);
  add_header(L, k, "x-sdk-date", 10, date, DATE_LEN);
  if (token) add_header(L, k, "x-security-token", 16, token, tl);
}

/* Appends "name:value\n" per header, '\n', then "n1;n2" (the signed list). */
static void put_canonical_headers(lua_State *L, kp_signer *k, size_t *signed_at, size_t *signed_len) {
  size_t count, i;
  sign_pair *a = sorted_pairs(k, &count, 0);
  for (i = 1; i < count; i++) {
    if (a[i].kl == a[i - 1].kl && memcmp(a[i].k, a[i - 1].k, a[i].kl) == 0) {
      lua_pushlstring(L, a[i].k, a[i].kl);
      luaL_error(L, "sign: header '%s' given twice", lua_tostring(L, -1));
    }
  }
  for (i = 0; i < count; i++) {
    put(L, &k->creq, a[i].k, a[i].kl);
    PUT_LIT(L, &k->creq, ":");
    put(L, &k->creq, a[i].v, a[i].vl);
    PUT_LIT(L, &k->creq, "\n");
  }
  PUT_LIT(L, &k->creq, "\n");
  *signed_at = k->creq.len;
  for (i = 0; i < count; i++) {
    if (i) PUT_LIT(L, &k->creq, ";");
    put(L, &k->creq, a[i].k, a[i].kl);
  }
  *signed_len = k->creq.len - *signed_at;
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
static void get_date(lua_State *L, int spec, char *out) {
  struct tm tm;
  time_t t;
  lua_getfield(L, spec, "date");
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (!valid_date(s, n)) luaL_error(L, "sign: date must look like 20191115T033655Z");
    memcpy(out, s, DATE_LEN + 1);
    lua_pop(L, 1);
    return;
  }
  if (lua_isnil(L, -1)) t = time(NULL);
  else if (lua_type(L, -1) == LUA_TNUMBER) t = (time_t)lua_tonumber(L, -1);
  else luaL_error(L, "sign: date must be a string or Unix seconds");
  lua_pop(L, 1);
  if (!gmtime_r(&t, &tm) || strftime(out, DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != DATE_LEN)
    luaL_error(L, "sign: date out of range");
}

/* ---- core.sign ---- */

static const char *field_string(lua_State *L, int spec, const char *key, size_t *n, int required) {
  const char *s;
  lua_getfield(L, spec, key);
  if (lua_isnil(L, -1) && !required) { lua_pop(L, 1); if (n) *n = 0; return NULL; }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sign: field '%s' must be a string", key);
  s = lua_tolstring(L, -1, n);
  lua_pop(L, 1); /* anchored by the spec table */
  return s;
}

static void put_method(lua_State *L, kp_signer *k, const char *m, size_t n) {
  size_t i;
  if (n == 0 || n > 15) luaL_error(L, "sign: method must be 1..15 letters");
  for (i = 0; i < n; i++) {
    char c = m[i];
    if (c >= 'a' && c <= 'z') c = (char)(c - 32);
    if (c < 'A' || c > 'Z') luaL_error(L, "sign: method must be letters");
    put(L, &k->creq, &c, 1);
  }
  PUT_LIT(L, &k->creq, "\n");
}

/* core.sign{method=, url=, headers={name=value,...}, body=, ak=, sk=,
 *           date=, security_token=}
 * -> {"X-Sdk-Date: ...", ["X-Security-Token: ...",] "Authorization: ..."},
 *    the canonical request (for debugging a refused signature; no secret)
 * `headers` are the headers to sign besides host, x-sdk-date and
 * x-security-token, which sign adds; `date` is a "yyyyMMddTHHmmssZ" string
 * or Unix seconds (default: now). */
static int sign(lua_State *L) {
  kp_signer *k = ready(L, (kp_signer *)lua_touserdata(L, lua_upvalueindex(1)));
  sign_url u;
  size_t ml, akl, skl, tl, bl, signed_at, signed_len;
  const char *url, *method, *ak, *sk, *token, *body;
  char date[DATE_LEN + 1], sts[sizeof(ALGORITHM) + DATE_LEN + 1 + 64], sig[64];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  url = field_string(L, 1, "url", NULL, 1);
  method = field_string(L, 1, "method", &ml, 1);
  ak = field_string(L, 1, "ak", &akl, 1);
  sk = field_string(L, 1, "sk", &skl, 1);
  token = field_string(L, 1, "security_token", &tl, 0);
  body = field_string(L, 1, "body", &bl, 0);
  if (akl == 0 || skl == 0) return luaL_error(L, "sign: ak and sk must not be empty");
  if (strpbrk(ak, " ,\r\n") || strlen(ak) != akl) return luaL_error(L, "sign: ak has a character not allowed");
  if (token && (tl == 0 || strpbrk(token, "\r\n") || strlen(token) != tl))
    return luaL_error(L, "sign: security_token must be one line");
  if (!parse_url(url, &u)) return luaL_error(L, "sign: url must look like https://host/path");
  get_date(L, 1, date);

  k->creq.len = 0;
  put_method(L, k, method, ml);
  put_canonical_uri(L, k, u.path, u.path_len);
  PUT_LIT(L, &k->creq, "\n");
  put_canonical_query(L, k, u.query, u.query_len);
  PUT_LIT(L, &k->creq, "\n");
  collect_headers(L, k, 1, &u, date, token, tl);
  put_canonical_headers(L, k, &signed_at, &signed_len);
  PUT_LIT(L, &k->creq, "\n");
  {
    char h[64];
    sha256_hex(L, k, body ? body : "", bl, h);
    put(L, &k->creq, h, 64);
  }

  /* the string to sign, then its HMAC */
  memcpy(sts, ALGORITHM "\n", sizeof(ALGORITHM));
  memcpy(sts + sizeof(ALGORITHM), date, DATE_LEN);
  sts[sizeof(ALGORITHM) + DATE_LEN] = '\n';
  sha256_hex(L, k, k->creq.data, k->creq.len, sts + sizeof(ALGORITHM) + DATE_LEN + 1);
  hmac_sha256_hex(L, k, sk, skl, sts, sizeof sts, sig);

  lua_createtable(L, token ? 3 : 2, 0);
  lua_pushfstring(L, "X-Sdk-Date: %s", date);
  lua_rawseti(L, -2, 1);
  if (token) {
    lua_pushfstring(L, "X-Security-Token: %s", token);
    lua_rawseti(L, -2, 2);
  }
  lua_pushliteral(L, "Authorization: " ALGORITHM " Access=");
  lua_pushlstring(L, ak, akl);
  lua_pushliteral(L, ", SignedHeaders=");
  lua_pushlstring(L, k->creq.data + signed_at, signed_len);
  lua_pushliteral(L, ", Signature=");
  lua_pushlstring(L, sig, 64);
  lua_concat(L, 6);
  lua_rawseti(L, -2, token ? 3 : 2);
  lua_pushlstring(L, k->creq.data, k->creq.len);
  return 2;
}

/* core.sha256(s) -> 64 hex digits. A journal keeps this digest of a
 * command or package URL it may not store, to check the one a resume is
 * given again. */
static int sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  kp_signer *k = ready(L, (kp_signer *)lua_touserdata(L, lua_upvalueindex(1)));
  char out[65];
  sha256_hex(L, k, s, n, out);
  lua_pushlstring(L, out, 64);
  return 1;
}

int kp_sign_open(lua_State *L) {
  push_signer(L);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, sign, 1);
  lua_setfield(L, -3, "sign");
  lua_pushcclosure(L, sha256, 1);
  lua_setfield(L, -2, "sha256");
  return 0;
}
