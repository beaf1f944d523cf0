"""Python requests with a ThreadPoolExecutor (one Session per thread).
python3 bench/anchors/py_requests.py URL N ROUNDS THREADS"""
import json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import requests

url, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 16
CMD = "getprop ro.build.version.release"
sweep = []
for first in range(0, n, 32):
    ids = ['kp%06d' % i for i in range(first, min(first + 32, n))]
    sweep.append(json.dumps({"command": CMD, "instance_ids": ids}, separators=(",", ":")))
bodies = sweep * rounds
local = threading.local()

def one(i):
    s = getattr(local, "s", None)
    if s is None:
        s = local.s = requests.Session()
    r = s.post(url + "/v1/instances/sync-command", data=bodies[i], headers={
        "X-Auth-Token": "emulator-token", "Content-Type": "application/json",
        "Accept": "application/json", "x-request-id": "py-%08d" % i})
    if r.status_code != 200:
        return 0
    t = r.json()
    return 1 if t.get("error_code") == "0" and isinstance(t.get("data", {}).get("cmd_results"), list) else 0

t0 = time.monotonic()
with ThreadPoolExecutor(threads) as ex:
    ok = sum(ex.map(one, range(len(bodies))))
wall = time.monotonic() - t0
print("RESULT " + json.dumps({"requests": len(bodies), "ok": ok, "wall": wall}), flush=True)
