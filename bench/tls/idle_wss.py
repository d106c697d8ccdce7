"""Server memory per idle TLS WebSocket subscriber, against plaintext in the same run.

Usage: bench/tls/idle_wss.py [--bin target/release/edgecomet] [--conns 5000] [--repeat 3]
                             [--transport ws|sse|longpoll] [--nchan]

Makes a CA and a P-256 certificate with the openssl CLI (in a temporary directory), then per
repetition starts a fresh server (`--workers 2 --ws-ping-interval 0`, plaintext and TLS
listeners), opens and closes 100 warm-up subscribers, reads the server's PSS, opens --conns
subscribers over TLS and over plaintext (wss:// and ws://, or an SSE stream / a held JSON
long-poll over https:// and http://), waits 3 s and reads the PSS again; prints the growth per
connection for each and the medians. Clients are Python `websockets` and asyncio streams (run
it with the venv test.sh makes: .tools/py3/bin/python). Needs open files for --conns clients
and the server.

--nchan (WebSocket only): nginx + nchan in the same run, over TLS and plaintext on the same
certificate, with nginx's TLS defaults and bench/compare/nchan.conf's settings (2 workers); its
PSS is the sum over the master and its workers (Debian packages nginx, libnginx-mod-nchan).
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
ap.add_argument("--nchan", action="store_true")
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


NCHAN_CONF = """
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 2;
worker_rlimit_nofile 19000;
pid logs/nginx.pid;
error_log logs/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    nchan_max_reserved_memory 32M;
    server {
        listen 127.0.0.1:PLAIN reuseport backlog=4096;
        listen 127.0.0.1:TLS ssl reuseport backlog=4096;
        ssl_certificate CERT;
        ssl_certificate_key KEY;
        nchan_message_buffer_length 10;
        nchan_message_timeout 60s;
        nchan_subscriber_first_message newest;
        location ~ ^/sub/([\\w.:@~-]+)$ { nchan_subscriber websocket; nchan_channel_id $1; }
        location ~ ^/pub/([\\w.:@~-]+)$ { nchan_publisher; nchan_channel_id $1; }
    }
}
"""


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree_pss(pid):
    total = pss(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    return total + sum(tree_pss(k) for k in kids)


async def one_nchan(tls):
    import os
    prefix = tempfile.mkdtemp(prefix="nchan-", dir=DIR)
    for d in ("logs", "tmp"):
        os.makedirs(f"{prefix}/{d}")
    plain_port, tls_port = free_port(), free_port()
    conf = (NCHAN_CONF.replace("PLAIN", str(plain_port)).replace("TLS", str(tls_port))
            .replace("CERT", f"{DIR}/cert.pem").replace("KEY", f"{DIR}/key.pem"))
    with open(f"{prefix}/nginx.conf", "w") as f:
        f.write(conf)
    srv = subprocess.Popen(["nginx", "-c", f"{prefix}/nginx.conf", "-p", f"{prefix}/", "-e",
                            f"{prefix}/logs/error.log", "-g", "daemon off;"])
    try:
        port = tls_port if tls else plain_port
        url = f"{'wss' if tls else 'ws'}://localhost:{port}/sub/idle"
        kw = {"ssl": CTX} if tls else {}
        for _ in range(200):
            try:
                c = await websockets.connect(url, ping_interval=None, **kw)
                break
            except OSError:
                await asyncio.sleep(0.05)
        await c.close()
        warm = await asyncio.gather(*[websockets.connect(url, ping_interval=None, **kw)
                                      for _ in range(100)])
        for c in warm:
            await c.close()
        await asyncio.sleep(2)
        p0 = tree_pss(srv.pid)
        conns = []
        for _ in range(0, args.conns, 100):
            conns += await asyncio.gather(*[websockets.connect(
                url, ping_interval=None, max_queue=1, **kw) for _ in range(100)])
        await asyncio.sleep(3)
        p1 = tree_pss(srv.pid)
        for c in conns:
            c.transport.abort()
        return (p1 - p0) / args.conns
    finally:
        srv.terminate()
        srv.wait(10)


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
    if args.nchan:
        n = {"plain": [], "tls": []}
        for r in range(args.repeat):
            for tls_ in (False, True):
                b = await one_nchan(tls_)
                n["tls" if tls_ else "plain"].append(b)
                print(f"run {r + 1} nginx+nchan {'TLS  ' if tls_ else 'plain'}: {b:.0f} B/conn",
                      flush=True)
        print(f"nginx+nchan: {args.conns} idle ws subscribers, median PSS growth (master and "
              f"workers): plaintext {statistics.median(n['plain']):.0f} B/conn, TLS "
              f"{statistics.median(n['tls']):.0f} B/conn")


asyncio.run(main())
