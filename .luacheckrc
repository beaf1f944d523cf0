std = "max"
max_line_length = 130
files["spec"] = { std = "+busted" }
-- the emulator's own spec checks many status/body pairs in a row
files["spec/emulator_spec.lua"] = { max_line_length = false, ignore = { "311", "314" } }
-- the emulator: handlers share one signature whether they use the config or not
files["emulator"] = { globals = { "ngx" }, max_line_length = false, ignore = { "212" } }
files["bench"] = { max_line_length = false, ignore = { "311" } }
exclude_files = { "build", ".git" }
