/* fast.h: the JSON fast path's state (src/json.c), shared with the one
 * reader that builds its own values from the bytes: src/cmd_rows.c, the
 * rows of a sync-command reply. Everything here runs under lua_pcall: a
 * memory error is a decode failure, as with cjson. */
#ifndef KOOPHONE_FAST_H
#define KOOPHONE_FAST_H

#include <string.h>
#include "core.h"

#define KP_FAST_MAX_DEPTH 32       /* cjson's limit is 64: deeper goes to it */

/* Short strings seen in this reply (keys, and values such as "" or "ok"
 * that repeat in every item) are pushed again from a small cache on the
 * stack instead of being hashed and interned once more: the same string. */
#define KP_FAST_CACHE_SLOTS 32
#define KP_FAST_CACHE_MAX_LEN 24

typedef struct kp_fast kp_fast;

/* Bytes to read, handed to a decoder under lua_pcall as a light userdata. */
typedef struct kp_span { const char *s; size_t n; } kp_span;

/* Reads the value at the hooked key path itself: 1 with the value pushed,
 * or 0 with the position and the stack as they were (the value is then
 * decoded as any other). */
typedef int (*kp_fast_hook)(kp_fast *f);

struct kp_fast {
  lua_State *L;
  const char *p, *end;
  int depth;                       /* containers open around p */
  int cache_base;                  /* stack index of cache slot 0 */
  const char *cached[KP_FAST_CACHE_SLOTS]; /* where the slot's string was read */
  unsigned char cached_len[KP_FAST_CACHE_SLOTS];
  kp_fast_hook hook;               /* NULL: a plain decode */
  const char *const *hook_path;    /* its keys from the root object */
  int hook_keys;                   /* how many */
  int matched;                     /* keys of hook_path the open objects matched */
  void *hook_data;
};

/* Starts reading s: reserves the string cache on the stack, no hook. */
int kp_fast_begin(kp_fast *f, lua_State *L, const char *s, size_t n);
/* The whole input as one value (whitespace around it): 1 and the value
 * pushed, or 0 (give up: the caller resets the stack). */
int kp_fast_document(kp_fast *f);
/* One value at p (whitespace before it skipped): 1 and pushed, or 0. */
int kp_fast_value(kp_fast *f);
/* The string at p (a '"'), unescaped and pushed: 1, or 0. */
int kp_fast_string(kp_fast *f);
/* The string at p (a '"') without escapes or control bytes: 1 with its
 * bytes in *s, *n and p past it; 0 (p unchanged) for anything else. */
int kp_fast_plain(kp_fast *f, const char **s, size_t *n);
/* The literal w (of n bytes) at p: 1 and p past it, or 0. */
int kp_fast_word(kp_fast *f, const char *w, size_t n);

/* JSON whitespace at p skipped (the usual case, none, tested first). */
static inline void kp_fast_ws(kp_fast *f) {
  if (f->p < f->end && (unsigned char)*f->p > ' ') return;
  while (f->p < f->end && (*f->p == ' ' || *f->p == '\n' || *f->p == '\r' || *f->p == '\t')) f->p++;
}

/* After a member of a container closed by `close` ('}' or ']'): 1 past a
 * ',' (and the whitespace after it), 0 past `close`, -1 for anything else. */
static inline int kp_fast_next(kp_fast *f, char close) {
  kp_fast_ws(f);
  if (f->p >= f->end) return -1;
  if (*f->p == close) { f->p++; return 0; }
  if (*f->p != ',') return -1;
  f->p++;
  kp_fast_ws(f);
  return 1;
}

/* hooks.c: what the readers behind the hook share (cmd_rows.c, job_rows.c) */

/* 1 when the bytes at p are the key `k` (with its closing quote, n bytes
 * in all): f->p is then past them. Inline: it runs for every key of every
 * item, and a constant n makes the memcmp a few compares. */
static inline int kp_fast_key(kp_fast *f, const char *p, const char *k, size_t n) {
  if ((size_t)(f->end - p) < n || memcmp(p, k, n) != 0) return 0;
  f->p = p + n;
  return 1;
}
/* A text field at p: 1 with a non-empty string put in stack slot `slot`,
 * 0 for "" and null (no field), -1 for anything else. */
int kp_fast_text(kp_fast *f, int slot);
/* A value the reader does not keep, checked and stepped over: 1, or 0 when
 * it is not valid. A plain string makes no Lua string (most of what a
 * reply's other fields would leave behind); anything else is decoded and
 * dropped. */
int kp_fast_skip(kp_fast *f);
/* Reads the list at the hooked key into rows: `read(f, data, first)` gets
 * `slots` stack slots from `first` and leaves the list pushed (1), or
 * fails (0). 1 with the list pushed and also put in stack slot `rows` (the
 * last rows built), or 0 with the position and the stack as they were. */
typedef int (*kp_list_reader)(kp_fast *f, void *data, int first);
int kp_fast_hook_list(kp_fast *f, int slots, int rows, kp_list_reader read, void *data);
/* 1 when the value at `value` (not nil) is body[path[0]]...[path[keys-1]]
 * (raw): the rows a hook built are the reply's, not replaced by a later
 * duplicate key. */
int kp_fast_is_at(lua_State *L, int body, int value, const char *const *path, int keys);
/* reader(span of s, arg) under lua_pcall: 1 with its `nresults` results
 * pushed, or 0 and nothing pushed when it raised or its first is nil. */
int kp_fast_run(lua_State *L, int reader, int arg, const char *s, size_t n, int nresults);
/* Pushes fn as a closure whose upvalues are the strings names[0 .. count). */
void kp_fast_push_reader(lua_State *L, lua_CFunction fn, const char *const *names, int count);
/* The body of core.sync_reply and core.task_reply (s, arg), with the
 * reader as upvalue 1: its `nresults` results when rows were built (the
 * second is not nil), the body alone when not, nil when it gave up. */
int kp_fast_reply(lua_State *L, int nresults);

#endif
