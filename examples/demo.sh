#!/usr/bin/env bash
# make demo: start the emulator (a little latency, 1% failing commands, 2% of
# installs that report success but never land, some 503s and 500s on status
# queries), run the rollout on 1,000 emulated phones — restart, wait_running,
# install, verify_installed, run — and show the report: verify_installed
# catches the silent install failures.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
url=$(bin/koophone-emulator start --scenario emulator/scenarios/demo.json)
trap 'bin/koophone-emulator stop "$url" >/dev/null 2>&1 || true' EXIT
echo "emulator at $url (scenario emulator/scenarios/demo.json)"
export KOOPHONE_ENDPOINT=$url KOOPHONE_CPH_ENDPOINT=$url KOOPHONE_TOKEN=emulator-token \
       KOOPHONE_PROJECT_ID=emulator-project
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/$LUA/?.so;;"
$LUA examples/rollout.lua "${DEMO_PHONES:-1000}" || true
echo
echo "emulator accounting: $(curl -s "$url/_emulator/stats" | head -c 300)"
echo "executions: $(curl -s "$url/_emulator/executions" | $LUA -e 'local t=require("cjson").decode(io.read("a")); print(("%d commands ran, at most %d time(s) per (instance, command)"):format(t.total, t.max))')"
