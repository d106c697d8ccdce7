"""End-to-end tests of a running edgecomet with the Python `websockets` client.

Usage: test_server.py HOST:PORT   (the server must run with --workers 2 --max-queued-bytes 65536)

Each test prints one line; the last line is "N passed, N failed".
"""

import asyncio
import json
import socket
import sys
import urllib.error
import urllib.request

import websockets

ADDR = sys.argv[1]
BASE = f"http://{ADDR}"
WS = f"ws://{ADDR}"


def publish(channel, body):
    req = urllib.request.Request(f"{BASE}/pub/{channel}", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status
        return json.loads(r.read())


def stats():
    with urllib.request.urlopen(f"{BASE}/stats", timeout=5) as r:
        return json.loads(r.read())


async def test_fanout_across_workers():
    subs = [await websockets.connect(f"{WS}/sub/py-fan") for _ in range(200)]
    # Subscriptions are in place once the 101 arrived; both workers must hold some of them.
    per_worker = [w["conns_ws_sub"] for w in stats()["workers"]]
    assert all(n > 0 for n in per_worker), f"subscribers not spread over workers: {per_worker}"
    msgs = [f"message {i} ✓" for i in range(50)]
    for m in msgs:
        reply = publish("py-fan", m)
        assert reply["ok"] is True
    for s in subs:
        got = [await asyncio.wait_for(s.recv(), 5) for _ in msgs]
        assert got == msgs, "lost, duplicated or reordered messages"
    for s in subs:
        await s.close()


async def test_echo_text_and_binary():
    async with websockets.connect(f"{WS}/echo", max_size=None) as e:
        for payload in ["", "hello", "κόσμε" * 1000, b"\x00\xff" * 40000]:
            await e.send(payload)
            assert await asyncio.wait_for(e.recv(), 5) == payload


async def test_clean_close_code():
    e = await websockets.connect(f"{WS}/echo")
    await e.close(code=4000, reason="bye")
    assert e.close_code == 4000, e.close_code


async def test_message_too_big_gets_1009():
    # The server runs with the default --max-message-bytes (1 MiB).
    e = await websockets.connect(f"{WS}/echo", max_size=None)
    await e.send("x" * ((1 << 20) + 1))
    try:
        await asyncio.wait_for(e.recv(), 5)
        raise AssertionError("oversized message was echoed")
    except websockets.ConnectionClosed as c:
        assert c.rcvd is not None and c.rcvd.code == 1009, c


async def test_slow_consumer_closed_others_keep_receiving():
    # A raw subscriber that never reads, with a tiny receive buffer.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((ADDR.split(":")[0], int(ADDR.split(":")[1])))
    raw.sendall(
        b"GET /sub/py-slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    good = await websockets.connect(f"{WS}/sub/py-slow", max_queue=None)
    before = stats()["total"]["slow_consumers"]
    # More than the kernel's send buffer can hide (tcp_wmem max is 4 MiB) plus the 64 KiB queue.
    n = 500
    body = "y" * 16000

    def publish_all():
        for i in range(n):
            publish("py-slow", f"{i}:{body}")

    # Publish from a thread so the healthy subscriber reads while messages flow.
    pub = asyncio.create_task(asyncio.to_thread(publish_all))
    for i in range(n):
        m = await asyncio.wait_for(good.recv(), 10)
        assert m.startswith(f"{i}:"), "healthy subscriber lost a message"
    await pub
    after = stats()["total"]
    assert after["slow_consumers"] == before + 1, after
    assert after["drops"] > 0, after
    # The slow one's stream ends with close 1008 after whatever it was sent before.
    raw.settimeout(5)
    data = b""
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            break
        data += chunk
    close = data.rfind(b"\x88")
    assert close >= 0 and data[close + 2 : close + 4] == (1008).to_bytes(2, "big"), data[-40:]
    raw.close()
    await good.close()


def test_limits_and_errors():
    cases = [
        ("GET", "/nope", None, {}, 404),
        ("GET", "/pub/x", None, {}, 405),
        ("POST", "/pub/bad%20name", b"x", {}, 400),
        ("POST", "/pub/x", b"\xff\xfe", {}, 400),
        ("POST", "/pub/x", b"x" * ((1 << 20) + 1), {}, 413),
        ("GET", "/sub/x?cursor=abc", None, {}, 400),
        ("GET", "/sub/x?callback=a%0d", None, {}, 400),
        ("GET", "/stats", None, {"X-Big": "a" * 9000}, 431),
    ]
    for method, path, body, headers, want in cases:
        req = urllib.request.Request(BASE + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (ConnectionResetError, urllib.error.URLError) as e:
            raise AssertionError(f"{method} {path}: connection error {e}") from e
        assert status == want, f"{method} {path}: got {status}, want {want}"
    # urllib forces "Connection: close", so the handshake refusals go over a raw socket.
    for version, want in [(b"8", b"426"), (b"14", b"426")]:
        resp = raw_exchange(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "
            + version
            + b"\r\n\r\n"
        )
        assert resp.startswith(b"HTTP/1.1 " + want), resp[:60]
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in resp, resp
    resp = raw_exchange(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert resp.startswith(b"HTTP/1.1 400"), resp[:60]


def test_longpoll_and_sse_with_urllib():
    # Long-poll: two messages published before the poll come back in one JSON answer.
    ids = [publish("py-lp", m)["id"] for m in ("a", "b\nc")]
    req = urllib.request.Request(
        BASE + "/sub/py-lp?cursor=0", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.loads(r.read())
        assert r.headers["Edgecomet-Cursor"] == ids[1], r.headers
    assert [m["data"] for m in body["messages"]] == ["a", "b\nc"], body
    assert body["cursor"] == ids[1]
    # SSE: resume after the first id; the second message arrives with its two data lines.
    req = urllib.request.Request(
        BASE + "/sub/py-lp",
        headers={"Accept": "text/event-stream", "Last-Event-ID": ids[0]},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = []
        while b"data: c\n" not in lines:
            lines.append(r.readline())
    assert lines[-3:] == [f"id: {ids[1]}\n".encode(), b"data: b\n", b"data: c\n"], lines


def raw_exchange(request):
    """Sends `request` on a fresh connection and returns everything until the server closes."""
    host, port = ADDR.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


async def main():
    tests = [
        test_fanout_across_workers,
        test_echo_text_and_binary,
        test_clean_close_code,
        test_message_too_big_gets_1009,
        test_slow_consumer_closed_others_keep_receiving,
        test_limits_and_errors,
        test_longpoll_and_sse_with_urllib,
    ]
    passed = failed = 0
    for t in tests:
        try:
            if asyncio.iscoroutinefunction(t):
                await t()
            else:
                await asyncio.to_thread(t)
            print(f"ok   {t.__name__}")
            passed += 1
        except Exception as e:  # report every test, then fail the run
            print(f"FAIL {t.__name__}: {type(e).__name__}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
