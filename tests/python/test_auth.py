"""Authorization end to end with clients we did not write (docs/auth.md): subscribe tokens
minted by PyJWT (HS256, RS256 and ES256 with keys made by `cryptography`) on the WebSocket
(Python `websockets`), SSE and long-poll transports, each token case with its status,
`WWW-Authenticate` and `/stats` counter; a live subscription ended at its token's `exp`; publish
keys and their rotation by SIGHUP; private push addresses and their rate limit.

Usage: test_auth.py PATH-TO-EDGECOMET

Each server is started here on a free port (`--listen 127.0.0.1:0`) with the flags its tests
need, and stopped at the end; keys and logs live in a temporary directory, removed at the end.
Each test prints one line; the last line is "N passed, N failed".
"""

import asyncio
import atexit
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import jwt
import websockets

import harness  # tests/python/harness.py: the runner shared by these files
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

BIN = os.path.abspath(sys.argv[1])
DIR = tempfile.mkdtemp(prefix="edgecomet-auth-py-")
SERVERS = {}


@atexit.register
def cleanup():
    """Every server stopped, the temporary directory removed: whatever happened."""
    for s in SERVERS.values():
        s.stop()
    shutil.rmtree(DIR, ignore_errors=True)


# ---- keys ------------------------------------------------------------------------------------
SECRET = "python-test-secret-" + os.urandom(16).hex()  # 51 bytes, >= 32
OTHER_SECRET = "some-other-secret-that-is-long-enough-" + os.urandom(8).hex()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_OTHER = ec.generate_private_key(ec.SECP256R1())


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


RSA_PUB = f"{DIR}/rsa.pub.pem"
EC_PUB = f"{DIR}/ec.pub.pem"
with open(RSA_PUB, "wb") as f:
    f.write(public_pem(RSA_KEY))
with open(EC_PUB, "wb") as f:
    f.write(public_pem(EC_KEY))


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header, claims, key=None):
    """A JWT put together without PyJWT: PyJWT refuses to sign `alg: none` tokens by default
    and to use a PEM public key as an HMAC secret, which is what the attacks below need."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def hs256(claims, secret=SECRET):
    return jwt.encode(claims, secret, algorithm="HS256")


def rs256(claims, key=RSA_KEY):
    return jwt.encode(claims, key, algorithm="RS256")


def es256(claims, key=EC_KEY):
    return jwt.encode(claims, key, algorithm="ES256")


# ---- servers ---------------------------------------------------------------------------------
def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECOMET_")}
    env.update(extra)
    return env


class Server:
    def __init__(self, name, args, env=None):
        self.log_path = f"{DIR}/{name}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--workers", "2", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            env=env or clean_env())
        deadline = time.monotonic() + 10
        while True:
            m = re.search(r"listening on (\S+) with \d+ worker", self.text())
            if m:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                said = self.text()[-400:]
                self.stop()
                raise RuntimeError(f"server {name} did not start: {said}")
            time.sleep(0.05)
        self.addr = m.group(1)
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def stats(self):
        return json.loads(request(self, "GET", "/stats")[2])["total"]

    def stop(self):
        if self.log.closed:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def server(name):
    """The server of that name, started the first time it is asked for."""
    if name not in SERVERS:
        args, env = {
            # The secret only in the environment: out of argv (test_token_secret_stays_out_of_argv).
            "hs": ([], clean_env(EDGECOMET_TOKEN_SECRET=SECRET)),
            "rs": (["--token-public-key", RSA_PUB], None),
            "es": (["--token-public-key", EC_PUB], None),
            "keys": (["--publish-key-file", KEY_FILE], None),
            "push": (["--push-rate", "1", "--push-burst", "2", "--push-max-bytes", "4096",
                      "--publish-key", PUSH_SERVER_PUBLISH_KEY], None),
        }[name]
        SERVERS[name] = Server(name, args, env)
    return SERVERS[name]


def request(srv, method, path, body=None, headers=None, source=None, timeout=5):
    """One request on a fresh connection: (status, headers, body)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def publish(srv, channel, message, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, _, body = request(srv, "POST", f"/pub/{channel}", message.encode(), headers)
    assert status == 200, (status, body)
    return json.loads(body)


def wait_until(cond, timeout, what):
    """Polls `cond` every 50 ms; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


SEQ = iter(range(1, 1 << 30))


def unique(what):
    return f"{what} #{next(SEQ)} ✓"


def ws_connect(url, **kw):
    """The `websockets` client, never through a proxy the environment may name."""
    return websockets.connect(url, open_timeout=5, proxy=None, **kw)


# ---- the three transports, one attempt each --------------------------------------------------
async def ws_attempt(srv, channel, token):
    """A WebSocket subscription with `?token=`; (status, headers, ws or None)."""
    q = f"?token={token}" if token else ""
    try:
        ws = await ws_connect(f"ws://{srv.addr}/sub/{channel}{q}")
    except websockets.exceptions.InvalidStatus as e:
        return e.response.status_code, e.response.headers, None
    return 101, None, ws


async def ws_case(srv, channel, token):
    status, headers, ws = await ws_attempt(srv, channel, token)
    if ws is None:
        return status, headers.get("WWW-Authenticate")
    try:
        msg = unique("ws")
        publish(srv, channel, msg)
        got = await asyncio.wait_for(ws.recv(), 5)
        assert got == msg, f"WebSocket received {got!r}, not {msg!r}"
    finally:
        await ws.close()
    return 101, None


def sse_case(srv, channel, token, header=False):
    """An EventSource-like GET with `?transport=sse&token=` (or `Authorization: Bearer`);
    reads a published message."""
    q = f"&token={token}" if token and not header else ""
    headers = {"Authorization": f"Bearer {token}"} if token and header else {}
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        c.request("GET", f"/sub/{channel}?transport=sse{q}", headers=headers)
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return r.status, r.headers.get("WWW-Authenticate")
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/event-stream"), f"SSE content type {ctype!r}"
        msg = unique("sse")
        publish(srv, channel, msg)
        want = f"data: {msg}"
        while (line := r.readline().decode()) != "":
            if line.rstrip("\n") == want:
                return 200, None
        raise AssertionError(f"SSE stream ended without {want!r}")
    finally:
        c.close()


def poll_case(srv, channel, token):
    """A long-poll with `Authorization: Bearer`; held, then answered with a published message."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        held = srv.stats()["conns_poll"]
        c.request("GET", f"/sub/{channel}?transport=longpoll", headers=headers)
        # Either an answer (a refusal) comes, or the poll is held: seen in the gauge.
        wait_until(lambda: select.select([c.sock], [], [], 0)[0]
                   or srv.stats()["conns_poll"] == held + 1, 5, "an answer or a held poll")
        if select.select([c.sock], [], [], 0)[0]:
            r = c.getresponse()
            body = r.read()
            assert r.status != 200, f"a long-poll answered 200 at once: {body!r}"
            return r.status, r.headers.get("WWW-Authenticate")
        msg = unique("poll")
        publish(srv, channel, msg)
        r = c.getresponse()
        body = json.loads(r.read())
        assert r.status == 200, (r.status, body)
        assert msg in [m["data"] for m in body["messages"]], body
        return 200, None
    finally:
        c.close()


COUNTERS = ["auth_tokens_accepted", "auth_token_missing", "auth_token_malformed",
            "auth_token_bad_signature", "auth_token_expired", "auth_token_not_yet_valid",
            "auth_token_channel"]

MISSING = 'Bearer realm="edgecomet"'
INVALID = 'error="invalid_token"'
EXPIRED = 'error_description="token expired"'
SCOPE = 'error="insufficient_scope"'


async def check_cases(srv, cases):
    """Every case on every transport; all the differences, not just the first."""
    problems = []
    for what, token, want, www, counter in cases:
        before = srv.stats()
        got = {}
        for transport, attempt in (("ws", ws_case), ("sse", sse_case), ("poll", poll_case)):
            try:
                r = attempt(srv, "news", token)
                got[transport] = await r if asyncio.iscoroutine(r) else r
            except Exception as e:  # noqa: BLE001 - reported below with the case
                problems.append(f"{what}/{transport}: {type(e).__name__}: {e}")
        for transport, (status, header) in got.items():
            # Accepted: the WebSocket's 101, the HTTP transports' 200.
            expect = 200 if want == 101 and transport != "ws" else want
            if status != expect:
                problems.append(f"{what}/{transport}: status {status}, want {expect}")
            if want == 101:
                continue
            if header is None or not header.startswith(MISSING):
                problems.append(f"{what}/{transport}: WWW-Authenticate {header!r}")
            elif www is None and "error=" in header:
                problems.append(f"{what}/{transport}: WWW-Authenticate {header!r} has an error")
            elif www is not None and www not in header:
                problems.append(f"{what}/{transport}: WWW-Authenticate {header!r} lacks {www}")
        after = srv.stats()
        for c in COUNTERS:
            delta = after[c] - before[c]
            if delta != (3 if c == counter else 0):
                problems.append(f"{what}: {c} went up by {delta}")
    assert not problems, "; ".join(problems)


def cases(sign, other_key_sign, other_family):
    """(what, token, status, WWW-Authenticate part, counter) for one kind of signature."""
    t = int(time.time())
    valid = sign({"exp": t + 60, "sub": "py", "channels": ["news"]})
    h, _, s = valid.split(".")
    tampered = h + "." + b64(json.dumps({"exp": t + 60, "channels": ["**"]}).encode()) + "." + s
    return [
        ("valid", valid, 101, None, "auth_tokens_accepted"),
        ("valid, channels a string pattern", sign({"exp": t + 60, "channels": "*"}), 101,
         None, "auth_tokens_accepted"),
        ("wrong channel", sign({"exp": t + 60, "channels": ["news/*", "sport", "new*"]}),
         403, SCOPE, "auth_token_channel"),
        ("no token", "", 401, None, "auth_token_missing"),
        ("expired", sign({"exp": t - 1, "channels": ["news"]}), 401, EXPIRED,
         "auth_token_expired"),
        ("nbf in the future", sign({"exp": t + 60, "nbf": t + 30, "channels": ["news"]}),
         401, INVALID, "auth_token_not_yet_valid"),
        ("bad signature (another key)", other_key_sign({"exp": t + 60, "channels": ["news"]}),
         401, INVALID, "auth_token_bad_signature"),
        ("bad signature (claims changed)", tampered, 401, INVALID, "auth_token_bad_signature"),
        ("alg none", by_hand({"alg": "none", "typ": "JWT"}, {"exp": t + 60, "channels": ["news"]}),
         401, INVALID, "auth_token_malformed"),
        ("a token of a family no key is for", other_family({"exp": t + 60, "channels": ["news"]}),
         401, INVALID, "auth_token_malformed"),
        ("no exp", sign({"channels": ["news"]}), 401, INVALID, "auth_token_malformed"),
        ("exp not a number", sign({"exp": str(t + 60), "channels": ["news"]}), 401, INVALID,
         "auth_token_malformed"),
        ("garbage", "not-a-jwt", 401, INVALID, "auth_token_malformed"),
        ("garbage with two dots", "abc.def.ghi", 401, INVALID, "auth_token_malformed"),
    ]


# ---- tests -----------------------------------------------------------------------------------
async def test_hs256_pyjwt_tokens_every_case_every_transport():
    await check_cases(server("hs"), cases(hs256, lambda c: hs256(c, OTHER_SECRET), rs256))


async def test_rs256_pyjwt_tokens_every_case_every_transport():
    await check_cases(server("rs"), cases(rs256, lambda c: rs256(c, RSA_OTHER), es256))


async def test_es256_pyjwt_tokens_every_case_every_transport():
    await check_cases(server("es"), cases(es256, lambda c: es256(c, EC_OTHER), hs256))


async def test_hs_rs_confusion_is_refused():
    # Only the RSA public key is configured: an HS256 token whose HMAC key is that public key's
    # PEM (byte for byte as the server reads it, and without its last newline) is refused.
    t = int(time.time())
    claims = {"exp": t + 60, "channels": ["news"]}
    pem = public_pem(RSA_KEY)
    with open(RSA_PUB, "rb") as f:
        assert f.read() == pem
    confused = [by_hand({"alg": "HS256", "typ": "JWT"}, claims, key) for key in (pem, pem.strip())]
    await check_cases(server("rs"), [
        ("HS256 keyed with the RSA public key PEM", confused[0], 401, INVALID,
         "auth_token_malformed"),
        ("HS256 keyed with the RSA public key PEM, stripped", confused[1], 401, INVALID,
         "auth_token_malformed"),
    ])
    # The same against the EC key.
    ec_confused = by_hand({"alg": "HS256", "typ": "JWT"}, claims, public_pem(EC_KEY))
    await check_cases(server("es"), [
        ("HS256 keyed with the EC public key PEM", ec_confused, 401, INVALID,
         "auth_token_malformed"),
    ])


def test_token_secret_stays_out_of_argv():
    srv = server("hs")
    with open(f"/proc/{srv.proc.pid}/cmdline", "rb") as f:
        argv = f.read()
    assert SECRET.encode() not in argv, argv
    assert b"--token-secret" not in argv, argv
    assert SECRET not in srv.text(), "the secret is in the log"
    assert "subscribing needs a token" in srv.text(), srv.text()
    # ... and it is the server's secret: a token signed with it is accepted, one signed with
    # another secret is not.
    t = int(time.time())
    assert sse_case(srv, "news", hs256({"exp": t + 60, "channels": ["news"]}))[0] == 200
    assert sse_case(srv, "news", hs256({"exp": t + 60, "channels": ["news"]},
                                       OTHER_SECRET))[0] == 401


async def test_websocket_token_in_authorization_header():
    srv = server("hs")
    tok = hs256({"exp": int(time.time()) + 60, "channels": ["news"]})
    async with ws_connect(f"ws://{srv.addr}/sub/news",
                          additional_headers={"Authorization": f"Bearer {tok}"}) as ws:
        msg = unique("ws header")
        publish(srv, "news", msg)
        assert await asyncio.wait_for(ws.recv(), 5) == msg
    # An SSE stream with the header instead of ?token= too.
    assert sse_case(srv, "news", tok, header=True) == (200, None)


async def test_expiry_closes_live_subscriptions():
    srv = server("hs")
    before = srv.stats()["auth_expired_closes"]
    exp = int(time.time()) + 3
    tok = hs256({"exp": exp, "channels": ["live"]})
    ws = await ws_connect(f"ws://{srv.addr}/sub/live?token={tok}")
    sse = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    sse.request("GET", f"/sub/live?transport=sse&token={tok}")
    sse_r = sse.getresponse()
    assert sse_r.status == 200, sse_r.status

    def read_sse():
        lines = []
        while (line := sse_r.readline().decode()) != "":
            lines.append(line)
        return "".join(lines), time.time()

    sse_task = asyncio.create_task(asyncio.to_thread(read_sse))
    auth = {"Authorization": f"Bearer {tok}", "Accept": "application/json"}
    poll = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    held = srv.stats()["conns_poll"]
    poll.request("GET", "/sub/live?transport=longpoll", headers=auth)
    wait_until(lambda: srv.stats()["conns_poll"] == held + 1, 5, "the poll is held")
    msg = unique("before expiry")
    publish(srv, "live", msg)
    assert await asyncio.wait_for(ws.recv(), 2) == msg
    r = poll.getresponse()
    body = json.loads(r.read())
    assert r.status == 200 and body["messages"][0]["data"] == msg, body
    # Poll again with the same token on the same connection: held until the token ends.
    poll.request("GET", "/sub/live?transport=longpoll", headers=auth)

    def poll_answer():
        r = poll.getresponse()
        return r.status, r.headers.get("WWW-Authenticate"), r.read(), time.time()

    poll_task = asyncio.create_task(asyncio.to_thread(poll_answer))
    try:
        got = await asyncio.wait_for(ws.recv(), exp - time.time() + 3)
        raise AssertionError(f"a message instead of the close: {got!r}")
    except websockets.exceptions.ConnectionClosed as e:
        closed_at = time.time()
        assert e.rcvd is not None, f"no close frame from the server: {e}"
        assert (e.rcvd.code, e.rcvd.reason) == (4001, "token expired"), e.rcvd
    assert closed_at <= exp + 0.2, f"closed at {closed_at:.3f}, after exp {exp}"
    assert closed_at >= exp - 1.5, f"closed at {closed_at:.3f}, long before exp {exp}"
    text, sse_end = await asyncio.wait_for(sse_task, 5)
    assert f"data: {msg}\n" in text, text
    assert text.endswith("event: expired\ndata: token expired\n\n"), text
    assert exp - 1.5 <= sse_end <= exp + 0.2, f"SSE ended at {sse_end:.3f}, exp {exp}"
    status, www, pbody, poll_end = await asyncio.wait_for(poll_task, 5)
    assert status == 401, (status, pbody)
    assert www and EXPIRED in www, www
    assert exp - 1.5 <= poll_end <= exp + 0.2, f"poll answered at {poll_end:.3f}, exp {exp}"
    sse.close()
    poll.close()
    assert srv.stats()["auth_expired_closes"] - before == 3
    # Coming back with the same token: refused as expired.
    status, headers, _ = await ws_attempt(srv, "live", tok)
    assert status == 401 and EXPIRED in headers.get("WWW-Authenticate", ""), (status, headers)


async def test_push_new_and_push_subscription_need_a_token():
    srv = server("hs")
    status, headers, _ = request(srv, "POST", "/push/new")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith(MISSING), status
    # Any valid token makes an address, whatever its channels; subscribing to the address
    # needs a valid token, but not one that names it.
    tok = hs256({"exp": int(time.time()) + 60, "channels": []})
    status, _, body = request(srv, "POST", "/push/new", headers={"Authorization": "Bearer " + tok})
    assert status == 200, (status, body)
    p = json.loads(body)
    status, headers, _ = await ws_attempt(srv, p["subscribe"][len("/sub/"):], "")
    assert status == 401, status
    async with ws_connect(f"ws://{srv.addr}{p['subscribe']}?token={tok}") as ws:
        status, _, _ = request(srv, "POST", p["send"], b"to a private address")
        assert status == 200, status
        assert await asyncio.wait_for(ws.recv(), 5) == "to a private address"


KEYS = ["first-publish-key-" + os.urandom(8).hex(), "second-publish-key-" + os.urandom(8).hex()]
NEW_KEY = "rotated-publish-key-" + os.urandom(8).hex()
KEY_FILE = f"{DIR}/publish.keys"
with open(KEY_FILE, "w") as f:
    f.write(f"# publishers\n{KEYS[0]}\n\n{KEYS[1]}\n")


def pub_status(srv, key, conn=None):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    c = conn or http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    c.request("POST", "/pub/news", body=b"hi", headers=headers)
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, r.headers, body, r.will_close


def rewrite(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def test_publish_keys():
    srv = server("keys")
    before = srv.stats()["auth_publish_refused"]
    # One keep-alive connection: a refusal keeps it.
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    status, headers, body, closes = pub_status(srv, None, c)
    assert status == 401, (status, body)
    assert headers.get("WWW-Authenticate", "").startswith("Bearer"), headers
    assert not closes, "the connection was closed after a 401"
    status, headers, body, closes = pub_status(srv, "wrong-publish-key-0123456789", c)
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), status
    assert not closes
    sock = c.sock
    for k in KEYS:
        status, _, body, _ = pub_status(srv, k, c)
        assert status == 200 and json.loads(body)["ok"] is True, (status, body)
    assert c.sock is sock, "http.client had to reconnect"
    # The scheme's case does not matter; a longer or shorter key is another key.
    c.request("POST", "/pub/news", body=b"hi", headers={"Authorization": "bearer " + KEYS[0]})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    assert pub_status(srv, KEYS[0] + "x")[0] == 401
    assert pub_status(srv, KEYS[0][:-1])[0] == 401
    c.close()
    assert srv.stats()["auth_publish_refused"] - before == 4


async def test_publish_keys_leave_subscribing_open():
    # No token key on this server: a subscriber needs nothing, and gets what a keyed publisher
    # sends.
    srv = server("keys")
    status, _, ws = await ws_attempt(srv, "news", "")
    assert status == 101, status
    async with ws:
        msg = unique("keyed")
        publish(srv, "news", msg, key=KEYS[1])
        assert await asyncio.wait_for(ws.recv(), 5) == msg


def test_publish_key_rotation_by_sighup():
    srv = server("keys")
    reloaded = srv.text().count("keys reloaded")
    # 1. Add the new key next to the second one (the first is dropped), SIGHUP.
    rewrite(KEY_FILE, f"{KEYS[1]}\n{NEW_KEY}\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: pub_status(srv, NEW_KEY)[0] == 200, 5, "the new key is accepted")
    assert srv.text().count("keys reloaded") == reloaded + 1, srv.text()
    assert pub_status(srv, KEYS[0])[0] == 401, "the dropped key is still accepted"
    assert pub_status(srv, KEYS[1])[0] == 200, "the kept key is refused"
    # 2. Publishers moved over: remove the old key, SIGHUP.
    rewrite(KEY_FILE, f"# only the new one\n{NEW_KEY}\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: pub_status(srv, KEYS[1])[0] == 401, 5, "the old key is refused")
    assert pub_status(srv, NEW_KEY)[0] == 200
    assert srv.text().count("keys reloaded") == reloaded + 2, srv.text()
    # 3. A file that does not load (a short key): refused with a log line, the keys stay.
    rewrite(KEY_FILE, "short\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "NOT reloaded" in srv.text(), 5, "the log says NOT reloaded")
    assert pub_status(srv, NEW_KEY)[0] == 200
    assert pub_status(srv, "short")[0] == 401
    assert srv.proc.poll() is None, "SIGHUP stopped the server"
    assert "SIGHUP" in srv.text()


PUSH_SERVER_PUBLISH_KEY = "push-server-publish-key-" + os.urandom(8).hex()


async def test_push_addresses():
    srv = server("push")
    status, headers, body = request(srv, "POST", "/push/new")
    assert status == 200, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    p = json.loads(body)
    a = p["address"]
    assert re.fullmatch(r"[0-9a-f]{32}", a), a
    assert p["channel"] == f"~push/{a}", p
    assert p["subscribe"] == f"/sub/~push/{a}", p
    assert p["send"] == f"/push/{a}", p
    # Another address each time; GET with a callback answers the same as JSONP.
    status, headers, js = request(srv, "GET", "/push/new?callback=made")
    assert status == 200, status
    m = re.fullmatch(rb'made\((\{.*\})\);?\s*', js)
    assert m, js
    assert json.loads(m.group(1))["address"] not in (a, ""), js
    async with ws_connect(f"ws://{srv.addr}{p['subscribe']}") as ws:
        # POST: no publish key needed, knowing the address is enough.
        status, _, body = request(srv, "POST", p["send"], "hello, push ✓".encode())
        assert status == 200 and json.loads(body)["ok"] is True, (status, body)
        assert await asyncio.wait_for(ws.recv(), 5) == "hello, push ✓"
        # GET with ?message= and a JSONP callback.
        q = urllib.parse.urlencode({"message": "hi there & ✓", "callback": "cb"},
                                   quote_via=urllib.parse.quote)
        status, headers, body = request(srv, "GET", f"{p['send']}?{q}")
        assert status == 200, (status, body)
        assert body.startswith(b'cb({"ok":true'), body
        assert await asyncio.wait_for(ws.recv(), 5) == "hi there & ✓"
    # /pub to the private channel still needs the publish key.
    status, headers, _ = request(srv, "POST", f"/pub/~push/{a}", b"x")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), status
    assert publish(srv, f"~push/{a}", "x", key=PUSH_SERVER_PUBLISH_KEY)["ok"]


async def test_push_bad_addresses_are_404():
    srv = server("push")
    for path in ("/sub/~push/x", "/sub/~push/" + "A" * 32, "/sub/~push"):
        status, _, _ = request(srv, "GET", path + "?transport=sse")
        assert status == 404, (path, status)
    status, _, _ = await ws_attempt(srv, "~push/x", "")
    assert status == 404, status
    for path in ("/push/0123", "/push/" + "F" * 32, "/push/" + "0" * 33):
        status, _, _ = request(srv, "POST", path, b"x")
        assert status == 404, (path, status)


def test_push_rate_limit_and_size():
    srv = server("push")
    a = json.loads(request(srv, "POST", "/push/new")[2])["address"]
    before = srv.stats()
    # Too large: 413 (before the rate limit, which it does not use up).
    status, _, _ = request(srv, "POST", f"/push/{a}", b"x" * 4097, source="127.0.0.3")
    assert status == 413, status
    # --push-rate 1 --push-burst 2, from a source of its own (127.0.0.2): two quick sends pass,
    # the third is 429 with Retry-After.
    got = []
    for i in range(3):
        got.append(request(srv, "GET", f"/push/{a}?message=r{i}", source="127.0.0.2"))
    assert [g[0] for g in got] == [200, 200, 429], [(g[0], g[2]) for g in got]
    retry = got[2][1].get("Retry-After")
    assert retry is not None and int(retry) >= 1, got[2][1]
    # Another source has its own bucket.
    assert request(srv, "GET", f"/push/{a}?message=other", source="127.0.0.4")[0] == 200
    after = srv.stats()
    assert after["push_rate_limited"] - before["push_rate_limited"] == 1
    assert after["push_too_large"] - before["push_too_large"] == 1
    assert after["push_messages"] - before["push_messages"] == 3
    # A client that waits as told (Retry-After, 1 s at 1/s) may send again.
    time.sleep(int(retry))
    again = request(srv, "GET", f"/push/{a}?message=again", source="127.0.0.2")
    assert again[0] == 200, again


sys.exit(1 if asyncio.run(harness.run(globals(), __file__)) else 0)
