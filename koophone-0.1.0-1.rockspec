package = "koophone"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/koophone.git", -- set by the release process
  tag = "v0.1.0",
}
description = {
  summary = "Drive fleets of cloud phones (KooPhone, CPH) from Lua, without blocking",
  detailed = [[
    A C core over libcurl's multi interface and lua-cjson, and a Lua client for
    the KooPhone and Cloud Phone Host APIs: ADB commands, app installs and
    restarts on thousands of phones, with safe retries, polling tasks,
    coroutine schedulers and batch reports.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",
}
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  -- SHA-256 and HMAC for AK/SK signing (libcurl's OpenSSL build brings it)
  CRYPTO = { header = "openssl/hmac.h", library = "crypto" },
}
build = {
  type = "builtin",
  modules = {
    ["koophone.core"] = {
      sources = { "src/compat.c", "src/core.c", "src/engine.c", "src/errors.c", "src/json.c", "src/request.c", "src/ids.c", "src/sign.c", "src/files.c", "src/options.c", "src/poller.c" },
      libraries = { "curl", "crypto" },
      incdirs = { "$(CURL_INCDIR)", "$(CRYPTO_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(CRYPTO_LIBDIR)" },
      defines = { "_POSIX_C_SOURCE=200809L" },
    },
    ["koophone"] = "lua/koophone/init.lua",
    ["koophone.auth"] = "lua/koophone/auth.lua",
    ["koophone.batch"] = "lua/koophone/batch.lua",
    ["koophone.journal"] = "lua/koophone/journal.lua",
    ["koophone.report"] = "lua/koophone/report.lua",
    ["koophone.workflow"] = "lua/koophone/workflow.lua",
    ["koophone.client"] = "lua/koophone/client.lua",
    ["koophone.errors"] = "lua/koophone/errors.lua",
    ["koophone.rows"] = "lua/koophone/rows.lua",
    ["koophone.sched"] = "lua/koophone/sched.lua",
    ["koophone.sched.ngx"] = "lua/koophone/sched/ngx.lua",
    ["koophone.sched.cqueues"] = "lua/koophone/sched/cqueues.lua",
    ["koophone.sched.luv"] = "lua/koophone/sched/luv.lua",
    ["koophone.task"] = "lua/koophone/task.lua",
    ["koophone.transport"] = "lua/koophone/transport.lua",
    ["koophone.validate"] = "lua/koophone/validate.lua",
  },
  install = {
    bin = { "bin/koophone", "bin/koophone-emulator" },
  },
}
