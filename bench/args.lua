-- bench/args.lua: the `key=number` arguments of a bench script, as a table.
--
--   local opt = require("bench.args")(arg)   -- lua5.4 bench/x.lua runs=5 n=1000
--   -> { runs = 5, n = 1000 }
return function(args)
  local opt = {}
  for i = 1, #args do
    local k, v = args[i]:match("^(%w+)=(.*)$")
    if k then opt[k] = tonumber(v) end
  end
  return opt
end
