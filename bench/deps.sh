#!/usr/bin/env bash
# Installs the anchor tools of the benchmarks (only the missing ones).
# As root it runs apt-get; otherwise it prints the command and exits 1
# (bench/run.lua then skips the anchors it cannot find).
set -euo pipefail
PKGS=(nghttp2-client curl lua-curl lua-http lua-cqueues lua-socket lua-cjson
      lua5.1 lua5.3 python3 python3-requests gnuplot-nox hyperfine valgrind time)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the benchmark anchors need these Debian packages; run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "bench/deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
