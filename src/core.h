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

/* poller.c: the interest set. One watch per socket curl asked us to
 * watch, kept in a list (engine:fds() walks it) and, on Linux, an epoll
 * set (engine:fd()). */
typedef struct kp_watch {
  curl_socket_t fd;
  int what;                        /* CURL_POLL_IN, _OUT or _INOUT */
  struct kp_watch *prev, *next;
} kp_watch;

typedef struct kp_poller {
  int epfd;                        /* the epoll set; -1 with poll() */
  int wake_r, wake_w;              /* eventfd (both the same) or a pipe */
  kp_watch *watches;
  int n_watches;
  void *buf;                       /* scratch: epoll_event[] or pollfd[] */
  int cap;                         /* entries in buf */
} kp_poller;

typedef void (*kp_ready_fn)(void *ud, curl_socket_t s, int curl_bits);

int kp_poller_init(kp_poller *p);
void kp_poller_close(kp_poller *p);
int kp_poller_update(kp_poller *p, CURLM *multi, curl_socket_t s, int what, kp_watch *w);
int kp_poller_scan(kp_poller *p, kp_ready_fn fn, void *ud);
int kp_poller_sleep(kp_poller *p, int timeout_ms);
void kp_poller_wake(kp_poller *p);
int kp_poller_fd(const kp_poller *p);

/* options.c: numeric options, range-checked on the double before any
 * conversion (so a cast is never undefined behaviour) */
long kp_opt_range(lua_State *L, int t, const char *k, long dflt, long max,
                  const char *what, const char *unit);

enum kp_state { KP_PENDING = 0, KP_DONE = 1, KP_CLOSED = 2 };

/* A request, from submit to the moment Lua reads its response. The easy
 * handle goes back to the engine's pool as soon as the transfer ends. */
typedef struct kp_request {
  kp_engine *engine;               /* set while the engine lists it */
  struct kp_request *prev, *next;  /* the engine's in-flight list while
                                      KP_PENDING, its finished list once
                                      KP_DONE (until perform() reports it) */
  CURL *easy;                      /* NULL when not in flight */
  struct curl_slist *headers;
  char *body;                      /* request body (owned copy) */
  size_t body_len, body_sent;
  int sends;                       /* times curl was about to send it */
  kp_buf response;                 /* response body */
  size_t max_response;
  char *request_id, *retry_after, *subject_token, *content_type;
  char *date;                      /* the server's Date header (clock skew) */
  int state;
  int decode;                      /* decode the body as JSON */
  int rows;                        /* KP_ROWS_SYNC: a sync-command reply,
                                      rows for the ids in the user value
                                      (cmd_rows.c); KP_ROWS_TASK: a task
                                      query's (job_rows.c) */
  CURLcode curl_code;
  long http_status;
  long request_size;               /* bytes of the request sent on the wire */
  double total_time, connect_time;
  int too_large;
  int taken;                       /* take() handed the response over */
  char errbuf[CURL_ERROR_SIZE];
} kp_request;

/* Response buffers the engine keeps for the next replies: a reply of a
 * few KB would otherwise be a malloc of glibc's "large" class each time,
 * and each such malloc consolidates the small chunks Lua just freed. */
#define KP_SPARES 32
#define KP_SPARE_MAX (64u * 1024u)   /* larger buffers are freed */

struct kp_engine {
  CURLM *multi;
  CURLSH *share;
  kp_request *inflight;            /* doubly linked list */
  int n_inflight;
  kp_request *done_head, *done_tail; /* finished, not yet reported */
  long long timer_due;             /* monotonic us of curl's timer; -1 none */
  kp_poller poller;
  CURL **pool;                     /* reset easy handles ready for reuse */
  int pool_len, pool_cap;
  unsigned long long rng[2];        /* request-id source, see engine.c */
  int spin_credit;                 /* > 0: wait() polls before it sleeps */
  kp_buf spare[KP_SPARES];         /* emptied response buffers */
  int n_spare;
  int closed;
};

/* core.c: a userdata type's metatable (methods as __index, __gc, __tostring) */
void kp_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                 lua_CFunction tostring);

/* engine.c */
kp_engine *kp_check_engine(lua_State *L, int idx);
CURL *kp_engine_take_easy(kp_engine *e);
void kp_engine_give_easy(kp_engine *e, CURL *easy);
void kp_engine_lend_buf(kp_engine *e, kp_buf *b);
void kp_engine_keep_buf(kp_engine *e, kp_buf *b);
void kp_engine_track(lua_State *L, int engine_idx, int req_idx, kp_request *r);
int kp_engine_add(kp_engine *e, kp_request *r);
void kp_engine_forget(lua_State *L, int engine_idx, kp_request *r);
void kp_engine_unlist(kp_engine *e, kp_request *r);
void kp_engine_push_json(lua_State *L, int idx);
int kp_engine_open(lua_State *L);

/* request.c */
int kp_request_new(lua_State *L);        /* engine:submit(spec) */
void kp_request_finish(kp_request *r, CURLcode code);
void kp_request_detach(kp_request *r);
int kp_request_open(lua_State *L);

/* json.c: a private lua-cjson instance kept in a table at `slot` */
void kp_json_new(lua_State *L);          /* pushes a private cjson instance */
int kp_json_decode(lua_State *L, int cjson_idx, const char *s, size_t n);
/* the fast path alone: 1 and the value pushed, or 0 and nothing pushed */
int kp_json_decode_fast(lua_State *L, const char *s, size_t n);
int kp_json_open(lua_State *L);           /* sets "json_decode" */
int kp_json_encode(lua_State *L, int cjson_idx, int value_idx);

/* cmd_rows.c: a sync-command reply's rows, straight from its bytes */
void kp_cmd_rows_push_decoder(lua_State *L); /* pushes the decoder */
/* s decoded with the decoder at `decoder` for the ids at `ids`: 1 with the
 * body and its rows (or nil) pushed, or 0 and nothing pushed when the fast
 * path gives up (then decode s as any reply). */
int kp_cmd_rows_decode(lua_State *L, int decoder, int ids, const char *s, size_t n);
int kp_cmd_rows_open(lua_State *L);      /* sets "sync_reply" */

/* job_rows.c: a task query's rows for the jobs that ended, from its bytes */
enum { KP_ROWS_SYNC = 1, KP_ROWS_TASK = 2 };
void kp_job_rows_push_decoder(lua_State *L); /* pushes the decoder */
/* s decoded with the decoder at `decoder` for the task tables at `follow`
 * ({jobs, job_of, not_started, id_field, later, root, seen}): 1 with the
 * body, its rows (or nil), the changes of "not run yet" flags (or nil),
 * the list's item count and how many job ids were new to `seen` pushed,
 * or 0 and nothing pushed when the fast path gives up. */
int kp_job_rows_decode(lua_State *L, int decoder, int follow, const char *s, size_t n);
int kp_job_rows_open(lua_State *L);      /* sets "task_reply" */

/* encode.c: a request's json, encoded straight into a buffer when plain */
/* 1 with the JSON in *out (to free), or 0 (nothing to free): then cjson's */
int kp_json_encode_fast(lua_State *L, int idx, kp_buf *out);
int kp_encode_open(lua_State *L);         /* sets "json_encode" */

/* ids.c */
int kp_ids_open(lua_State *L);

/* rows.c */
int kp_rows_open(lua_State *L);          /* sets "item_rows", "row" */

/* files.c */
int kp_files_open(lua_State *L);
/* sign.c */
int kp_sign_open(lua_State *L);          /* sets "sign" */

/* errors.c */
const char *kp_curl_kind(CURLcode code);

/* waker.c: core.waker(), a thread that rings a unix socket (Linux) */
int kp_waker_open(lua_State *L);

#endif
