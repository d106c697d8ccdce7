"""What one `/metrics` scrape costs (docs/api.md, "What a scrape costs"): the time of a scrape
over a keep-alive connection against that of `/healthz` on the same connection (the difference
is building the exposition), and its bytes, with no other connection and then with N idle
WebSocket subscribers open (the cost must not grow with them).

Usage: scrape_cost.py PATH-TO-EDGECOMET [N=10000] [SCRAPES=300]
Starts the server (2 workers) on a free port and stops it at the end.
"""

import http.client
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
SCRAPES = int(sys.argv[3]) if len(sys.argv) > 3 else 300


def timed(conn, path):
    t = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t, len(body)


def measure(host, port, label):
    c = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(20):  # warm up
        timed(c, "/metrics")
        timed(c, "/healthz")
    m, h = [], []
    size = 0
    for _ in range(SCRAPES):
        dt, size = timed(c, "/metrics")
        m.append(dt)
        h.append(timed(c, "/healthz")[0])
    c.close()
    med_m, med_h = statistics.median(m), statistics.median(h)
    print(f"{label}: /metrics {size} bytes body; median {med_m * 1e6:.0f} us per scrape "
          f"(p90 {sorted(m)[int(len(m) * 0.9)] * 1e6:.0f} us), /healthz {med_h * 1e6:.0f} us: "
          f"building the exposition ~{(med_m - med_h) * 1e6:.0f} us")


log = tempfile.NamedTemporaryFile("w+", delete=False)
srv = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--workers", "2"], stderr=log,
                       stdout=subprocess.DEVNULL)
socks = []
try:
    for _ in range(100):
        m = re.search(r"listening on (\S+):(\d+) with", open(log.name).read())
        if m:
            break
        time.sleep(0.05)
    host, port = m.group(1), int(m.group(2))
    measure(host, port, "0 subscribers")
    req = (b"GET /sub/idle HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for i in range(N):
        s = socket.create_connection((host, port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        assert s.recv(4096).startswith(b"HTTP/1.1 101")
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/stats")
    assert f'"conns_ws_sub":{N}' in c.getresponse().read().decode().split('"total"')[1]
    c.close()
    measure(host, port, f"{N} idle WebSocket subscribers")
finally:
    for s in socks:
        s.close()
    srv.terminate()
    srv.wait(10)
