"""End-to-end tests of a running edgecomet with the Python `websockets` client.

Usage: test_server.py HOST:PORT   (the server must run with --workers 2 --max-queued-bytes 65536)

Each test prints one line; the last line is "N passed, N failed".
"""

import asyncio
import json
import os
import socket
import sys
import urllib.error
import urllib.request
import zlib

import websockets
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

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


DEFLATE_COUNTERS = [
    "ws_deflate_agreed",
    "ws_deflated_in",
    "ws_deflated_out",
    "ws_inflate_too_big",
    "ws_inflate_errors",
]


def deflate_counters():
    """The permessage-deflate counters of /stats (process totals: tests compare two readings)."""
    total = stats()["total"]
    return {n: total[n] for n in DEFLATE_COUNTERS}


def grew(before, after):
    """Each counter's growth between two readings of deflate_counters()."""
    return {n: after[n] - before[n] for n in DEFLATE_COUNTERS}


def only(delta, **want):
    """Asserts that the counters named grew by exactly `want` and the others not at all."""
    expected = {n: want.get(n, 0) for n in DEFLATE_COUNTERS}
    assert delta == expected, f"counters grew by {delta}, expected {expected}"


def deflate_of(ws):
    """The PerMessageDeflate extension the handshake agreed on, or None."""
    found = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
    assert len(found) <= 1, ws.protocol.extensions
    return found[0] if found else None


def big_json(n_items, tag):
    """A compressible JSON document (repeated keys and text, unicode) of about 100 bytes an item."""
    items = [
        {
            "seq": i,
            "tag": tag,
            "text": f"message n°{i} ünïcødé \"quoted\" & <b>",
            "ok": i % 3 == 0,
        }
        for i in range(n_items)
    ]
    return json.dumps({"items": items}, ensure_ascii=False)


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
    # The server runs with the default --max-message-bytes (1 MiB). websockets compresses by
    # default, so these 1 MiB + 1 bytes arrive as about a kilobyte of DEFLATE data: the limit
    # is the inflater's bound, not the frame header's.
    e = await websockets.connect(f"{WS}/echo", max_size=None)
    assert deflate_of(e) is not None, "permessage-deflate not agreed"
    before = deflate_counters()
    await e.send("x" * ((1 << 20) + 1))
    try:
        await asyncio.wait_for(e.recv(), 5)
        raise AssertionError("oversized message was echoed")
    except websockets.ConnectionClosed as c:
        assert c.rcvd is not None and c.rcvd.code == 1009, c
    only(grew(before, deflate_counters()), ws_deflated_in=1, ws_inflate_too_big=1)


async def test_message_too_big_uncompressed_gets_1009():
    # The same without the extension: decided from the frame header, no inflater involved.
    e = await websockets.connect(f"{WS}/echo", max_size=None, compression=None)
    assert deflate_of(e) is None, "agreed without an offer"
    before = deflate_counters()
    await e.send("x" * ((1 << 20) + 1))
    try:
        await asyncio.wait_for(e.recv(), 5)
        raise AssertionError("oversized message was echoed")
    except websockets.ConnectionClosed as c:
        assert c.rcvd is not None and c.rcvd.code == 1009, c
    only(grew(before, deflate_counters()))


async def test_deflate_agreed_on_sub():
    # websockets offers "permessage-deflate; client_max_window_bits"; edgecomet agrees with no
    # context takeover both ways (docs/api.md, permessage-deflate).
    before = deflate_counters()
    async with websockets.connect(f"{WS}/sub/py-dfl-agree") as s:
        header = s.response.headers.get_all("Sec-WebSocket-Extensions")
        assert header == [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ], header
        ext = deflate_of(s)
        assert ext is not None, s.protocol.extensions
        # "remote" is the server's side for a client.
        assert ext.remote_no_context_takeover and ext.local_no_context_takeover, ext
        assert ext.remote_max_window_bits == 15, ext
    async with websockets.connect(f"{WS}/sub/py-dfl-agree", compression=None) as p:
        header = p.response.headers.get_all("Sec-WebSocket-Extensions")
        assert header == [], f"no offer, yet {header}"
        assert deflate_of(p) is None, "agreed without an offer"
    only(grew(before, deflate_counters()), ws_deflate_agreed=1)


async def test_deflate_published_to_sub_with_and_without():
    ch = "py-dfl-pub"
    z = await websockets.connect(f"{WS}/sub/{ch}")
    plain = await websockets.connect(f"{WS}/sub/{ch}", compression=None)
    assert deflate_of(z) is not None, "permessage-deflate not agreed"
    assert deflate_of(plain) is None, "agreed without an offer"
    big = big_json(60, "big")
    assert 4500 < len(big.encode()) < 7000, len(big.encode())
    # Compressible (it would shrink to a third), so only --deflate-min-bytes keeps it plain.
    short = json.dumps({"short": "ünïcødé " * 20}, ensure_ascii=False)
    assert 200 < len(short.encode()) < 256, len(short.encode())

    before = deflate_counters()
    publish(ch, big)
    for s in (z, plain):
        got = await asyncio.wait_for(s.recv(), 5)
        assert got == big, f"{len(got)} chars received, {len(big)} published"
    # One compressed delivery: the deflate subscriber's; the other got the plain frame.
    only(grew(before, deflate_counters()), ws_deflated_out=1)

    before = deflate_counters()
    publish(ch, short)
    for s in (z, plain):
        assert await asyncio.wait_for(s.recv(), 5) == short
    # Under --deflate-min-bytes (256): plain to both.
    only(grew(before, deflate_counters()))
    await z.close()
    await plain.close()


async def test_deflate_echo_text_and_binary():
    text = big_json(200, "echo")
    binary = (b"\x00\x01edgecomet binary \xff" * 4000)[:60000]
    async with websockets.connect(f"{WS}/echo", max_size=None) as e:
        assert deflate_of(e) is not None, "permessage-deflate not agreed"
        before = deflate_counters()
        for payload in [text, binary]:
            await e.send(payload)
            got = await asyncio.wait_for(e.recv(), 5)
            assert type(got) is type(payload) and got == payload, f"{type(got)} {len(got)}"
        # Both sent compressed (websockets compresses every message); both echoes compressed
        # for this connection.
        only(grew(before, deflate_counters()), ws_deflated_in=2, ws_deflated_out=2)


async def test_deflate_server_max_window_bits_9():
    ch = "py-dfl-wb9"
    ext = [ClientPerMessageDeflateFactory(server_max_window_bits=9)]
    async with websockets.connect(f"{WS}/sub/{ch}", extensions=ext) as s:
        header = s.response.headers.get_all("Sec-WebSocket-Extensions")
        assert len(header) == 1 and "server_max_window_bits=9" in header[0], header
        d = deflate_of(s)
        assert d is not None and d.remote_max_window_bits == 9, d
        # 2 KB: back-references of a 2^15 window could reach past 2^9 bytes: goes plain.
        two_k = big_json(30, "wb9-2k")[:2048]
        assert len(two_k.encode()) > 512, len(two_k.encode())
        before = deflate_counters()
        publish(ch, two_k)
        assert await asyncio.wait_for(s.recv(), 5) == two_k
        only(grew(before, deflate_counters()))
        # 300 bytes, at most 2^9: compressed.
        three_hundred = ("abcdefgh-" * 40)[:300]
        before = deflate_counters()
        publish(ch, three_hundred)
        assert await asyncio.wait_for(s.recv(), 5) == three_hundred
        only(grew(before, deflate_counters()), ws_deflated_out=1)


async def test_deflate_bomb_gets_1009():
    # 2 MiB of zeros is about 2 KiB of DEFLATE data, under the 1 MiB limit on the wire; the
    # inflater stops at 1 MiB and the connection is closed 1009.
    async with websockets.connect(f"{WS}/echo", max_size=None) as e:
        assert deflate_of(e) is not None, "permessage-deflate not agreed"
        before = deflate_counters()
        await e.send(bytes(2 << 20))
        try:
            await asyncio.wait_for(e.recv(), 5)
            raise AssertionError("the bomb was echoed")
        except websockets.ConnectionClosed as c:
            assert c.rcvd is not None and c.rcvd.code == 1009, c
        only(grew(before, deflate_counters()), ws_deflated_in=1, ws_inflate_too_big=1)


def raw_ws(path, extensions=None):
    """A WebSocket handshake on a raw socket; returns the socket and the response head."""
    host, port = ADDR.split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{offer}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, head.decode("latin-1")


def send_frame(s, first_byte, payload):
    """One masked frame: `first_byte` is FIN, RSV and the opcode."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([first_byte, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([first_byte, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first_byte, 0x80 | 127]) + n.to_bytes(8, "big")
    s.sendall(head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))


def read_frame(s):
    """The next frame from the server: (first byte, payload); raises on end of stream."""

    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, f"the server ended the stream ({len(data)} of {n} bytes read)"
            data += chunk
        return data

    b0, b1 = exactly(2)
    assert b1 & 0x80 == 0, "a masked frame from the server"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(8), "big")
    return b0, exactly(n)


def close_code_after(s, first_byte, payload):
    """Sends one frame and returns the code of the server's close frame (data frames skipped)."""
    send_frame(s, first_byte, payload)
    while True:
        b0, payload = read_frame(s)
        if b0 & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


def deflate_raw(data, finish):
    """RFC 7692 7.2.1: raw DEFLATE, sync-flushed with the 00 00 ff ff taken off; or (`finish`)
    ended by a block with BFINAL set, which a sender may do too (the example of 7.2.3.4)."""
    c = zlib.compressobj(wbits=-15)
    if finish:
        return c.compress(data) + c.flush(zlib.Z_FINISH)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_deflate_raw_frames():
    # Frames the websockets client never sends: a message ended by a final block, corrupt
    # DEFLATE data, bytes after the final block, invalid UTF-8 once inflated, RSV1 unagreed.
    text = "ünïcødé " * 100
    s, head = raw_ws("/echo", "permessage-deflate")
    assert "permessage-deflate" in head, head
    for finish in (False, True):
        before = deflate_counters()
        send_frame(s, 0xC1, deflate_raw(text.encode(), finish))  # FIN, RSV1, text
        b0, payload = read_frame(s)
        assert b0 == 0xC1, f"echo frame {b0:#x}, expected a compressed text frame"
        got = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
        assert got.decode() == text, f"echo of a {'final-block' if finish else 'flushed'} message"
        only(grew(before, deflate_counters()), ws_deflated_in=1, ws_deflated_out=1)
    s.close()
    bad = [
        ("a reserved block type", b"\xff\xff\xff\xff", 1007, 1),
        ("bytes after the final block", deflate_raw(text.encode(), True) + b"junk", 1007, 1),
        ("invalid UTF-8 once inflated", deflate_raw(b"ok \xff\xfe" * 100, False), 1007, 0),
    ]
    for what, payload, want, errors in bad:
        s, _ = raw_ws("/echo", "permessage-deflate")
        before = deflate_counters()
        code = close_code_after(s, 0xC1, payload)
        s.close()
        assert code == want, f"{what}: close {code}, expected {want}"
        only(grew(before, deflate_counters()), ws_deflated_in=1, ws_inflate_errors=errors)
    # RSV1 without the extension agreed: a protocol error, nothing inflated.
    s, head = raw_ws("/echo")
    assert "permessage-deflate" not in head, head
    before = deflate_counters()
    code = close_code_after(s, 0xC1, deflate_raw(text.encode(), False))
    s.close()
    assert code == 1002, f"RSV1 without the extension: close {code}, expected 1002"
    only(grew(before, deflate_counters()))


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
        test_message_too_big_uncompressed_gets_1009,
        test_deflate_agreed_on_sub,
        test_deflate_published_to_sub_with_and_without,
        test_deflate_echo_text_and_binary,
        test_deflate_server_max_window_bits_9,
        test_deflate_bomb_gets_1009,
        test_deflate_raw_frames,
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
