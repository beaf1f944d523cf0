/* options.c: numeric options of engines and requests. Every one is
 * checked on the Lua number itself — a number, finite, within [0, max] —
 * before it is converted, so `timeout = 1e300` or NaN is refused with the
 * field's name and limit instead of reaching an undefined double -> long
 * cast. Fractions are truncated toward zero. */
#include "core.h"

long kp_opt_range(lua_State *L, int t, const char *k, long dflt, long max,
                  const char *what, const char *unit) {
  lua_Number v;
  if (lua_isnoneornil(L, t)) return dflt;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return dflt; }
  if (lua_type(L, -1) != LUA_TNUMBER)
    luaL_error(L, "%s '%s' must be a number (%s), got %s", what, k, unit, luaL_typename(L, -1));
  v = lua_tonumber(L, -1);
  /* NaN fails both comparisons; +-inf and 1e300 fail the upper bound */
  if (!(v >= 0 && v <= (lua_Number)max))
    luaL_error(L, "%s '%s' must be a number from 0 to %d (%s), got %s", what, k, (int)max, unit,
               lua_tostring(L, -1));
  lua_pop(L, 1);
  return (long)v;
}
