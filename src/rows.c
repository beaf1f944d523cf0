/* rows.c: result rows for a reply whose items come back in the order of
 * the ids, in C. koophone.rows (Lua) stays the reference: this builds a row
 * only where the item is plain — a table with no metatable, the id field
 * equal to the id asked for, status 2 or -1, and text fields that are
 * strings, "", null or absent — and gives up otherwise, so that the caller
 * runs the Lua path for the whole reply. The row is the one
 * rows.from_item builds: id, [id_field], status, vendor_status, output,
 * code, message, job_id, request_id, attempts, elapsed (absent when nil).
 * A table built here is sized once; a Lua constructor sizes it for every
 * field it names, then each field goes through the VM (about 5,000
 * instructions a row, against about 1,500 here). */
#include "core.h"

/* Upvalues of core.item_rows: the key strings, pushed by index. */
enum {
  K_ID = 1, K_STATUS, K_VENDOR_STATUS, K_OUTPUT, K_CODE, K_MESSAGE, K_JOB_ID,
  K_REQUEST_ID, K_ATTEMPTS, K_ELAPSED, K_EXECUTE_MSG, K_ERROR_CODE, K_ERROR_MSG,
  K_OK, K_FAILED, K_COUNT = K_FAILED
};

static const char *const KEYS[K_COUNT] = {
  "id", "status", "vendor_status", "output", "code", "message", "job_id",
  "request_id", "attempts", "elapsed", "execute_msg", "error_code", "error_msg",
  "ok", "failed"
};

#define KEY(L, k) lua_pushvalue((L), lua_upvalueindex(k))

/* item[k] pushed; 1 when it is a non-empty string (kept on the stack), 0
 * when "", null or absent (popped), -1 for anything else (popped). */
static int text_field(lua_State *L, int item, int k) {
  int t;
  KEY(L, k);
  lua_rawget(L, item);
  t = lua_type(L, -1);
  if (t == LUA_TSTRING) {
    if (kp_rawlen(L, -1) > 0) return 1;
  } else if (!(t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL))) {
    lua_pop(L, 1);
    return -1;
  }
  lua_pop(L, 1);
  return 0;
}

/* core.item_rows(ids, items, id_field, request_id, attempts, elapsed)
 * -> rows (a list, one row per id) | nil when any item is not plain */
static int item_rows(lua_State *L) {
  int n, i, ids = 1, items = 2, extra = 0, k;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checkstring(L, 3);
  lua_settop(L, 6);
  n = (int)kp_rawlen(L, ids);
  if (n <= 0 || (int)kp_rawlen(L, items) != n) return 0;
  for (k = 4; k <= 6; k++) if (!lua_isnil(L, k)) extra++;
  luaL_checkstack(L, 16, "item_rows");
  lua_createtable(L, n, 0);                        /* 7: the rows */
  for (i = 1; i <= n; i++) {
    int item, fields = 4 + extra, ok, have[4], j;
    double st;
    lua_rawgeti(L, items, i);                      /* 8: the item */
    item = lua_gettop(L);
    if (lua_type(L, item) != LUA_TTABLE || lua_getmetatable(L, item)) return 0;
    lua_rawgeti(L, ids, i);                        /* 9: the id */
    lua_pushvalue(L, 3);
    lua_rawget(L, item);                           /* 10: item[id_field] */
    if (lua_type(L, 9) != LUA_TSTRING || lua_type(L, 10) != LUA_TSTRING || !lua_rawequal(L, 9, 10)) return 0;
    lua_pop(L, 1);
    KEY(L, K_STATUS);
    lua_rawget(L, item);
    if (lua_type(L, -1) != LUA_TNUMBER) return 0;
    st = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (st != 2 && st != -1) return 0;
    /* output, code, message, job_id: pushed at 10.. when present */
    for (j = 0; j < 4; j++) {
      static const int FROM[4] = { K_EXECUTE_MSG, K_ERROR_CODE, K_ERROR_MSG, K_JOB_ID };
      ok = text_field(L, item, FROM[j]);
      if (ok < 0) return 0;
      have[j] = ok;
      fields += ok;
    }
    lua_createtable(L, 0, fields);
    {
      static const int TO[4] = { K_OUTPUT, K_CODE, K_MESSAGE, K_JOB_ID };
      int row = lua_gettop(L), at = 10;
      KEY(L, K_ID); lua_pushvalue(L, 9); lua_rawset(L, row);
      lua_pushvalue(L, 3); lua_pushvalue(L, 9); lua_rawset(L, row);
      KEY(L, K_STATUS); KEY(L, st == 2 ? K_OK : K_FAILED); lua_rawset(L, row);
      KEY(L, K_VENDOR_STATUS); lua_pushinteger(L, st == 2 ? 2 : -1); lua_rawset(L, row);
      for (j = 0; j < 4; j++) {
        if (!have[j]) continue;
        KEY(L, TO[j]); lua_pushvalue(L, at++); lua_rawset(L, row);
      }
      for (k = 4; k <= 6; k++) {
        if (lua_isnil(L, k)) continue;
        KEY(L, K_REQUEST_ID + (k - 4)); lua_pushvalue(L, k); lua_rawset(L, row);
      }
      lua_rawseti(L, 7, i);                        /* pops the row */
    }
    lua_settop(L, 7);
  }
  return 1;
}

/* The fields of core.row after id and the id field, in argument order. */
static const char *const ROW_KEYS[] = {
  "status", "vendor_status", "output", "code", "message", "job_id",
  "task_id", "request_id", "attempts", "elapsed", "polls"
};
#define ROW_NKEYS ((int)(sizeof ROW_KEYS / sizeof ROW_KEYS[0]))

/* core.row(id, id_field, status, vendor_status, output, code, message,
 *          job_id, task_id, request_id, attempts, elapsed, polls) -> row
 * A row holding only the fields given (nil ones are left out), in a table
 * sized for exactly those: a Lua constructor sizes the table for every
 * field it names, nil or not, so a row of 8 fields took 16 slots (twice
 * the memory, at 100,000 rows about 20 MB). */
static int row_new(lua_State *L) {
  int k, fields = 2;
  luaL_checkany(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2 + ROW_NKEYS);
  for (k = 3; k <= 2 + ROW_NKEYS; k++) if (!lua_isnil(L, k)) fields++;
  lua_createtable(L, 0, fields);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "id");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  lua_rawset(L, -3);
  for (k = 0; k < ROW_NKEYS; k++) {
    if (lua_isnil(L, 3 + k)) continue;
    lua_pushvalue(L, lua_upvalueindex(k + 1));
    lua_pushvalue(L, 3 + k);
    lua_rawset(L, -3);
  }
  return 1;
}

int kp_rows_open(lua_State *L) {
  int k;
  for (k = 0; k < K_COUNT; k++) lua_pushstring(L, KEYS[k]);
  lua_pushcclosure(L, item_rows, K_COUNT);
  lua_setfield(L, -2, "item_rows");
  for (k = 0; k < ROW_NKEYS; k++) lua_pushstring(L, ROW_KEYS[k]);
  lua_pushcclosure(L, row_new, ROW_NKEYS);
  lua_setfield(L, -2, "row");
  return 0;
}
