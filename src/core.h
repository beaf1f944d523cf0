/* core.h: the types the C files of koophone.core share. */
#ifndef KOOPHONE_CORE_H
#define KOOPHONE_CORE_H

#include <stddef.h>
#include "compat.h"

#define KP_ENGINE_MT "koophone.engine"
#define KP_REQUEST_MT "koophone.request"

/* A growable byte buffer. */
typedef struct kp_buf {
  char *data;
  size_t len, cap;
} kp_buf;

int kp_buf_append(kp_buf *b, const char *p, size_t n);
void kp_buf_free(kp_buf *b);

typedef struct kp_engine kp_engine;

enum kp_state { KP_PENDING = 0, KP_DONE = 1, KP_CLOSED = 2 };

/* A request, from submit to the moment Lua reads its response. The easy
 * handle goes back to the engine's pool as soon as the transfer ends. */
typedef struct kp_request {
  kp_engine *engine;               /* NULL once detached */
  struct kp_request *prev, *next;  /* the engine's in-flight list */
  CURL *easy;                      /* NULL when not in flight */
  struct curl_slist *headers;
  char *body;                      /* request body (owned copy) */
  size_t body_len, body_sent;
  kp_buf response;                 /* response body */
  size_t max_response;
  char *request_id, *retry_after, *subject_token, *content_type;
  char *date;                      /* the server's Date header (clock skew) */
  int state;
  int decode;                      /* decode the body as JSON */
  CURLcode curl_code;
  long http_status;
  long request_size;               /* bytes of the request sent on the wire */
  double total_time, connect_time;
  int too_large;
  char errbuf[CURL_ERROR_SIZE];
} kp_request;

struct kp_engine {
  CURLM *multi;
  CURLSH *share;
  kp_request *inflight;            /* doubly linked list */
  int n_inflight;
  lua_Integer completed;           /* transfers finished, ever */
  CURL **pool;                     /* reset easy handles ready for reuse */
  int pool_len, pool_cap;
  unsigned long long rng[2];        /* request-id source, see engine.c */
  int closed;
};

/* engine.c */
kp_engine *kp_check_engine(lua_State *L, int idx);
CURL *kp_engine_take_easy(kp_engine *e);
void kp_engine_give_easy(kp_engine *e, CURL *easy);
int kp_engine_open(lua_State *L);

/* request.c */
int kp_request_new(lua_State *L);        /* engine:submit(spec) */
void kp_request_finish(kp_request *r, CURLcode code);
void kp_request_detach(kp_request *r);
int kp_request_open(lua_State *L);

/* json.c: a private lua-cjson instance kept in a table at `slot` */
void kp_json_new(lua_State *L);          /* pushes a private cjson instance */
int kp_json_decode(lua_State *L, int cjson_idx, const char *s, size_t n);
int kp_json_encode(lua_State *L, int cjson_idx, int value_idx);

/* ids.c */
int kp_ids_open(lua_State *L);

/* files.c */
int kp_files_open(lua_State *L);
/* sign.c */
int kp_sign_open(lua_State *L);          /* sets "sign" */

/* errors.c */
const char *kp_curl_kind(CURLcode code);

#endif
