"""The operator's endpoints with tools we did not write (docs/api.md, `/metrics`): `promtool check
metrics` on the exposition; a real Prometheus server scraping edgecomet every second, read back
through its HTTP API (`/api/v1/query`) and compared with `/stats`; the `--processes` sums;
`/readyz` while the broker's Redis is killed and started again, and while draining after
SIGTERM.

Usage: test_metrics.py PATH-TO-EDGECOMET

Needs `prometheus`, `promtool` and `redis-server` on PATH (Debian packages `prometheus` and
`redis-server`; scripts/test.sh installs them). Everything is started here on free ports and
stopped at the end, whatever happens; data and logs live in a temporary directory, removed at the
end. Each test prints one line; the last line is "N passed, N failed".
"""

import asyncio
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

import websockets

import harness  # tests/python/harness.py: the runner shared by these files

BIN = os.path.abspath(sys.argv[1])
DIR = tempfile.mkdtemp(prefix="edgecomet-metrics-py-")
PROCS = []


@atexit.register
def cleanup():
    """Everything we started stopped, the temporary directory removed."""
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    shutil.rmtree(DIR, ignore_errors=True)


def start(args, name):
    log = open(f"{DIR}/{name}.log", "w+")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    PROCS.append(p)
    return p


def log_of(name):
    with open(f"{DIR}/{name}.log") as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, cond, secs):
    """Polls `cond` every 100 ms for at most `secs` seconds; its last value if truthy."""
    deadline = time.monotonic() + secs
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {secs} s")
        time.sleep(0.1)


class Edgecomet:
    def __init__(self, name, *args):
        self.name = name
        self.proc = start([BIN, "--listen", "127.0.0.1:0", "--workers", "2", *args], name)
        m = wait_for(f"{name} starts",
                     lambda: re.search(r"listening on (\S+) with \d+ worker", log_of(name)), 10)
        self.addr = m.group(1)
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)

    def request(self, method, path, body=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            c.close()

    def stats(self):
        return json.loads(self.request("GET", "/stats")[2])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def promtool(text):
    return subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)


SERVER = None


def server():
    global SERVER
    if SERVER is None:
        SERVER = Edgecomet("plain")
    return SERVER


async def test_promtool_accepts_the_exposition():
    srv = server()
    # Something in every histogram: a subscriber on each worker's channel, a publish, closes.
    async with websockets.connect(f"ws://{srv.addr}/sub/pt") as ws:
        assert srv.request("POST", "/pub/pt", b"hello")[0] == 200
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
    status, headers, body = srv.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["Date"]), headers
    r = promtool(body)
    # promtool prints lint problems on stdout/stderr and exits non-zero on errors.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout, r.stderr)
    assert "edgecomet_publish_write_seconds_bucket{worker=" in body
    assert 'le="+Inf"' in body
    # And something it must refuse, so that a pass above means something.
    bad = promtool("# TYPE x counter\nx_total{a=\"1\"} 1\n# TYPE x counter\nx 2\n")
    assert bad.returncode != 0


def test_prometheus_scrapes_what_stats_says():
    srv = server()
    before = srv.stats()["total"]["messages_in"]
    n = 7
    for i in range(n):
        assert srv.request("POST", "/pub/prom", f"m{i}".encode())[0] == 200
    expected = before + n
    assert srv.stats()["total"]["messages_in"] == expected
    port = free_port()
    cfg = f"{DIR}/prometheus.yml"
    with open(cfg, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: edgecomet
    static_configs:
      - targets: ["{srv.addr}"]
""")
    prom = start(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={DIR}/tsdb",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], "prometheus")

    def query(q):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            doc = json.loads(c.getresponse().read())
            c.close()
        except (OSError, ValueError):
            return None
        res = doc.get("data", {}).get("result", [])
        return float(res[0]["value"][1]) if res else None

    try:
        # Prometheus up, then a scrape with our figure in it (bounded: 20 s).
        wait_for("prometheus scraped edgecomet", lambda: query('up{job="edgecomet"}') == 1.0, 20)
        got = wait_for("the publishes in prometheus",
                       lambda: query("sum(edgecomet_messages_in_total)") == expected, 10)
        assert got
        # The per-worker figures Prometheus holds are /stats' per-worker figures.
        workers = srv.stats()["workers"]
        for w in workers:
            v = query(f'edgecomet_messages_in_total{{worker="{w["worker"]}"}}')
            assert v == w["messages_in"], (w["worker"], v, w["messages_in"])
        assert query("edgecomet_history_messages") == srv.stats()["hub"]["history_messages"]
        assert query("edgecomet_workers") == 2
        assert query("process_open_fds") > 0
        assert query("process_resident_memory_bytes") > 1_000_000
        # A histogram Prometheus understands: a quantile over it is a number.
        q = query("histogram_quantile(0.5, sum by (le) (edgecomet_queued_at_close_bytes_bucket))")
        assert q is not None and q >= 0, q
    finally:
        prom.terminate()
        prom.wait(10)
        print(log_of("prometheus")[-2000:] if prom.returncode not in (0, -15) else "", end="")


def test_readyz_follows_the_broker():
    rport = free_port()
    redis_args = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no"]
    redis = start(redis_args, "redis")
    wait_for("redis up", lambda: "Ready to accept connections" in log_of("redis"), 10)
    srv = Edgecomet("broker", "--broker", f"redis://127.0.0.1:{rport}")
    try:
        wait_for("ready with redis", lambda: srv.request("GET", "/readyz")[0] == 200, 10)
        assert srv.request("GET", "/readyz")[2] == "ready\n"
        redis.send_signal(signal.SIGKILL)
        redis.wait()
        status, _, body = wait_for("not ready without redis",
                                   lambda: (r := srv.request("GET", "/readyz"))[0] == 503 and r, 10)
        assert body.startswith("not ready: broker not connected"), body
        # Alive all the same.
        assert srv.request("GET", "/healthz")[:3:2] == (200, "ok\n")
        redis = start(redis_args, "redis2")
        # The broker reconnects with a backoff of at most 5 s.
        wait_for("ready again with redis back", lambda: srv.request("GET", "/readyz")[0] == 200, 15)
        assert srv.stats()["hub"]["broker_connected"] == 1
    finally:
        srv.stop()
        redis.terminate()
        redis.wait(10)


def test_processes_sums():
    """Under --processes the launcher's sums are exposed as edgecomet_processes_*, equal to
    /stats' "processes", and promtool accepts the whole."""
    rport = free_port()
    redis = start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"], "redis3")
    wait_for("redis up", lambda: "Ready to accept connections" in log_of("redis3"), 10)
    srv = Edgecomet("launcher", "--processes", "2", "--broker", f"redis://127.0.0.1:{rport}")
    try:
        wait_for("the launcher's line", lambda: "2 processes listening" in log_of("launcher"), 10)
        for i in range(3):
            assert srv.request("POST", "/pub/sums", f"m{i}".encode())[0] == 202

        def summed():
            body = srv.request("GET", "/metrics")[2]
            m = re.search(r"^edgecomet_processes_messages_in_total (\d+)$", body, re.M)
            r = re.search(r"^edgecomet_processes_reporting (\d+)$", body, re.M)
            return m and r and int(m.group(1)) == 3 and int(r.group(1)) == 2 and body

        body = wait_for("the sums in /metrics", summed, 10)
        assert re.search(r'^edgecomet_processes_connections\{phase="http"\} \d+$', body, re.M)
        assert "# TYPE edgecomet_processes_broker_connected gauge" in body
        r = promtool(body)
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r
        # The same sums as /stats shows.
        procs = wait_for("the sums in /stats",
                         lambda: (p := srv.stats().get("processes")) and
                         p["total"]["messages_in"] == 3 and p, 10)
        assert procs["count"] == 2
    finally:
        srv.stop()
        redis.terminate()
        redis.wait(10)


def test_readyz_while_draining():
    srv = server()
    assert srv.request("GET", "/readyz")[0] == 200
    # Requests begun before SIGTERM and finished after it: a probe still answers.
    socks = []
    for path in ("/readyz", "/healthz"):
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n".encode())
        socks.append(s)
    time.sleep(0.1)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    answers = []
    for s in socks:
        s.sendall(b"\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        answers.append(data.decode())
    assert answers[0].startswith("HTTP/1.1 503 "), answers[0]
    assert answers[0].endswith("not ready: draining: a shutdown has begun\n"), answers[0]
    assert answers[1].startswith("HTTP/1.1 200 ") and answers[1].endswith("\r\n\r\nok\n"), answers[1]
    assert srv.proc.wait(10) == 0


sys.exit(1 if asyncio.run(harness.run(globals(), __file__)) else 0)
