'use strict';
// A TCP proxy between the browser and edgecomet that the runner can cut: cut() destroys every
// connection open through it at that moment (both sides), as a network failure would, and says
// how many there were. It also records what goes through it, so a test can check what the
// browser really sent (a reconnecting client's Last-Event-ID or ?cursor=, which transport the
// CometD client used):
//
//   heads:     every HTTP request head (request line and headers, as the browser sent them),
//              with `body` (UTF-8) when it had a Content-Length body;
//   responses: every HTTP response head edgecomet sent back (bodies are skipped, not kept);
//   frames:    the WebSocket frames after a 101, both ways (`from` 'client' or 'server'),
//              unmasked; text messages reassembled from fragments, close frames with their code.
//              A compressed message (permessage-deflate, RFC 7692: RSV1 on its first frame) is
//              inflated: `compressed` true, `wireLength` its size on the wire, `text` and
//              `length` what it inflates to. edgecomet always agrees with no context takeover
//              both ways, so each message inflates alone; one that does not is recorded with
//              `inflateError` (and `text` null) and noted in `errors`.
//
// Each record has `at` (Date.now() when seen) and `conn` (the proxy's connection number), so
// requests and responses pair up in order per connection. The bytes are relayed untouched,
// whatever the recorder makes of them: a stream it cannot follow (a chunked or open-ended
// response body such as an SSE stream) is scanned for the next head instead.
//
// With { keylog } (a KeyLog of tls.js: chromium's --ssl-key-log-file) the connections are TLS 1.3
// between the browser and edgecomet's TLS port: the proxy still relays the ciphertext untouched
// (the browser verifies edgecomet's certificate, the proxy holds no key) and records the
// plaintext it decrypts with the traffic secrets chromium logged. Records whose secrets are not
// in the log yet wait for them; settle() resolves once nothing waits (call it before reading the
// records), `at` is when the record went through, not when it was decrypted.

const net = require('net');
const zlib = require('zlib');
const { tls13Decoder, newTlsConn } = require('./tls');

const REQ_AT_START = /^[A-Z]+ \/\S* HTTP\/1\.[01]\r\n/;
const REQ_ANYWHERE = /[A-Z]+ \/\S* HTTP\/1\.[01]\r\n/;
const RESP_AT_START = /^HTTP\/1\.[01] \d{3}[ \r]/;
const RESP_ANYWHERE = /HTTP\/1\.[01] \d{3}[ \r]/;

const header = (head, name) => {
    const m = new RegExp(`\\r\\n${name}: *([^\\r]*)`, 'i').exec(head);
    return m ? m[1] : null;
};

// RFC 7692 7.2.2: a message's compressed payload is DEFLATE data with its final empty stored
// block's 00 00 ff ff taken off; put back, it inflates alone (no context takeover), up to that
// sync point (the data need not end with a final block).
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

// One direction of one connection. `side` is 'client' (requests) or 'server' (responses).
function recorder(side, conn, rec) {
    const atStart = side === 'client' ? REQ_AT_START : RESP_AT_START;
    const anywhere = side === 'client' ? REQ_ANYWHERE : RESP_ANYWHERE;
    let buf = Buffer.alloc(0);
    let mode = 'head'; // 'head' | 'body' (request body) | 'skip' (response body) | 'scan' | 'ws'
    let remaining = 0;
    let bodyParts = [];
    let bodyOf = null;
    let fragments = null; // a fragmented WebSocket message being reassembled
    const afterHead = (head, entry) => {
        const len = Number(header(head, 'content-length'));
        if (side === 'client') {
            if (/^websocket$/i.test(header(head, 'upgrade') || '')) return 'ws';
            if (len > 0) {
                remaining = len;
                bodyParts = [];
                bodyOf = entry;
                return 'body';
            }
            return header(head, 'transfer-encoding') ? 'scan' : 'head';
        }
        const status = Number(head.slice(9, 12));
        if (status === 101) return 'ws';
        if ((status >= 100 && status < 200) || status === 204 || status === 304) return 'head';
        if (header(head, 'content-length') !== null && !header(head, 'transfer-encoding')) {
            remaining = len;
            return remaining > 0 ? 'skip' : 'head';
        }
        return 'scan'; // chunked or until close: look for the next head
    };
    // One WebSocket frame from buf, or null if incomplete.
    const frame = () => {
        if (buf.length < 2) return null;
        const fin = (buf[0] & 0x80) !== 0;
        const rsv = buf[0] & 0x70;
        const opcode = buf[0] & 0x0f;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
            if (buf.length < 4) return null;
            len = buf.readUInt16BE(2);
            off = 4;
        } else if (len === 127) {
            if (buf.length < 10) return null;
            len = Number(buf.readBigUInt64BE(2));
            off = 10;
        }
        const maskAt = off;
        if (masked) off += 4;
        if (buf.length < off + len) return null;
        const payload = Buffer.from(buf.subarray(off, off + len));
        if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= buf[maskAt + (i & 3)];
        buf = buf.subarray(off + len);
        return { fin, rsv, opcode, masked, payload };
    };
    let now = 0; // when the bytes being parsed went through the proxy
    const push = (chunk) => {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        for (;;) {
            if (mode === 'body' || mode === 'skip') {
                const n = Math.min(remaining, buf.length);
                if (mode === 'body') bodyParts.push(buf.subarray(0, n));
                buf = buf.subarray(n);
                remaining -= n;
                if (remaining > 0) return;
                if (mode === 'body') bodyOf.body = Buffer.concat(bodyParts).toString('utf8');
                bodyParts = [];
                mode = 'head';
                continue;
            }
            if (mode === 'ws') {
                const f = frame();
                if (!f) return;
                const base = { at: now, conn, from: side, masked: f.masked };
                if (f.opcode === 0x8) {
                    rec.frames.push({ ...base, opcode: 'close', code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString('utf8') });
                } else if (f.opcode === 0x9 || f.opcode === 0xa) {
                    rec.frames.push({ ...base, opcode: f.opcode === 0x9 ? 'ping' : 'pong' });
                } else {
                    if (f.opcode !== 0) fragments = { opcode: f.opcode, rsv: f.rsv, parts: [] };
                    if (fragments) fragments.parts.push(f.payload);
                    if (f.fin && fragments) {
                        let data = Buffer.concat(fragments.parts);
                        const extra = {};
                        if (fragments.rsv & 0x40) {
                            extra.compressed = true;
                            extra.wireLength = data.length;
                            try {
                                data = zlib.inflateRawSync(Buffer.concat([data, DEFLATE_TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
                            } catch (e) {
                                extra.inflateError = e.message;
                                rec.errors.push(`${side} #${conn}: a compressed WebSocket message (${data.length} bytes) does not inflate alone: ${e.message}`);
                                data = null;
                            }
                        }
                        rec.frames.push({
                            ...base,
                            opcode: fragments.opcode === 1 ? 'text' : fragments.opcode === 2 ? 'binary' : `opcode ${fragments.opcode}`,
                            rsv: fragments.rsv,
                            // RSV2 and RSV3 stay unexplained: no text then.
                            text: fragments.opcode === 1 && data && !(fragments.rsv & 0x30) ? data.toString('utf8') : null,
                            length: data ? data.length : null,
                            ...extra,
                        });
                        fragments = null;
                    }
                }
                continue;
            }
            const s = buf.toString('latin1');
            if (atStart.test(s)) {
                const end = s.indexOf('\r\n\r\n');
                if (end < 0) {
                    if (s.length > 65536) buf = Buffer.alloc(0);
                    return;
                }
                const head = s.slice(0, end);
                const entry = { at: now, conn, head };
                (side === 'client' ? rec.heads : rec.responses).push(entry);
                buf = buf.subarray(end + 4);
                mode = afterHead(head, entry);
                continue;
            }
            if (mode === 'head') mode = 'scan'; // not a head where one should be: resynchronise
            const next = s.search(anywhere);
            if (next < 0) {
                buf = buf.subarray(Math.max(0, buf.length - 256)); // a head may be split across reads
                return;
            }
            buf = buf.subarray(next);
            mode = 'head';
        }
    };
    return (chunk, at = Date.now()) => {
        now = at;
        try {
            push(chunk);
        } catch (e) {
            rec.errors.push(`${side} #${conn}: ${e.message}`);
            buf = Buffer.alloc(0);
            mode = 'scan';
        }
    };
}

function startProxy(targetPort, { targetHost = '127.0.0.1', keylog = null } = {}) {
    const conns = new Set();
    const rec = { heads: [], responses: [], frames: [], errors: [], cutInHandshake: 0, clientDecoders: [] };
    const decoders = new Set(); // TLS: decoders with records waiting for their secrets
    let retryTimer = null;
    const retry = () => {
        retryTimer = null;
        for (const d of decoders) {
            d.retry();
            // A connection cut before chromium had the server's hello never has its secrets
            // logged; what waits then is handshake records, nothing to record.
            if (d.pending() && !d.inApplicationPhase() && d.closedAt && Date.now() - d.closedAt > 500) {
                rec.cutInHandshake++;
                decoders.delete(d);
            }
            if (!d.pending()) decoders.delete(d);
        }
        if (decoders.size) retryTimer = setTimeout(retry, 5);
    };
    // The function that takes one direction's bytes as they go through.
    const tap = (side, id, tlsConn) => {
        const r = recorder(side, id, rec);
        if (!keylog) return r;
        const d = tls13Decoder(side, tlsConn, keylog, r, (msg) => rec.errors.push(`#${id} TLS ${msg}`));
        tlsConn.decoders = (tlsConn.decoders || []).concat(d);
        if (side === 'client') rec.clientDecoders.push(d);
        return (chunk) => {
            d.feed(chunk, Date.now());
            if (d.pending()) {
                decoders.add(d);
                if (!retryTimer) retryTimer = setTimeout(retry, 5);
            }
        };
    };
    let accepted = 0;
    let downUntil = 0;
    const server = net.createServer((client) => {
        const id = ++accepted;
        if (Date.now() < downUntil) {
            // "Network down": refuse by resetting at once.
            client.on('error', () => {});
            client.resetAndDestroy();
            return;
        }
        const upstream = net.connect(targetPort, targetHost);
        const pair = { client, upstream };
        conns.add(pair);
        const tlsConn = newTlsConn();
        client.on('data', tap('client', id, tlsConn));
        upstream.on('data', tap('server', id, tlsConn));
        client.pipe(upstream);
        upstream.pipe(client);
        const done = () => {
            for (const d of tlsConn.decoders || []) d.closedAt = d.closedAt || Date.now();
            conns.delete(pair);
            client.destroy();
            upstream.destroy();
        };
        client.on('error', done);
        upstream.on('error', done);
        client.on('close', done);
        upstream.on('close', done);
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => {
            resolve({
                port: server.address().port,
                heads: rec.heads,
                responses: rec.responses,
                frames: rec.frames,
                // What the recorder could not parse (a bug of the recorder, not of the server).
                errors: rec.errors,
                // TLS: connections decrypted (their application data reached), and those cut
                // before their handshake finished (nothing to decode).
                decrypted: () => rec.clientDecoders.filter((d) => d.inApplicationPhase()).length,
                cutInHandshake: () => rec.cutInHandshake,
                accepted: () => accepted,
                // Resolves when every record seen so far is decoded (TLS: its secrets were in
                // chromium's key log) or, after 3 s, with what is still waiting noted in errors.
                async settle() {
                    const until = Date.now() + 3000;
                    while (decoders.size && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
                    if (decoders.size) rec.errors.push(`${decoders.size} TLS stream(s) still waiting for their secrets after 3 s`);
                },
                open: () => conns.size,
                // Reset both sides of every open connection; returns how many were open. With
                // downMs, connections made in the next downMs milliseconds are reset too (an
                // outage rather than one lost connection: Chrome silently retries a request
                // whose reused keep-alive connection fails before the answer, once, on a new
                // connection; that one fails too and the page sees the error).
                cut(downMs = 0) {
                    downUntil = Date.now() + downMs;
                    const n = conns.size;
                    for (const { client, upstream } of [...conns]) {
                        client.resetAndDestroy();
                        upstream.resetAndDestroy();
                    }
                    conns.clear();
                    return n;
                },
                close() {
                    clearTimeout(retryTimer);
                    for (const { client, upstream } of conns) {
                        client.destroy();
                        upstream.destroy();
                    }
                    server.close();
                },
            });
        });
    });
}

module.exports = { startProxy };
