/* request.c: the request userdata — one HTTP exchange from submit to the
 * decoded response. curl's callbacks only copy bytes into buffers owned
 * here; Lua sees the result after engine:perform() has reported it. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "core.h"


/* Slots of the request's user value table. */
#define SLOT_ENGINE 1   /* keeps the engine (and its cjson) alive */
#define SLOT_RESULT 2   /* the response table, built once */
#define SLOT_ERROR 3    /* or the error table */
#define SLOT_ROWS 4     /* spec.rows: the ids of a sync-command */

#define DEFAULT_MAX_RESPONSE (16u * 1024u * 1024u)

int kp_buf_append(kp_buf *b, const char *p, size_t n) {
  if (!b->data || b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    char *d;
    while (cap < b->len + n + 1) cap *= 2;
    d = (char *)realloc(b->data, cap);
    if (!d) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 1;
}

void kp_buf_free(kp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static kp_request *check_request(lua_State *L, int idx) {
  return (kp_request *)luaL_checkudata(L, idx, KP_REQUEST_MT);
}

/* ---- curl callbacks: C only, never Lua ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  kp_request *r = (kp_request *)ud;
  size_t n = size * nmemb;
  if (r->response.len + n > r->max_response) { r->too_large = 1; return 0; }
  if (r->engine) kp_engine_lend_buf(r->engine, &r->response); /* (when it holds none) */
  return kp_buf_append(&r->response, p, n) ? n : 0;
}

#ifndef KP_HAVE_PREREQFUNCTION
static size_t on_send(char *p, size_t size, size_t nitems, void *ud) {
  kp_request *r = (kp_request *)ud;
  size_t n = r->body_len - r->body_sent;
  if (n > size * nitems) n = size * nitems;
  memcpy(p, r->body + r->body_sent, n);
  r->body_sent += n;
  return n;
}
#endif

#ifdef KP_HAVE_PREREQFUNCTION
/* Called before each time curl sends the request. A second time is curl
 * retrying on its own after a kept-alive connection died under the first
 * (lib/transfer.c, Curl_retry_request): the command may have run, so it
 * is refused, as curl itself refuses when it cannot rewind a body. */
static int on_prereq(void *ud, char *remote_ip, char *local_ip, int remote_port, int local_port) {
  kp_request *r = (kp_request *)ud;
  (void)remote_ip; (void)local_ip; (void)remote_port; (void)local_port;
  return ++r->sends > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}
#endif

static void set_header_copy(char **slot, const char *v, size_t n) {
  char *s = (char *)malloc(n + 1);
  if (!s) return;
  memcpy(s, v, n);
  s[n] = '\0';
  free(*slot);
  *slot = s;
}

static void clear_headers(kp_request *r) {
  free(r->request_id); free(r->retry_after);
  free(r->subject_token); free(r->content_type); free(r->date);
  r->request_id = r->retry_after = r->subject_token = r->content_type = r->date = NULL;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
  kp_request *r = (kp_request *)ud;
  size_t n = size * nitems, name_len;
  const char *colon, *v, *end = line + n;
  char **slot = NULL;
  if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { clear_headers(r); return n; }
  colon = (const char *)memchr(line, ':', n);
  if (!colon) return n;
  name_len = (size_t)(colon - line);
  if (name_len == 12 && strncasecmp(line, "x-request-id", 12) == 0) slot = &r->request_id;
  else if (name_len == 11 && strncasecmp(line, "retry-after", 11) == 0) slot = &r->retry_after;
  else if (name_len == 15 && strncasecmp(line, "x-subject-token", 15) == 0) slot = &r->subject_token;
  else if (name_len == 12 && strncasecmp(line, "content-type", 12) == 0) slot = &r->content_type;
  else if (name_len == 4 && strncasecmp(line, "date", 4) == 0) slot = &r->date;
  if (!slot) return n;
  v = colon + 1;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
  set_header_copy(slot, v, (size_t)(end - v));
  return n;
}

/* ---- building a request from its Lua description ---- */

/* Limits of the numeric request fields (all fit an int, so a long is never
 * overflowed, and seconds fit curl's internal milliseconds). */
#define MAX_MS 2147483647L       /* ~24.8 days */
#define MAX_SECONDS 2147483L     /* the same span in seconds */
#define MAX_BYTES 2147483647L

/* What submit reads from the spec table before it touches the engine.
 * The strings stay on the Lua stack (anchored) until submit returns. */
typedef struct kp_spec {
  const char *url, *method, *ca_file, *ca_path, *client_cert, *client_key, *proxy, *no_proxy;
  long http_version;             /* 0: curl's default */
  long timeout, connect_timeout, low_speed_limit, low_speed_time, max_age;
  int has_body, insecure;
} kp_spec;

/* t[k] as a string left on the stack, or NULL (nothing pushed). */
static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return NULL; }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "request field '%s' must be a string", k);
  return lua_tostring(L, -1);
}

static long opt_long(lua_State *L, int t, const char *k, long dflt, long max, const char *unit) {
  return kp_opt_range(L, t, k, dflt, max, "request field", unit);
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
  int v = dflt;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Builds r->headers from t.headers (a list of "Name: value" strings), in
 * one allocation: the list's nodes, then the lines they point to. curl only
 * reads the list, and the request frees it with free() (never
 * curl_slist_free_all); curl_slist_append would make two allocations a line,
 * and copy an IAM token of several KB through strdup each time. */
static void read_headers(lua_State *L, int t, kp_request *r, int has_body) {
  static const char EXPECT[] = "Expect:"; /* no "Expect: 100-continue" round trip, ever */
  size_t i, n = 0, lines, bytes = 0, len;
  struct curl_slist *nodes;
  char *text;
  lua_getfield(L, t, "headers");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) {
      luaL_error(L, "request field 'headers' must be a list of strings 'Name: value', got %s",
                 luaL_typename(L, -1));
    }
    n = kp_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (int)i);
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "request headers[%d] must be a string 'Name: value'", (int)i);
      (void)lua_tolstring(L, -1, &len);
      bytes += len + 1;
      lua_pop(L, 1);
    }
  }
  lines = n + (has_body ? 1 : 0);
  if (lines == 0) { lua_pop(L, 1); r->headers = NULL; return; }
  if (has_body) bytes += sizeof EXPECT;
  nodes = (struct curl_slist *)malloc(lines * sizeof *nodes + bytes);
  if (!nodes) luaL_error(L, "out of memory");
  text = (char *)(nodes + lines);
  for (i = 0; i < lines; i++) {
    const char *line = EXPECT;
    len = sizeof EXPECT - 1;
    if (i < n) {
      lua_rawgeti(L, -1, (int)(i + 1));
      line = lua_tolstring(L, -1, &len);
    }
    memcpy(text, line, len + 1);
    if (i < n) lua_pop(L, 1);
    nodes[i].data = text;
    nodes[i].next = i + 1 < lines ? &nodes[i + 1] : NULL;
    text += len + 1;
  }
  lua_pop(L, 1);
  r->headers = nodes;
}

/* Reads the body (string `body`, or table `json` encoded straight into the
 * request's buffer when plain, else by the engine's cjson) into an owned
 * copy. Returns 1 when there is a body. */
static int read_body(lua_State *L, int t, kp_request *r) {
  const char *s = NULL;
  size_t n = 0;
  lua_getfield(L, t, "json");
  if (!lua_isnil(L, -1)) {
    kp_buf b;
    if (kp_json_encode_fast(L, -1, &b)) {
      r->body = b.data; /* r owns it from here */
      r->body_len = b.len;
      return 1;
    }
    kp_engine_push_json(L, 1);
    if (!kp_json_encode(L, lua_gettop(L), -2))
      luaL_error(L, "request json: %s", lua_tostring(L, -1));
    s = lua_tolstring(L, -1, &n);
  } else {
    lua_pop(L, 1);
    lua_getfield(L, t, "body");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "request field 'body' must be a string");
      s = lua_tolstring(L, -1, &n);
    }
  }
  if (s) {
    r->body = (char *)malloc(n ? n : 1);
    if (!r->body) luaL_error(L, "out of memory");
    memcpy(r->body, s, n);
    r->body_len = n;
  }
  return s != NULL; /* what was pushed stays until submit returns */
}

static long read_http_version(lua_State *L, int t) {
  const char *s = opt_string(L, t, "http_version");
  if (!s) return 0;
  if (strcmp(s, "1.1") == 0) return CURL_HTTP_VERSION_1_1;
  if (strcmp(s, "2") == 0) return CURL_HTTP_VERSION_2TLS;
  if (strcmp(s, "2-prior-knowledge") == 0) return CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
  luaL_error(L, "request field 'http_version' must be '1.1', '2' or '2-prior-knowledge'");
  return 0;
}

/* Every check of a spec, and everything that may raise, happens here —
 * before submit takes an easy handle or touches the engine. What it
 * allocates (body, header list) belongs to r, freed by r's __gc. */
static void read_spec(lua_State *L, int t, kp_request *r, kp_spec *sp) {
  luaL_checkstack(L, 24, "request spec");
  sp->url = opt_string(L, t, "url");
  if (!sp->url) luaL_error(L, "request field 'url' is required");
  sp->method = opt_string(L, t, "method");
  sp->ca_file = opt_string(L, t, "ca_file");
  sp->ca_path = opt_string(L, t, "ca_path");
  sp->client_cert = opt_string(L, t, "client_cert");
  sp->client_key = opt_string(L, t, "client_key");
  sp->proxy = opt_string(L, t, "proxy");
  sp->no_proxy = opt_string(L, t, "no_proxy");
  sp->http_version = read_http_version(L, t);
  sp->timeout = opt_long(L, t, "timeout", 0, MAX_MS, "ms, 0: none");
  sp->connect_timeout = opt_long(L, t, "connect_timeout", 0, MAX_MS, "ms, 0: curl's default");
  sp->low_speed_limit = opt_long(L, t, "low_speed_limit", 0, MAX_BYTES, "bytes/s, 0: off");
  sp->low_speed_time = opt_long(L, t, "low_speed_time", 30, MAX_SECONDS, "s");
  sp->max_age = opt_long(L, t, "max_connection_age", 25, MAX_SECONDS, "s");
  r->max_response = (size_t)opt_long(L, t, "max_response", DEFAULT_MAX_RESPONSE, MAX_BYTES, "bytes");
  r->decode = opt_bool(L, t, "decode", 1);
  sp->insecure = opt_bool(L, t, "insecure", 0);
  sp->has_body = read_body(L, t, r);
  read_headers(L, t, r, sp->has_body);
}

/* spec.rows (the ids of a sync-command) or spec.job_rows (the tables of
 * a task being queried): kept in the request's user value until the
 * reply's rows are built from its bytes (src/cmd_rows.c, src/job_rows.c). */
static void read_rows_ids(lua_State *L, int t, int req, kp_request *r) {
  static const char *const FIELD[] = { "rows", "job_rows" };
  static const char *const WANT[] = { "a list of ids", "a task's tables" };
  int kind;
  for (kind = KP_ROWS_SYNC; kind <= KP_ROWS_TASK; kind++) {
    lua_getfield(L, t, FIELD[kind - 1]);
    if (!lua_isnil(L, -1)) {
      if (!lua_istable(L, -1)) luaL_error(L, "request field '%s' must be %s", FIELD[kind - 1], WANT[kind - 1]);
      kp_getuservalue(L, req);
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, SLOT_ROWS);
      lua_pop(L, 1);
      r->rows = kind;
    }
    lua_pop(L, 1);
  }
}

/* Sets the easy handle's options from a checked spec. Never raises. */
static void configure(kp_engine *e, kp_request *r, const kp_spec *sp) {
  CURL *h = r->easy;
  const char *url = sp->url;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(h, CURLOPT_SHARE, e->share);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  /* Over TLS, wait for the first connection to say whether it multiplexes
   * (HTTP/2) rather than open one per request; plain http:// is HTTP/1.1
   * here, where waiting would only serialise the first requests. */
  if (strncmp(url, "https:", 6) == 0) curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#ifdef KP_HAVE_PROTOCOLS_STR
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, (void *)r);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers);

  if (sp->has_body) {
    /* A command must not run twice behind our back: curl resends a request
     * on its own when a reused connection died under it. The body is
     * curl's to send with the headers (one write, one TCP segment: a read
     * callback made it two), and a second send is refused (on_prereq).
     * Before curl 7.80, a read callback without a seek callback: curl
     * cannot rewind it, so it can never resend. */
#ifdef KP_HAVE_PREREQFUNCTION
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, (void *)r);
#else
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_send);
    curl_easy_setopt(h, CURLOPT_READDATA, (void *)r);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
#endif
  }
  if (sp->method && strcmp(sp->method, sp->has_body ? "POST" : "GET") != 0)
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, sp->method);

  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, sp->timeout);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, sp->connect_timeout);
  if (sp->low_speed_limit > 0) {
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, sp->low_speed_limit);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, sp->low_speed_time);
  }
  curl_easy_setopt(h, CURLOPT_MAXAGE_CONN, sp->max_age);
  if (sp->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, sp->ca_file);
  if (sp->ca_path) curl_easy_setopt(h, CURLOPT_CAPATH, sp->ca_path);
  if (sp->client_cert) curl_easy_setopt(h, CURLOPT_SSLCERT, sp->client_cert);
  if (sp->client_key) curl_easy_setopt(h, CURLOPT_SSLKEY, sp->client_key);
  if (sp->insecure) {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (sp->proxy) curl_easy_setopt(h, CURLOPT_PROXY, sp->proxy);
  if (sp->no_proxy) curl_easy_setopt(h, CURLOPT_NOPROXY, sp->no_proxy);
  if (sp->http_version) curl_easy_setopt(h, CURLOPT_HTTP_VERSION, sp->http_version);
}

static void free_request(kp_request *r) {
  free(r->headers); /* one block: see read_headers */
  r->headers = NULL;
  free(r->body);
  r->body = NULL;
  kp_buf_free(&r->response);
  clear_headers(r);
}

/* engine:submit{url=, method=, headers={...}, body=|json=, timeout=ms, ...}
 * -> request. The transfer starts at once (connect, send); its end is
 * reported by engine:perform(). A submit that raises leaves the engine as
 * it was: every check comes before the engine is touched, and the steps
 * after it undo themselves on failure. */
int kp_request_new(lua_State *L) {
  kp_engine *e = kp_check_engine(L, 1);
  kp_request *r;
  kp_spec sp;
  int mc, req;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);

  r = (kp_request *)kp_newuserdata(L, sizeof *r);
  req = lua_gettop(L);
  memset(r, 0, sizeof *r);
  r->state = KP_CLOSED;
  lua_createtable(L, 4, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, SLOT_ENGINE);
  kp_setuservalue(L, req);
  luaL_getmetatable(L, KP_REQUEST_MT);
  lua_setmetatable(L, req); /* from here __gc frees what r holds */

  read_spec(L, 2, r, &sp);  /* may raise: the engine is untouched */
  read_rows_ids(L, 2, req, r); /* likewise */
  kp_engine_track(L, 1, req, r); /* may raise (memory): map unchanged */
  r->easy = kp_engine_take_easy(e);
  if (!r->easy) {
    kp_engine_forget(L, 1, r);
    return luaL_error(L, "curl_easy_init failed");
  }
  configure(e, r, &sp);
  mc = kp_engine_add(e, r);
  if (mc != CURLM_OK) {
    kp_engine_give_easy(e, r->easy);
    r->easy = NULL;
    kp_engine_forget(L, 1, r);
    return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror((CURLMcode)mc));
  }
  lua_settop(L, req);
  return 1;
}

/* Called by the engine for a transfer curl reports done (already off the
 * in-flight list): keeps the figures, returns the handle to the pool. */
void kp_request_finish(kp_request *r, CURLcode code) {
  kp_engine *e = r->engine;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->http_status);
  curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &r->request_size);
  curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &r->total_time);
  curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME, &r->connect_time);
  r->curl_code = code;
  if (code == CURLE_ABORTED_BY_CALLBACK && r->sends > 1) {
    /* a resend refused (on_prereq): reported as curl reports the one it
     * cannot make without rewinding a body */
    r->curl_code = CURLE_SEND_FAIL_REWIND;
    strcpy(r->errbuf, "necessary data rewind wasn't possible");
  }
  curl_multi_remove_handle(e->multi, r->easy);
  kp_engine_give_easy(e, r->easy);
  r->easy = NULL;
  free(r->headers);
  r->headers = NULL;
  free(r->body);
  r->body = NULL;
  r->state = KP_DONE;
}

/* Takes a request out of its engine (cancel, engine close, or collection
 * at state close): a transfer in flight is stopped and becomes a
 * 'cancelled' error; a finished one just leaves the finished list. */
void kp_request_detach(kp_request *r) {
  kp_engine *e = r->engine;
  if (!e) return;
  kp_engine_unlist(e, r);
  r->engine = NULL;
  if (r->state != KP_PENDING) return;
  if (r->easy) {
    curl_multi_remove_handle(e->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
  }
  r->state = KP_DONE;
  r->curl_code = CURLE_ABORTED_BY_CALLBACK;
  strcpy(r->errbuf, "request cancelled");
}

/* req:done() -> true once the transfer has ended (in any way). */
static int request_done(lua_State *L) {
  kp_request *r = check_request(L, 1);
  lua_pushboolean(L, r->state != KP_PENDING);
  return 1;
}

static void set_num(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void build_error(lua_State *L, kp_request *r) {
  const char *kind = r->too_large ? "protocol" : kp_curl_kind(r->curl_code);
  lua_createtable(L, 0, 8);
  set_str(L, "kind", kind);
  if (r->too_large)
    lua_pushfstring(L, "response larger than %d bytes", (int)r->max_response);
  else
    lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->curl_code));
  lua_setfield(L, -2, "message");
  set_int(L, "curl_code", (long)r->curl_code);
  if (r->http_status > 0) set_int(L, "http_status", r->http_status);
  /* sent=false proves the server never saw the request: safe to retry */
  lua_pushboolean(L, r->request_size > 0);
  lua_setfield(L, -2, "sent");
  set_str(L, "request_id", r->request_id);
  set_num(L, "time", r->total_time);
}

/* A 2xx reply to a spec with `rows` (or `job_rows`), decoded with the
 * sync-command rows decoder at `cmd_decoder` (the task query's at
 * `job_decoder`): 1 with res.body (and res.rows, res.job_changes,
 * res.job_count, res.job_fresh when rows were built) set, or 0 when the
 * fast path gave up. The response is on top. */
static int decode_with_rows(lua_State *L, kp_request *r, int cmd_decoder, int job_decoder) {
  int res = lua_gettop(L), ok;
  kp_getuservalue(L, 1);
  lua_rawgeti(L, -1, SLOT_ROWS);
  if (r->rows == KP_ROWS_TASK) {
    ok = kp_job_rows_decode(L, job_decoder, -1, r->response.data, r->response.len);
    if (ok) {
      lua_setfield(L, res, "job_fresh");
      lua_setfield(L, res, "job_count");
      lua_setfield(L, res, "job_changes");
    }
  } else {
    ok = kp_cmd_rows_decode(L, cmd_decoder, -1, r->response.data, r->response.len);
  }
  if (ok) {
    if (!lua_isnil(L, -1)) lua_setfield(L, res, "rows");
    else lua_pop(L, 1);
    lua_setfield(L, res, "body");
  }
  lua_settop(L, res);
  return ok;
}

static void build_response(lua_State *L, kp_request *r, int cmd_decoder, int job_decoder) {
  lua_createtable(L, 0, 11);
  set_int(L, "status", r->http_status);
  set_str(L, "request_id", r->request_id);
  set_str(L, "retry_after", r->retry_after);
  set_str(L, "subject_token", r->subject_token);
  set_str(L, "content_type", r->content_type);
  set_str(L, "date", r->date);
  set_num(L, "time", r->total_time);
  set_num(L, "connect_time", r->connect_time);
  if (r->response.len == 0) return;
  if (r->decode) {
    if (r->rows && r->http_status >= 200 && r->http_status < 300 && decode_with_rows(L, r, cmd_decoder, job_decoder))
      return;
    if (kp_json_decode_fast(L, r->response.data, r->response.len)) {
      lua_setfield(L, -2, "body");
      return;
    }
    kp_getuservalue(L, 1);
    lua_rawgeti(L, -1, SLOT_ENGINE);
    kp_engine_push_json(L, lua_gettop(L));
    if (kp_json_decode(L, lua_gettop(L), r->response.data, r->response.len)) {
      lua_setfield(L, -5, "body");
      lua_pop(L, 3);
      return;
    }
    lua_setfield(L, -5, "decode_error");
    lua_pop(L, 3);
  }
  lua_pushlstring(L, r->response.data, r->response.len);
  lua_setfield(L, -2, "raw");
}

/* A finished request's response | nil, err (kept for the next read with
 * `keep`, else handed over: see take()).
 * response: {status, body (decoded JSON), raw (when not JSON),
 *            decode_error, request_id, retry_after, subject_token, time,
 *            rows (spec.rows: when data.cmd_results became rows, which
 *            body.data.cmd_results then is too)}
 * Upvalues 1, 2: the sync-command and the task query rows decoders
 * (src/cmd_rows.c, src/job_rows.c). 
 * err: {kind, message, curl_code, sent, http_status?, request_id?} */
static int read_response(lua_State *L, int keep) {
  kp_request *r = check_request(L, 1);
  int uv, failed;
  if (r->state == KP_PENDING) return luaL_error(L, "request still in flight");
  if (r->taken) return luaL_error(L, "the response was taken (req:take())");
  kp_getuservalue(L, 1);
  uv = lua_gettop(L);
  lua_rawgeti(L, uv, SLOT_RESULT);
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  lua_rawgeti(L, uv, SLOT_ERROR);
  if (!lua_isnil(L, -1)) { lua_pushnil(L); lua_insert(L, -2); return 2; }
  lua_pop(L, 1);
  failed = r->curl_code != CURLE_OK || r->too_large;
  if (failed) {
    build_error(L, r);
  } else {
    build_response(L, r, lua_upvalueindex(1), lua_upvalueindex(2));
    clear_headers(r);
  }
  lua_rawgeti(L, uv, SLOT_ENGINE); /* the reply is read: its buffer goes back */
  kp_engine_keep_buf((kp_engine *)lua_touserdata(L, -1), &r->response);
  lua_pop(L, 1);
  if (keep) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, uv, failed ? SLOT_ERROR : SLOT_RESULT);
  } else { /* nothing of the reply stays reachable from r */
    r->taken = 1;
    lua_pushnil(L);
    lua_rawseti(L, uv, SLOT_ROWS);
  }
  if (!failed) return 1;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* req:response() -> response | nil, err: built once, then cached (the
 * request keeps it while the request lives). */
static int request_response(lua_State *L) { return read_response(L, 1); }

/* req:take() -> response | nil, err: as response(), but the request
 * keeps nothing of it, and a second read is an error. For a caller that
 * reads once and drops the request: a request has a finalizer, so a dead
 * one is kept for one more collection, and a cached reply (its rows, its
 * body) with it — in a generational collector, often promoted to the old
 * generation, which only a major collection frees. */
static int request_take(lua_State *L) { return read_response(L, 0); }

/* req:cancel(): stops a transfer in flight; its response becomes a
 * 'cancelled' error. No effect on a finished request. */
static int request_cancel(lua_State *L) {
  kp_request *r = check_request(L, 1);
  if (r->state == KP_PENDING && r->engine) {
    kp_getuservalue(L, 1);
    lua_rawgeti(L, -1, SLOT_ENGINE);
    kp_engine_forget(L, lua_gettop(L), r);
    kp_request_detach(r);
  }
  return 0;
}

static int request_gc(lua_State *L) {
  kp_request *r = check_request(L, 1);
  kp_request_detach(r);
  if (r->easy) { /* submit raised between taking a handle and adding it */
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
  }
  free_request(r);
  r->state = KP_CLOSED;
  return 0;
}

static int request_tostring(lua_State *L) {
  kp_request *r = check_request(L, 1);
  lua_pushfstring(L, "koophone.request (%s)",
                  r->state == KP_PENDING ? "in flight" : "done");
  return 1;
}

int kp_request_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"done", request_done},
    {"cancel", request_cancel},
    {NULL, NULL}
  };
  kp_new_type(L, KP_REQUEST_MT, methods, request_gc, request_tostring);
  /* response() and take() share the row decoders (upvalues) */
  luaL_getmetatable(L, KP_REQUEST_MT);
  lua_getfield(L, -1, "__index");
  kp_cmd_rows_push_decoder(L);
  kp_job_rows_push_decoder(L);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, request_response, 2);
  lua_setfield(L, -4, "response");
  lua_pushcclosure(L, request_take, 2);
  lua_setfield(L, -2, "take");
  lua_pop(L, 2);
  return 0;
}
