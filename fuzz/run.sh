#!/usr/bin/env bash
# fuzz/run.sh [seconds|count]: the two fuzzers of koophone's response path.
#   fuzz/run.sh          ~60 s: 30 s of the Lua generator + 30 s of libFuzzer (CI)
#   fuzz/run.sh 600      a long time-bound run (half each)
#   fuzz/run.sh 1000000  1,000,000 generated inputs, then as many libFuzzer runs
# Exit 1 on any finding (the input is saved under fuzz/ or as crash-*).
set -euo pipefail
cd "$(dirname "$0")/.."
arg=${1:-60}
make -s all >/dev/null
build=build/fuzz
mkdir -p "$build" "$build/corpus"
CC=${FUZZ_CC:-clang}
if [ ! -x "$build/decode_fuzz" ] || [ fuzz/decode_fuzz.c -nt "$build/decode_fuzz" ] || [ src/json.c -nt "$build/decode_fuzz" ]; then
  $CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I src $(pkg-config --cflags lua5.4 libcurl 2>/dev/null || echo -I/usr/include/lua5.4) \
    fuzz/decode_fuzz.c src/json.c -o "$build/decode_fuzz" -llua5.4 -lm
fi
# an input's first byte picks the HTTP status: the seeds go in behind a
# space (200), so that libFuzzer starts from the vendor's whole replies
for f in fuzz/corpus/*.json; do
  [ -e "$build/corpus/200-$(basename "$f")" ] || { printf ' '; cat "$f"; } > "$build/corpus/200-$(basename "$f")"
done
if [ "$arg" -ge 100000 ]; then
  lua_args=("$arg"); lf_args=(-runs="$arg")
else
  half=$(( arg / 2 )); [ "$half" -lt 1 ] && half=1
  export FUZZ_SECONDS=$half
  lua_args=(); lf_args=(-max_total_time="$half")
fi
echo "== Lua generator over the mapping"
lua5.4 fuzz/lua_fuzz.lua "${lua_args[@]}"
unset FUZZ_SECONDS
echo "== libFuzzer over the C decode + mapping"
log=$build/decode_fuzz.log
rc=0
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$build/decode_fuzz" -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 -keep_seed=1 -reduce_inputs=0 \
  -dict=fuzz/json.dict -artifact_prefix="$build/" "${lf_args[@]}" "$build/corpus" >"$log" 2>&1 || rc=$?
grep -E "^(#[0-9]+ +(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss|SUMMARY|decode_fuzz:|==[0-9]+==ERROR)" "$log" || true
if [ "$rc" -ne 0 ]; then echo "libFuzzer found something (exit $rc): see $log and $build/crash-*"; tail -40 "$log"; exit 1; fi
echo "fuzz: ok"
