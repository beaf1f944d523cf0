/* job_rows.c: the rows of a task query's reply (GET /v1/instances/tasks/
 * {id}: data.jobs; a CPH ListJobs page: jobs), built straight from its
 * bytes. A task is queried every few seconds until its jobs end, and each
 * reply lists every job again: as item tables, a 100-job task left ~30 KB
 * of garbage per query, most of a fleet-sized batch's allocations. With a
 * hook on the jobs list, the reply's items are read in place and only the
 * jobs that ended since the last query (their id still in the task's
 * job_of) become rows — the rows koophone.rows.from_item builds, sized
 * for the `later` fields the task sets (elapsed, polls, request_id,
 * task_id: Task:_apply_rows). Running jobs
 * leave nothing, except a change of their "not run yet" flag (status 0);
 * while no job of the task waits to start, a running job's id is not even
 * made a Lua string.
 * "Plain" items are objects whose keys have no escapes, whose job_id is a
 * string, status one of -1, 0, 1, 2, 3, and execute_msg, error_code,
 * error_msg strings or null; other keys are decoded and dropped; an item
 * without a job_id, or with one the task does not follow, is skipped, as
 * Task:_apply skips it. Anything else leaves data.jobs to the ordinary
 * decoder and the task applies the items as before (bench/task_replies.lua
 * compares both on generated replies, in spec/task_rows_spec.lua). */
#include <string.h>
#include "fast.h"

/* Upvalues of the decoder: keys and values of a row, and of the reply. */
enum {
  U_ID = 1, U_STATUS, U_VENDOR_STATUS, U_OUTPUT, U_CODE, U_MESSAGE, U_JOB_ID,
  U_OK, U_FAILED, U_COUNT = U_FAILED
};

static const char *const UPVALUES[U_COUNT] = {
  "id", "status", "vendor_status", "output", "code", "message", "job_id",
  "ok", "failed"
};

#define PUSH_UP(L, u) lua_pushvalue((L), lua_upvalueindex(u))

/* An item's fields, by what the row makes of them: the text ones first,
 * in the order of their row keys (TEXT_KEY), then the job id's slot. */
enum { F_OUTPUT, F_CODE, F_MESSAGE, F_TEXTS, F_JOB_ID = F_TEXTS, F_SLOTS, F_STATUS = F_SLOTS, F_OTHER };

static const int TEXT_KEY[F_TEXTS] = { U_OUTPUT, U_CODE, U_MESSAGE };

/* The task's tables and what the hook built, by stack index. */
typedef struct follow {
  int jobs;                        /* job_id -> id */
  int job_of;                      /* id -> job_id, while the job runs */
  int not_started;                 /* id -> true, while the job is at 0 */
  int id_field;                    /* "instance_id" or "phone_id" */
  int seen;                        /* job ids of earlier pages (or nil) */
  int page_seen;                   /* ... and of this list so far: added to
                                      seen once its rows are the reply's */
  int rows;                        /* the last rows built (nil: none) */
  int changes;                     /* id -> status is 0, or nil */
  int later;                       /* fields the task sets on a row once the
                                      query has ended (task_id, request_id,
                                      elapsed, polls): sized for from the start */
  lua_Integer count, fresh;        /* items of the list; job ids new to seen */
  int quiet;                       /* no job is at 0 and no listing: a running
                                      job (1) changes nothing (see apply_item) */
} follow;

/* One item as read. */
typedef struct item {
  int status;                      /* -1..3, or 9 when not seen */
  int have[F_SLOTS];               /* the text (or job id) is in its slot */
  const char *job_id;              /* a plain job id not pushed yet (its
                                      slot is filled when the item needs it) */
  size_t job_id_len;
} item;

#define NO_STATUS 9

/* The key at p (a '"'): which field of an item it names, p past it; or -1
 * when it is not a plain string (escapes are left to the ordinary path). */
static int item_key(kp_fast *f) {
  const char *p = f->p + 1, *k;
  size_t n;
  if (p < f->end) {
    switch (*p) {
      case 'j': if (kp_fast_key(f, p, "job_id\"", 7)) return F_JOB_ID; break;
      case 's': if (kp_fast_key(f, p, "status\"", 7)) return F_STATUS; break;
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

/* A status of exactly -1, 0, 1, 2 or 3: the value, and p past it; or
 * NO_STATUS for anything else (a string, 2.0, null: the ordinary path). */
static int status_value(kp_fast *f) {
  const char *p = f->p;
  size_t left = (size_t)(f->end - p), len = 1;
  int v;
  char next;
  if (left >= 2 && p[0] == '-' && p[1] == '1') { v = -1; len = 2; }
  else if (left >= 1 && p[0] >= '0' && p[0] <= '3') v = p[0] - '0';
  else return NO_STATUS;
  next = len < left ? p[len] : ' ';
  if ((next >= '0' && next <= '9') || next == '.' || next == 'e' || next == 'E') return NO_STATUS;
  f->p += len;
  return v;
}

/* The value of one key of an item, into `it`: 1, or 0 when not plain.
 * Duplicate keys: the last wins, as with cjson. */
static int item_value(kp_fast *f, int field, int slots, item *it) {
  int got;
  if (field == F_STATUS) {
    it->status = status_value(f);
    return it->status != NO_STATUS;
  }
  if (field == F_OTHER) return kp_fast_skip(f);
  if (field == F_JOB_ID) {
    /* read in place: most items are running jobs that need no Lua string
     * (interning a 32-byte id per item per query was a tenth of an
     * OpenResty worker's CPU in a 1,000-instance batch) */
    const char *s;
    size_t n;
    it->job_id = NULL;
    if (f->p < f->end && *f->p == '"' && kp_fast_plain(f, &s, &n)) {
      it->have[F_JOB_ID] = n > 0; /* "" is no job id, as below */
      if (n > 0) { it->job_id = s; it->job_id_len = n; }
      return 1;
    }
  }
  if ((got = kp_fast_text(f, slots + field)) < 0) return 0;
  it->have[field] = got;
  return 1;
}

/* One object of the list read into `it` (texts and job id into the slots
 * from stack index `slots`): 1, or 0 when it is not a plain item. */
static int read_item(kp_fast *f, int slots, item *it) {
  int more;
  memset(it, 0, sizeof *it);
  it->status = NO_STATUS;
  if (f->p >= f->end || *f->p != '{') return 0;
  f->p++;
  kp_fast_ws(f);
  if (f->p < f->end && *f->p == '}') { f->p++; return 0; } /* {} : the ordinary path */
  for (;;) {
    int field;
    if (f->p >= f->end || *f->p != '"' || (field = item_key(f)) < 0) return 0;
    kp_fast_ws(f);
    if (f->p >= f->end || *f->p != ':') return 0;
    f->p++;
    kp_fast_ws(f);
    if (!item_value(f, field, slots, it)) return 0;
    if ((more = kp_fast_next(f, '}')) <= 0) break;
  }
  if (more < 0) return 0;
  /* without a job id the item is skipped whatever its status; with one,
   * a missing status is the ordinary path's to report */
  return !it->have[F_JOB_ID] || it->status != NO_STATUS;
}

/* row[key] = the value at stack index `value`. */
static void set_field(lua_State *L, int row, int key, int value) {
  PUSH_UP(L, key);
  lua_pushvalue(L, value);
  lua_rawset(L, row);
}

/* Appends the row of an ended job to the list at `list` (n rows so far):
 * the id is at `id`. */
static void push_row(lua_State *L, const follow *c, int list, int n, int id, int slots, const item *it) {
  int fields = 5 + c->later, row, j; /* id, id_field, status, vendor_status, job_id */
  for (j = 0; j < F_TEXTS; j++) fields += it->have[j];
  lua_createtable(L, 0, fields);
  row = lua_gettop(L);
  set_field(L, row, U_ID, id);
  lua_pushvalue(L, c->id_field);
  lua_pushvalue(L, id);
  lua_rawset(L, row);
  PUSH_UP(L, U_STATUS);
  PUSH_UP(L, it->status == 2 ? U_OK : U_FAILED);
  lua_rawset(L, row);
  PUSH_UP(L, U_VENDOR_STATUS);
  lua_pushinteger(L, it->status);
  lua_rawset(L, row);
  for (j = 0; j < F_TEXTS; j++)
    if (it->have[j]) set_field(L, row, TEXT_KEY[j], slots + j);
  set_field(L, row, U_JOB_ID, slots + F_JOB_ID);
  lua_rawseti(L, list, n);
}

/* What a plain item means for the task: a row when its job ended, a
 * change of the "not run yet" flag when it runs. 1, or 0 to give up. */
static int apply_item(lua_State *L, follow *c, int list, int *n, int slots, const item *it) {
  int id;
  if (!it->have[F_JOB_ID]) return 1;
  /* running, while no job waits to start: no row and no change, whoever's
   * job it is (the lookups below would find nothing to do) */
  if (it->status == 1 && c->quiet && lua_isnil(L, c->changes)) return 1;
  if (it->job_id) {
    lua_pushlstring(L, it->job_id, it->job_id_len);
    lua_replace(L, slots + F_JOB_ID);
  }
  if (!lua_isnil(L, c->seen)) {
    /* a page of a listing (Client:_list_jobs): a job id seen before, on
     * this page or an earlier one, is not read again; a new one counts */
    int before;
    lua_pushvalue(L, slots + F_JOB_ID);
    lua_rawget(L, c->seen);
    lua_pushvalue(L, slots + F_JOB_ID);
    lua_rawget(L, c->page_seen);
    before = !lua_isnil(L, -1) || !lua_isnil(L, -2);
    lua_pop(L, 2);
    if (before) return 1;
    c->fresh++;
    lua_pushvalue(L, slots + F_JOB_ID);
    lua_pushboolean(L, 1);
    lua_rawset(L, c->page_seen);
  }
  lua_pushvalue(L, slots + F_JOB_ID);
  lua_rawget(L, c->jobs);
  id = lua_gettop(L);
  if (lua_isnil(L, id)) { lua_pop(L, 1); return 1; }    /* not this task's */
  if (lua_type(L, id) != LUA_TSTRING) return 0;
  lua_pushvalue(L, id);
  lua_rawget(L, c->job_of);
  if (lua_isnil(L, -1)) { lua_pop(L, 2); return 1; }   /* already ended */
  lua_pop(L, 1);
  if (it->status == 0 || it->status == 1) {
    int zero = it->status == 0;
    lua_pushvalue(L, id);
    lua_rawget(L, c->not_started);
    if (zero != !lua_isnil(L, -1) || !lua_isnil(L, c->changes)) {
      if (lua_isnil(L, c->changes)) {
        lua_newtable(L);
        lua_replace(L, c->changes);
      }
      lua_pushvalue(L, id);
      lua_pushboolean(L, zero);
      lua_rawset(L, c->changes);
    }
    lua_pop(L, 2);
    return 1;
  }
  push_row(L, c, list, ++*n, id, slots, it);
  lua_pop(L, 1);
  return 1;
}

/* The jobs list at p: 1 with the rows of the ended jobs pushed, or 0 (the
 * stack has grown: the hook resets it). */
static int read_jobs(kp_fast *f, void *data, int slots) {
  follow *c = (follow *)data;
  lua_State *L = f->L;
  int list, n = 0, more;
  if (f->p >= f->end || *f->p != '[') return 0;
  f->p++;
  lua_newtable(L);
  list = lua_gettop(L);
  kp_fast_ws(f);
  if (f->p < f->end && *f->p == ']') { f->p++; return 1; }
  for (;;) {
    item it;
    kp_fast_ws(f);
    c->count++;
    if (!read_item(f, slots, &it) || !apply_item(L, c, list, &n, slots, &it)) return 0;
    if ((more = kp_fast_next(f, ']')) <= 0) break;
  }
  return more == 0;
}

/* The hook on the jobs list: the rows of its ended jobs (also remembered
 * as the last rows built), else 0 with nothing read. The changes, the
 * counts and the page's job ids start afresh with each list (a later
 * duplicate key replaces the earlier one). */
static int jobs_hook(kp_fast *f) {
  follow *c = (follow *)f->hook_data;
  lua_State *L = f->L;
  if (!lua_checkstack(L, 3)) return 0;
  lua_pushnil(L);
  lua_replace(L, c->changes);
  if (!lua_isnil(L, c->seen)) {
    lua_newtable(L);
    lua_replace(L, c->page_seen);
  }
  c->count = c->fresh = 0;
  c->quiet = 0;
  if (lua_isnil(L, c->seen)) {
    lua_pushnil(L);
    if (lua_next(L, c->not_started)) lua_pop(L, 2); /* a job waits */
    else c->quiet = 1;
  }
  /* slots for an item's texts and job id */
  return kp_fast_hook_list(f, F_SLOTS, c->rows, read_jobs, c);
}

/* seen[job] = true for each job id of the list whose rows are the reply's */
static void add_seen(lua_State *L, const follow *c) {
  if (lua_isnil(L, c->seen)) return;
  lua_pushnil(L);
  while (lua_next(L, c->page_seen)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, c->seen);
  }
}

/* Under lua_pcall: (span, follow) -> body, rows, changes, count, fresh |
 * body, nil; nothing when the fast path gives up. follow: {jobs=,
 * job_of=, not_started=, id_field=, later=, root=, seen=}. */
static int decode_reply(lua_State *L) {
  static const char *const PATH[] = { "data", "jobs" };
  const kp_span *in = (const kp_span *)lua_touserdata(L, 1);
  follow c;
  kp_fast f;
  int root;
  lua_settop(L, 2);
  lua_getfield(L, 2, "jobs");
  lua_getfield(L, 2, "job_of");
  lua_getfield(L, 2, "not_started");
  lua_getfield(L, 2, "id_field");
  lua_getfield(L, 2, "seen");
  if (!lua_istable(L, 3) || !lua_istable(L, 4) || !lua_istable(L, 5) || lua_type(L, 6) != LUA_TSTRING ||
      !(lua_isnil(L, 7) || lua_istable(L, 7))) return 0;
  lua_getfield(L, 2, "later");
  c.later = (int)lua_tointeger(L, -1);
  lua_getfield(L, 2, "root");
  root = lua_toboolean(L, -1);
  lua_pop(L, 2);
  if (c.later < 0 || c.later > 8) return 0;
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);
  c.jobs = 3; c.job_of = 4; c.not_started = 5; c.id_field = 6; c.seen = 7; c.rows = 8; c.changes = 9;
  c.page_seen = 10;
  c.count = c.fresh = 0;
  if (!kp_fast_begin(&f, L, in->s, in->n)) return 0;
  f.hook = jobs_hook;
  f.hook_path = root ? PATH + 1 : PATH;
  f.hook_keys = root ? 1 : 2;
  f.hook_data = &c;
  if (!kp_fast_document(&f)) return 0;
  /* the rows are the reply's unless a later duplicate key replaced them */
  if (kp_fast_is_at(L, lua_gettop(L), c.rows, f.hook_path, f.hook_keys)) {
    add_seen(L, &c);
    lua_pushvalue(L, c.rows);
    lua_pushvalue(L, c.changes);
    lua_pushinteger(L, c.count);
    lua_pushinteger(L, c.fresh);
    return 5;
  }
  lua_pushnil(L);
  return 2;
}

int kp_job_rows_decode(lua_State *L, int decoder, int follow_idx, const char *s, size_t n) {
  return kp_fast_run(L, decoder, follow_idx, s, n, 5);
}

/* core.task_reply(s, follow) -> body, rows, changes, count, fresh |
 * body | nil
 * s decoded as the engine decodes a task query's reply (or, follow.root,
 * a ListJobs page) for a task whose tables are in follow ({jobs=,
 * job_of=, not_started=, id_field=, later=, seen=}; the fast path only:
 * nil when it gives up): rows (the ended jobs', to be completed by
 * Task:_apply_rows) when the jobs list became rows, the changes of the
 * "not run yet" flags (id -> boolean) or nil, how many items the list
 * had, and how many of their job ids were not yet in follow.seen (which
 * gets them). For checking the path against the reference one
 * (spec/task_rows_spec.lua). */
static int core_task_reply(lua_State *L) { return kp_fast_reply(L, 5); }

void kp_job_rows_push_decoder(lua_State *L) {
  kp_fast_push_reader(L, decode_reply, UPVALUES, U_COUNT);
}

int kp_job_rows_open(lua_State *L) {
  kp_job_rows_push_decoder(L);
  lua_pushcclosure(L, core_task_reply, 1);
  lua_setfield(L, -2, "task_reply");
  return 0;
}
