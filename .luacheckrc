std = "max"
max_line_length = 130
files["spec"] = { std = "+busted" }
files["emulator"] = { globals = { "ngx" } }
exclude_files = { "build", ".git" }
