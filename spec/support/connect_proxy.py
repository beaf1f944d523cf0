#!/usr/bin/env python3
"""A tiny HTTP CONNECT proxy for spec/tls_spec.lua.

Usage: connect_proxy.py LOGFILE  -> prints the port it listens on (127.0.0.1),
then relays CONNECT tunnels; each CONNECT target is appended to LOGFILE.
Exits when stdin closes (the spec keeps a pipe open) or after 120 s.
"""
import os, socket, sys, threading, select

log = open(sys.argv[1], "a", buffering=1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)

def relay(a, b):
    try:
        while True:
            r, _, _ = select.select([a, b], [], [], 60)
            if not r:
                return
            for s in r:
                d = s.recv(65536)
                if not d:
                    return
                (b if s is a else a).sendall(d)
    finally:
        a.close(); b.close()

def handle(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            c.close(); return
        buf += d
    line = buf.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) < 2 or parts[0] != "CONNECT":
        c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"); c.close(); return
    host, port = parts[1].rsplit(":", 1)
    log.write("CONNECT %s\n" % parts[1])
    try:
        u = socket.create_connection((host, int(port)), timeout=10)
    except OSError:
        c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"); c.close(); return
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    relay(c, u)

def accept():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()

threading.Thread(target=accept, daemon=True).start()
t = threading.Timer(120, lambda: os._exit(0)); t.daemon = True; t.start()
sys.stdin.read()
os._exit(0)
