/* cmd_rows.c: the rows of a sync-command reply, built straight from its
 * bytes. The reply is decoded by the JSON fast path (src/json.c) with a
 * hook on data.cmd_results: when those items are plain, the hook reads
 * them into result rows and never makes the item tables (garbage the
 * moment the rows exist: a W1 reply is 32 of them). "Plain" is what
 * core.item_rows (src/rows.c) takes: one object per id asked for, in the
 * order of the ids, instance_id equal to that id, status 2 or -1, the text
 * fields (execute_msg, error_code, error_msg, job_id) strings, null or
 * absent; other keys are decoded and dropped. Anything else — or anything
 * the fast path itself would not take — leaves data.cmd_results to the
 * ordinary decoder, and the caller builds the rows as before
 * (core.item_rows, else rows.from_results): the rows are always those
 * koophone.rows.from_item builds (bench/rows_check.lua checks it). */
#include <string.h>
#include "fast.h"

/* Upvalues of the decoder: keys and values of a row, and of the reply. */
enum {
  U_ID = 1, U_INSTANCE_ID, U_STATUS, U_VENDOR_STATUS, U_OUTPUT, U_CODE, U_MESSAGE, U_JOB_ID,
  U_OK, U_FAILED, U_COUNT = U_FAILED
};

static const char *const UPVALUES[U_COUNT] = {
  "id", "instance_id", "status", "vendor_status", "output", "code", "message", "job_id",
  "ok", "failed"
};

#define PUSH_UP(L, u) lua_pushvalue((L), lua_upvalueindex(u))

/* Fields set only once the transport's call has ended (request_id,
 * attempts, elapsed: rows.finish). A row is sized for them from the start. */
#define ROW_LATER 3

/* An item's fields, by what the row makes of them: the text ones first,
 * in the order of their row keys (TEXT_KEY). */
enum { F_OUTPUT, F_CODE, F_MESSAGE, F_JOB_ID, F_TEXTS, F_STATUS = F_TEXTS, F_ID, F_OTHER };

static const int TEXT_KEY[F_TEXTS] = { U_OUTPUT, U_CODE, U_MESSAGE, U_JOB_ID };

/* What the hook needs, by stack index. */
typedef struct results {
  int ids;                         /* the ids asked for */
  int n;                           /* how many */
  int rows;                        /* the last rows built (nil: none) */
} results;

/* One item as read: what its row needs. */
typedef struct item {
  int status;                      /* 2, -1, or 0 when not seen */
  int id_seen;                     /* instance_id seen, equal to the id */
  int have[F_TEXTS];               /* the text is in its stack slot */
} item;

/* The key at p (a '"'): which field of an item it names, p past it; or -1
 * when it is not a plain string (escapes are left to the ordinary path).
 * The usual keys are matched in place, without a scan first. */
static int item_key(kp_fast *f) {
  const char *p = f->p + 1, *k;
  size_t n;
  if (p < f->end) {
    switch (*p) {
      case 'i': if (kp_fast_key(f, p, "instance_id\"", 12)) return F_ID; break;
      case 's': if (kp_fast_key(f, p, "status\"", 7)) return F_STATUS; break;
      case 'j': if (kp_fast_key(f, p, "job_id\"", 7)) return F_JOB_ID; break;
      case 'e':
        if (kp_fast_key(f, p, "execute_msg\"", 12)) return F_OUTPUT;
        if (kp_fast_key(f, p, "error_code\"", 11)) return F_CODE;
        if (kp_fast_key(f, p, "error_msg\"", 10)) return F_MESSAGE;
        break;
      default: break;
    }
  }
  return kp_fast_plain(f, &k, &n) ? F_OTHER : -1;
}

/* A status of exactly 2 or -1 (what a plain item holds): the value, and p
 * past it; 0 for anything else. */
static int status_value(kp_fast *f) {
  const char *p = f->p;
  size_t left = (size_t)(f->end - p), len;
  int v;
  char next;
  if (left >= 1 && p[0] == '2') { v = 2; len = 1; }
  else if (left >= 2 && p[0] == '-' && p[1] == '1') { v = -1; len = 2; }
  else return 0;
  next = len < left ? p[len] : ' ';
  if ((next >= '0' && next <= '9') || next == '.' || next == 'e' || next == 'E') return 0;
  f->p += len;
  return v;
}

/* The item's instance_id: 1 when it is the id asked for, byte for byte,
 * and p past it (an id with escapes is left to the ordinary path). */
static int id_value(kp_fast *f, const char *id, size_t id_len) {
  const char *p = f->p + 1;
  size_t i;
  if (f->p >= f->end || *f->p != '"' || (size_t)(f->end - p) <= id_len) return 0;
  for (i = 0; i < id_len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c != (unsigned char)id[i] || c == '"' || c == '\\' || c < 0x20) return 0;
  }
  if (p[id_len] != '"') return 0;
  f->p = p + id_len + 1;
  return 1;
}

/* The value of one key of an item, into `it`: 1, or 0 when not plain.
 * Duplicate keys: the last wins, as with cjson. */
static int item_value(kp_fast *f, int field, const char *id, size_t id_len, int texts, item *it) {
  int got;
  switch (field) {
    case F_ID:
      it->id_seen = id_value(f, id, id_len);
      return it->id_seen;
    case F_STATUS:
      it->status = status_value(f);
      return it->status != 0;
    case F_OTHER:
      return kp_fast_skip(f);
    default:
      if ((got = kp_fast_text(f, texts + field)) < 0) return 0;
      it->have[field] = got;
      return 1;
  }
}

/* One object of the results read into `it` (texts into the slots from
 * stack index `texts`): 1, or 0 when it is not a plain item for `id`. The
 * grammar is fast_object's, keys without escapes. */
static int read_item(kp_fast *f, const char *id, size_t id_len, int texts, item *it) {
  int more;
  memset(it, 0, sizeof *it);
  if (f->p >= f->end || *f->p != '{') return 0;
  f->p++;
  kp_fast_ws(f);
  for (;;) {
    int field;
    if (f->p >= f->end || *f->p != '"' || (field = item_key(f)) < 0) return 0;
    kp_fast_ws(f);
    if (f->p >= f->end || *f->p != ':') return 0;
    f->p++;
    kp_fast_ws(f);
    if (!item_value(f, field, id, id_len, texts, it)) return 0;
    if ((more = kp_fast_next(f, '}')) <= 0) break;
  }
  if (more < 0) return 0;
  return it->id_seen && it->status != 0;
}

/* row[key] = the value at stack index `value`. */
static void set_field(lua_State *L, int row, int key, int value) {
  PUSH_UP(L, key);
  lua_pushvalue(L, value);
  lua_rawset(L, row);
}

/* Pushes the row of a plain item for the id at stack index `id`: the one
 * rows.from_item builds, sized for its fields and the ROW_LATER ones. */
static void push_row(lua_State *L, int id, int texts, const item *it) {
  int fields = 4 + ROW_LATER, row, j;
  for (j = 0; j < F_TEXTS; j++) fields += it->have[j];
  lua_createtable(L, 0, fields);
  row = lua_gettop(L);
  set_field(L, row, U_ID, id);
  set_field(L, row, U_INSTANCE_ID, id);
  PUSH_UP(L, U_STATUS);
  PUSH_UP(L, it->status == 2 ? U_OK : U_FAILED);
  lua_rawset(L, row);
  PUSH_UP(L, U_VENDOR_STATUS);
  lua_pushinteger(L, it->status);
  lua_rawset(L, row);
  for (j = 0; j < F_TEXTS; j++)
    if (it->have[j]) set_field(L, row, TEXT_KEY[j], texts + j);
}

/* The results list at p as rows, one per id: 1 and the list pushed, or 0
 * (the stack has grown: the hook resets it). */
static int read_rows(kp_fast *f, void *data, int texts) {
  const results *c = (const results *)data;
  lua_State *L = f->L;
  int i, list;
  if (f->p >= f->end || *f->p != '[') return 0;
  f->p++;
  lua_createtable(L, c->n, 2); /* the client sets its request_id, attempts */
  list = lua_gettop(L);
  for (i = 1; i <= c->n; i++) {
    item it;
    const char *id;
    size_t id_len;
    kp_fast_ws(f);
    lua_rawgeti(L, c->ids, i); /* list + 1 */
    if (lua_type(L, list + 1) != LUA_TSTRING) return 0;
    id = lua_tolstring(L, list + 1, &id_len);
    if (!read_item(f, id, id_len, texts, &it)) return 0;
    push_row(L, list + 1, texts, &it);
    lua_rawseti(L, list, i);
    lua_pop(L, 1);
    kp_fast_ws(f);
    if (f->p >= f->end || *f->p != (i < c->n ? ',' : ']')) return 0;
    f->p++;
  }
  return 1;
}

static const char *const PATH[] = { "data", "cmd_results" };

/* The hook on data.cmd_results: its items as rows when all are plain (the
 * list is also remembered as the last rows built), else 0 with nothing
 * read. Slots for an item's texts. */
static int rows_hook(kp_fast *f) {
  const results *c = (const results *)f->hook_data;
  return kp_fast_hook_list(f, F_TEXTS, c->rows, read_rows, f->hook_data);
}

/* Under lua_pcall: (span, ids) -> body, rows | body, nil; nothing when the
 * fast path gives up. */
static int decode_reply(lua_State *L) {
  const kp_span *in = (const kp_span *)lua_touserdata(L, 1);
  results c;
  kp_fast f;
  lua_settop(L, 2);
  lua_pushnil(L);
  c.ids = 2;
  c.n = (int)kp_rawlen(L, 2);
  c.rows = 3;
  if (!kp_fast_begin(&f, L, in->s, in->n)) return 0;
  if (c.n > 0) {
    f.hook = rows_hook;
    f.hook_path = PATH;
    f.hook_keys = 2;
    f.hook_data = &c;
  }
  if (!kp_fast_document(&f)) return 0;
  /* the rows are the reply's unless a later duplicate key replaced them */
  if (kp_fast_is_at(L, lua_gettop(L), c.rows, PATH, 2)) lua_pushvalue(L, c.rows);
  else lua_pushnil(L);
  return 2;
}

int kp_cmd_rows_decode(lua_State *L, int decoder, int ids, const char *s, size_t n) {
  return kp_fast_run(L, decoder, ids, s, n, 2);
}

/* core.sync_reply(s, ids) -> body, rows | body | nil
 * s decoded as the engine decodes a sync-command reply for ids (the fast
 * path only: nil when it gives up): rows when data.cmd_results became
 * rows (then body.data.cmd_results is that list too), to be completed by
 * koophone.rows.finish. For checking the path against the reference one
 * (bench/rows_check.lua). */
static int core_sync_reply(lua_State *L) { return kp_fast_reply(L, 2); }

void kp_cmd_rows_push_decoder(lua_State *L) {
  kp_fast_push_reader(L, decode_reply, UPVALUES, U_COUNT);
}

int kp_cmd_rows_open(lua_State *L) {
  kp_cmd_rows_push_decoder(L);
  lua_pushcclosure(L, core_sync_reply, 1);
  lua_setfield(L, -2, "sync_reply");
  return 0;
}
