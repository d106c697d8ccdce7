"""TLS end to end with clients we did not write: Python `websockets` over wss://, Python's
ssl module (versions, ALPN, session reuse) and `openssl s_client` (resumption says "Reused").

Usage: test_tls.py PATH-TO-EDGECOMET

A CA and a certificate for localhost / 127.0.0.1 are made at test time with the openssl CLI, in
a temporary directory; the server is started on free ports with them and stopped at the end.
Each test prints one line; the last line is "N passed, N failed".
"""

import asyncio
import json
import os
import re
import ssl
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

import websockets

import harness  # tests/python/harness.py: the runner shared by these files

BIN = sys.argv[1]
DIR = tempfile.mkdtemp(prefix="edgecomet-tls-py-")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, **kw)


def make_pki():
    ca_key, ca = f"{DIR}/ca.key", f"{DIR}/ca.pem"
    key, csr, cert = f"{DIR}/key.pem", f"{DIR}/srv.csr", f"{DIR}/cert.pem"
    ext = f"{DIR}/ext.cnf"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=edgecomet test CA")
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
       "-out", cert, "-days", "2", "-extfile", ext)
    return ca, cert, key


CA, CERT, KEY = make_pki()
LOG = open(f"{DIR}/server.log", "w+")
SERVER = subprocess.Popen(
    [BIN, "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--workers", "2",
     "--tls-cert", CERT, "--tls-key", KEY],
    stderr=LOG)
for _ in range(200):
    LOG.seek(0)
    m = re.search(r"listening on (\S+) and (\S+) \(TLS\)", LOG.read())
    if m:
        break
    time.sleep(0.05)
else:
    sys.exit("server did not start")
PLAIN, TLS = m.group(1), m.group(2)
PORT = TLS.rsplit(":", 1)[1]
HTTPS = f"https://localhost:{PORT}"
WSS = f"wss://localhost:{PORT}"
CTX = ssl.create_default_context(cafile=CA)


def publish(channel, body):
    req = urllib.request.Request(f"{HTTPS}/pub/{channel}", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5, context=CTX) as r:
        assert r.status == 200, r.status
        return json.loads(r.read())


def stats():
    with urllib.request.urlopen(f"http://{PLAIN}/stats", timeout=5) as r:
        return json.loads(r.read())["total"]


async def test_wss_subscribers_get_every_message():
    subs = [await websockets.connect(f"{WSS}/sub/py-tls?envelope=1", ssl=CTX) for _ in range(50)]
    msgs = [f"message {i} ✓ " + "x" * (i * 500) for i in range(40)]
    for m in msgs:
        publish("py-tls", m)
    for s in subs:
        got = [json.loads(await asyncio.wait_for(s.recv(), 5))["data"] for _ in msgs]
        assert got == msgs
        await s.close()


async def test_wss_echo_large_binary():
    async with websockets.connect(f"{WSS}/echo", ssl=CTX, max_size=2**22) as ws:
        payload = os.urandom(300_000)
        await ws.send(payload)
        assert await asyncio.wait_for(ws.recv(), 5) == payload
        await ws.send("héllo")
        assert await asyncio.wait_for(ws.recv(), 5) == "héllo"


def test_sse_over_https():
    publish("py-sse", "first")
    req = urllib.request.Request(f"{HTTPS}/sub/py-sse?transport=sse&cursor=0")
    with urllib.request.urlopen(req, timeout=5, context=CTX) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = []
        while "data: first" not in lines:
            lines.append(r.readline().decode().rstrip("\n"))


def context(version, alpn=None):
    ctx = ssl.create_default_context(cafile=CA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1, tried on purpose
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def handshake(version, alpn=None, session=None, ctx=None):
    ctx = ctx or context(version, alpn)
    raw = socket.create_connection(("127.0.0.1", int(PORT)), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    # A request and its answer: a TLS 1.3 ticket arrives after the handshake.
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:40]
    info = (s.version(), s.selected_alpn_protocol(), s.session, s.session_reused)
    s.close()
    return info


def test_versions_and_alpn():
    assert handshake(ssl.TLSVersion.TLSv1_3)[0] == "TLSv1.3"
    assert handshake(ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3, ["h2", "http/1.1"])[1] == "http/1.1"
    try:
        handshake(ssl.TLSVersion.TLSv1_1)
    except (ssl.SSLError, OSError):
        pass
    else:
        raise AssertionError("TLS 1.1 was accepted")


def test_python_session_reuse():
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = context(v)  # a session is reused with the context that made it
        _, _, session, _ = handshake(v, ctx=ctx)
        assert handshake(v, session=session, ctx=ctx)[3], f"{v}: not resumed"


def test_openssl_s_client_reused():
    sess = f"{DIR}/sess.pem"
    for v in ("-tls1_2", "-tls1_3"):
        req = b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        # -ign_eof: read until the server closes (after its answer; a TLS 1.3 ticket comes
        # after the handshake, so quitting at the end of stdin could miss it).
        base = ["openssl", "s_client", "-connect", f"127.0.0.1:{PORT}", "-servername",
                "localhost", "-CAfile", CA, v, "-alpn", "http/1.1", "-ign_eof"]
        first = subprocess.run(base + ["-sess_out", sess], input=req, capture_output=True,
                               timeout=10)
        out = first.stdout.decode(errors="replace")
        assert "Verify return code: 0 (ok)" in out, out[-400:]
        assert "ALPN protocol: http/1.1" in out, out[-400:]
        second = subprocess.run(base + ["-sess_in", sess], input=req, capture_output=True,
                                timeout=10)
        out = second.stdout.decode(errors="replace")
        assert "Reused," in out, f"{v}: " + out[-400:]


def test_counters():
    t = stats()
    assert t["tls_handshakes"] > 50, t
    assert t["tls_resumed"] >= 4, t
    assert t["tls_handshake_errors"] >= 1, t  # the TLS 1.1 attempt


try:
    rc = asyncio.run(harness.run(globals(), __file__))
finally:
    SERVER.terminate()
    SERVER.wait(10)
sys.exit(1 if rc else 0)
