"""Server memory per idle TLS WebSocket subscriber, against plaintext in the same run.

Usage: bench/tls/idle_wss.py [--bin target/release/edgecomet] [--conns 5000] [--repeat 3]
                             [--transport ws|sse|longpoll]

Makes a CA and a P-256 certificate with the openssl CLI (in a temporary directory), then per
repetition starts a fresh server (`--workers 2 --ws-ping-interval 0`, plaintext and TLS
listeners), opens and closes 100 warm-up subscribers, reads the server's PSS, opens --conns
subscribers over TLS and over plaintext (wss:// and ws://, or an SSE stream / a held JSON
long-poll over https:// and http://), waits 3 s and reads the PSS again; prints the growth per
connection for each and the medians. Clients are Python `websockets` and asyncio streams (run
it with the venv test.sh makes: .tools/py3/bin/python). Needs open files for --conns clients
and the server.
"""

import argparse
import asyncio
import re
import resource
import ssl
import statistics
import subprocess
import tempfile
import time

import websockets

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/edgecomet")
ap.add_argument("--conns", type=int, default=5000)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--transport", choices=["ws", "sse", "longpoll"], default="ws")
args = ap.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

DIR = tempfile.mkdtemp(prefix="edgecomet-idle-wss-")


def sh(*a):
    subprocess.run(a, check=True, capture_output=True)


sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
   "-keyout", f"{DIR}/ca.key", "-out", f"{DIR}/ca.pem", "-days", "2", "-subj", "/CN=bench CA")
sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
   "-keyout", f"{DIR}/key.pem", "-out", f"{DIR}/srv.csr", "-subj", "/CN=localhost")
with open(f"{DIR}/ext.cnf", "w") as f:
    f.write("subjectAltName=DNS:localhost\n")
sh("openssl", "x509", "-req", "-in", f"{DIR}/srv.csr", "-CA", f"{DIR}/ca.pem", "-CAkey",
   f"{DIR}/ca.key", "-CAcreateserial", "-out", f"{DIR}/cert.pem", "-days", "2", "-extfile",
   f"{DIR}/ext.cnf")
CTX = ssl.create_default_context(cafile=f"{DIR}/ca.pem")


def pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss")


async def one(tls):
    log = open(f"{DIR}/server.log", "w+")
    srv = subprocess.Popen(
        [args.bin, "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--workers", "2",
         "--ws-ping-interval", "0", "--tls-cert", f"{DIR}/cert.pem", "--tls-key",
         f"{DIR}/key.pem"], stderr=log)
    try:
        for _ in range(200):
            log.seek(0)
            m = re.search(r"listening on (\S+) and (\S+) \(TLS\)", log.read())
            if m:
                break
            time.sleep(0.05)
        port = (m.group(2) if tls else m.group(1)).rsplit(":", 1)[1]
        url = f"{'wss' if tls else 'ws'}://localhost:{port}/sub/idle"
        kw = {"ssl": CTX} if tls else {}

        async def http_sub():
            # An SSE stream, or a long-poll held by the server: the request, then only its
            # answer's head (SSE) or nothing (the poll) is read.
            r, w = await asyncio.open_connection("127.0.0.1", int(port), **(
                {"ssl": CTX, "server_hostname": "localhost"} if tls else {}))
            if args.transport == "sse":
                w.write(b"GET /sub/idle?transport=sse HTTP/1.1\r\nHost: x\r\n\r\n")
                await r.readuntil(b"\r\n\r\n")
            else:
                w.write(b"GET /sub/idle HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n")
                await w.drain()
            return w

        async def batch(n):
            if args.transport != "ws":
                return await asyncio.gather(*[http_sub() for _ in range(n)])
            return await asyncio.gather(*[websockets.connect(
                url, ping_interval=None, max_queue=1, **kw) for _ in range(n)])

        warm = await batch(100)
        for c in warm:
            if args.transport == "ws":
                await c.close()
            else:
                c.close()
        await asyncio.sleep(2)
        p0 = pss(srv.pid)
        conns = []
        for _ in range(0, args.conns, 100):
            conns += await batch(100)
        await asyncio.sleep(3)
        p1 = pss(srv.pid)
        for c in conns:
            c.transport.abort()
        return (p1 - p0) / args.conns
    finally:
        srv.terminate()
        srv.wait(10)


async def main():
    res = {"plain": [], "tls": []}
    for r in range(args.repeat):
        for tls in (False, True):
            b = await one(tls)
            res["tls" if tls else "plain"].append(b)
            print(f"run {r + 1} {args.transport} {'TLS  ' if tls else 'plain'}: {b:.0f} B/conn",
                  flush=True)
    plain, tls = statistics.median(res["plain"]), statistics.median(res["tls"])
    print(f"idle_wss: {args.conns} idle {args.transport} subscribers, median PSS growth: "
          f"plaintext {plain:.0f} B/conn, TLS {tls:.0f} B/conn (TLS adds {tls - plain:.0f} B)")


asyncio.run(main())
