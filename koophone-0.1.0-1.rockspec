-- `luarocks make` from a checkout; see docs/luarocks.md for what it installs,
-- where, and how Debian's system packages satisfy the dependencies.
rockspec_format = "3.0"
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
    coroutine schedulers and batch reports. Also installs the `koophone`
    command line and `koophone-emulator`, a local fake of the vendor APIs
    (nginx with its Lua module: Debian's nginx-light, libnginx-mod-http-lua).
  ]],
  homepage = "https://example.invalid/koophone", -- set by the release process, with source.url
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",   -- the C core calls a private lua-cjson instance
  "argparse >= 0.7",    -- the `koophone` command line (koophone.cli)
}
external_dependencies = {
  -- Only the library is looked for: LuaRocks looks for headers in
  -- <dir>/include alone, and Debian and Ubuntu put curl.h in
  -- /usr/include/<multiarch>/curl/, where the compiler finds it without help.
  -- A plain prefix (CURL_DIR=/opt/curl) still gets -I/opt/curl/include.
  CURL = { library = "curl" },
  -- SHA-256 and HMAC for AK/SK signing (libcurl's OpenSSL build brings it)
  CRYPTO = { header = "openssl/hmac.h", library = "crypto" },
}
build = {
  -- One make pass, `rock-install` in the Makefile: it compiles koophone.core
  -- straight into the rock's own directory (no object file, nothing left in
  -- the checkout) and installs the Lua modules, the two commands and the
  -- emulator's files there.
  type = "make",
  build_pass = false,
  install_target = "rock-install",
  variables = {
    PREFIX = "$(PREFIX)", LUADIR = "$(LUADIR)", LIBDIR = "$(LIBDIR)", BINDIR = "$(BINDIR)",
    CFLAGS = "$(CFLAGS)", LIBFLAG = "$(LIBFLAG)", LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_INCDIR = "$(CURL_INCDIR)", CURL_LIBDIR = "$(CURL_LIBDIR)",
    CRYPTO_INCDIR = "$(CRYPTO_INCDIR)", CRYPTO_LIBDIR = "$(CRYPTO_LIBDIR)",
  },
}
