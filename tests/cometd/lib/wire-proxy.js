// A TCP proxy between a test's clients and the Bayeux server, in three roles:
//
//  - a wire recorder: it parses both directions as HTTP/1.1 (Content-Length, chunked or
//    close-delimited bodies) and, after a 101, as WebSocket frames (unmasking the client's), and
//    keeps one event per request, response and frame, so that a test can assert what really went
//    over the wire (which transport, how many messages one request carried) and so that
//    WIRE-NOTES.md can quote real exchanges;
//  - a network failure: cut() resets both sides of every open connection (derived from
//    tests/browser/proxy.js);
//  - a black hole: freeze() keeps forwarding client -> server but silently drops every byte the
//    server sends (recorded as dropped), so the server believes it delivered what the client
//    never sees: the case the ack extension exists for. cut() ends the freeze.
//
// Loopback only: it listens on 127.0.0.1 and connects to 127.0.0.1.

import net from 'node:net';
import zlib from 'node:zlib';

const CRLF2 = Buffer.from('\r\n\r\n');

// RFC 7692 7.2.2: the tail a compressed message's sender takes off.
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

// Incremental parser of one direction of one connection. feed() returns nothing; complete units
// are pushed with emit(event).
class StreamParser {
    constructor(dir, emit, pairState) {
        this.dir = dir; // 'c2s' or 's2c'
        this.emit = emit;
        this.pair = pairState; // shared by both directions: { upgradeRequested, upgraded, methods: [] }
        this.buf = Buffer.alloc(0);
        this.mode = 'http';
        this.msg = null; // HTTP message being read: { head, bodyMode, remaining, chunks }
        this.wsFragments = null;
        this.broken = null;
    }

    feed(chunk) {
        if (this.broken) return;
        this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
        try {
            for (;;) {
                const progressed = this.mode === 'ws' ? this.stepWs() : this.stepHttp();
                if (!progressed) break;
            }
        } catch (e) {
            this.broken = String(e && e.message);
            this.emit({ dir: this.dir, type: 'unparsed', error: this.broken });
        }
    }

    end() {
        if (this.mode === 'http' && this.msg && this.msg.bodyMode === 'close') {
            this.finishHttp(Buffer.concat(this.msg.chunks));
        }
    }

    stepHttp() {
        if (!this.msg) {
            const end = this.buf.indexOf(CRLF2);
            if (end < 0) {
                if (this.buf.length > 65536) throw new Error('HTTP head over 64 KiB');
                return false;
            }
            const head = this.buf.subarray(0, end).toString('latin1');
            this.buf = this.buf.subarray(end + 4);
            const lines = head.split('\r\n');
            const headers = {};
            for (const l of lines.slice(1)) {
                const i = l.indexOf(':');
                if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
            }
            const msg = { head, firstLine: lines[0], headers, chunks: [] };
            if (this.dir === 'c2s') {
                const [method, path] = lines[0].split(' ');
                msg.method = method;
                msg.path = path;
                this.pair.methods.push(method);
                if ((headers.upgrade || '').toLowerCase() === 'websocket') this.pair.upgradeRequested = true;
            } else {
                msg.status = Number(lines[0].split(' ')[1]);
            }
            const te = (headers['transfer-encoding'] || '').toLowerCase();
            const reqMethod = this.dir === 's2c' ? this.pair.methods.shift() : null;
            if (this.dir === 's2c' && (reqMethod === 'HEAD' || msg.status === 204 || msg.status === 304 || (msg.status >= 100 && msg.status < 200))) {
                msg.bodyMode = 'none';
            } else if (te.includes('chunked')) {
                msg.bodyMode = 'chunked';
                msg.chunkState = 'size';
            } else if (headers['content-length'] !== undefined) {
                msg.bodyMode = 'length';
                msg.remaining = Number(headers['content-length']);
            } else if (this.dir === 's2c') {
                msg.bodyMode = 'close';
            } else {
                msg.bodyMode = 'none';
            }
            this.msg = msg;
            if (msg.bodyMode === 'none' || (msg.bodyMode === 'length' && msg.remaining === 0)) {
                this.finishHttp(Buffer.alloc(0));
            }
            return true;
        }
        const msg = this.msg;
        if (msg.bodyMode === 'length') {
            if (this.buf.length === 0) return false;
            const take = Math.min(msg.remaining, this.buf.length);
            msg.chunks.push(this.buf.subarray(0, take));
            this.buf = this.buf.subarray(take);
            msg.remaining -= take;
            if (msg.remaining === 0) this.finishHttp(Buffer.concat(msg.chunks));
            return true;
        }
        if (msg.bodyMode === 'close') {
            if (this.buf.length === 0) return false;
            msg.chunks.push(this.buf);
            this.buf = Buffer.alloc(0);
            return false;
        }
        // chunked
        if (msg.chunkState === 'size') {
            const eol = this.buf.indexOf('\r\n');
            if (eol < 0) return false;
            const size = parseInt(this.buf.subarray(0, eol).toString('latin1').split(';')[0], 16);
            if (!Number.isFinite(size)) throw new Error('bad chunk size');
            this.buf = this.buf.subarray(eol + 2);
            msg.chunkSizes = msg.chunkSizes || [];
            msg.chunkSizes.push(size);
            if (size === 0) {
                msg.chunkState = 'trailer';
            } else {
                msg.chunkState = 'data';
                msg.remaining = size;
            }
            return true;
        }
        if (msg.chunkState === 'data') {
            if (this.buf.length < msg.remaining + 2) return false;
            msg.chunks.push(this.buf.subarray(0, msg.remaining));
            this.buf = this.buf.subarray(msg.remaining + 2);
            msg.chunkState = 'size';
            return true;
        }
        // trailer: lines until an empty one
        const eol = this.buf.indexOf('\r\n');
        if (eol < 0) return false;
        const line = this.buf.subarray(0, eol);
        this.buf = this.buf.subarray(eol + 2);
        if (line.length === 0) this.finishHttp(Buffer.concat(msg.chunks));
        return true;
    }

    finishHttp(body) {
        const msg = this.msg;
        this.msg = null;
        const ev = {
            dir: this.dir,
            type: this.dir === 'c2s' ? 'http-request' : 'http-response',
            head: msg.head,
            body: body.toString('utf8'),
        };
        if (msg.bodyMode === 'chunked') ev.chunked = msg.chunkSizes;
        if (this.dir === 'c2s') {
            ev.method = msg.method;
            ev.path = msg.path;
            ev.upgrade = (msg.headers.upgrade || '').toLowerCase() === 'websocket';
        } else {
            ev.status = msg.status;
        }
        this.emit(ev);
        if (this.dir === 's2c' && msg.status === 101) {
            this.pair.upgraded = true;
            this.mode = 'ws';
        }
        if (this.dir === 'c2s' && ev.upgrade) {
            // The client sends frames only after the 101; switch now so the first frame parses.
            this.mode = 'ws';
        }
    }

    stepWs() {
        const b = this.buf;
        if (b.length < 2) return false;
        const fin = (b[0] & 0x80) !== 0;
        const rsv1 = (b[0] & 0x40) !== 0;
        const opcode = b[0] & 0x0f;
        const masked = (b[1] & 0x80) !== 0;
        let len = b[1] & 0x7f;
        let off = 2;
        if (len === 126) {
            if (b.length < 4) return false;
            len = b.readUInt16BE(2);
            off = 4;
        } else if (len === 127) {
            if (b.length < 10) return false;
            len = Number(b.readBigUInt64BE(2));
            off = 10;
        }
        let mask = null;
        if (masked) {
            if (b.length < off + 4) return false;
            mask = b.subarray(off, off + 4);
            off += 4;
        }
        if (b.length < off + len) return false;
        const payload = Buffer.from(b.subarray(off, off + len));
        if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
        this.buf = b.subarray(off + len);
        if (opcode === 0x8) {
            const code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
            this.emit({ dir: this.dir, type: 'ws-close', code, reason: payload.subarray(2).toString('utf8') });
        } else if (opcode === 0x9 || opcode === 0xa) {
            this.emit({ dir: this.dir, type: opcode === 0x9 ? 'ws-ping' : 'ws-pong', bytes: payload.length });
        } else {
            if (opcode !== 0) this.wsFragments = { opcode, rsv1, parts: [] };
            if (!this.wsFragments) throw new Error('continuation frame without a start');
            this.wsFragments.parts.push(payload);
            if (fin) {
                const f = this.wsFragments;
                this.wsFragments = null;
                let data = Buffer.concat(f.parts);
                const ev = { dir: this.dir, type: f.opcode === 1 ? 'ws-text' : 'ws-binary', masked };
                if (f.rsv1) {
                    // permessage-deflate (RFC 7692): edgecomet agrees with no context takeover
                    // both ways, so each message inflates alone once the 00 00 ff ff its sender
                    // dropped is put back. `compressed`, and `wireBytes` its size on the wire.
                    ev.compressed = true;
                    ev.wireBytes = data.length;
                    try {
                        data = zlib.inflateRawSync(Buffer.concat([data, DEFLATE_TAIL]), {
                            finishFlush: zlib.constants.Z_SYNC_FLUSH,
                        });
                    } catch (e) {
                        ev.inflateError = e.message;
                        data = null;
                    }
                }
                if (data === null) {
                    ev.bytes = ev.wireBytes;
                } else if (f.opcode === 1) {
                    ev.text = data.toString('utf8');
                } else {
                    ev.bytes = data.length;
                }
                if (f.parts.length > 1) ev.fragments = f.parts.length;
                this.emit(ev);
            }
        }
        return true;
    }
}

export function startWireProxy(targetPort, { name = 'proxy', record = true } = {}) {
    const conns = new Set();
    const events = [];
    const t0 = Date.now();
    let accepted = 0;
    let frozen = false;
    let droppedBytes = 0;
    const server = net.createServer((client) => {
        const id = ++accepted;
        const upstream = net.connect(targetPort, '127.0.0.1');
        const pair = { id, client, upstream };
        conns.add(pair);
        const state = { upgradeRequested: false, upgraded: false, methods: [] };
        const emit = (ev) => {
            if (record) events.push({ t: Date.now() - t0, conn: id, ...ev });
        };
        emit({ dir: 'open', type: 'tcp-open' });
        const c2s = new StreamParser('c2s', emit, state);
        const s2c = new StreamParser('s2c', (ev) => emit(frozen ? { ...ev, dropped: true } : ev), state);
        client.on('data', (chunk) => {
            c2s.feed(chunk);
            upstream.write(chunk);
        });
        upstream.on('data', (chunk) => {
            s2c.feed(chunk);
            if (frozen) {
                droppedBytes += chunk.length;
                return;
            }
            client.write(chunk);
        });
        let closed = false;
        const done = (why) => {
            if (closed) return;
            closed = true;
            c2s.end();
            s2c.end();
            emit({ dir: 'close', type: 'tcp-close', why });
            conns.delete(pair);
            client.destroy();
            upstream.destroy();
        };
        client.on('error', () => done('client error'));
        upstream.on('error', () => done('server error'));
        client.on('end', () => upstream.end());
        upstream.on('end', () => client.end());
        client.on('close', () => done('client closed'));
        upstream.on('close', () => done('server closed'));
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => {
            resolve({
                name,
                port: server.address().port,
                events,
                accepted: () => accepted,
                open: () => conns.size,
                droppedBytes: () => droppedBytes,
                freeze() {
                    frozen = true;
                },
                // Resets both sides of every open connection, ends a freeze; returns how many
                // connections were open.
                cut() {
                    const n = conns.size;
                    for (const { client, upstream } of [...conns]) {
                        client.resetAndDestroy();
                        upstream.resetAndDestroy();
                    }
                    conns.clear();
                    frozen = false;
                    return n;
                },
                close() {
                    for (const { client, upstream } of conns) {
                        client.destroy();
                        upstream.destroy();
                    }
                    conns.clear();
                    return new Promise((r) => server.close(() => r()));
                },
            });
        });
    });
}

// What kinds of request went through a proxy: { upgrades, posts, others } with the paths seen.
export function requestKinds(events) {
    const out = { upgrades: [], posts: [], others: [] };
    for (const e of events) {
        if (e.type !== 'http-request') continue;
        if (e.upgrade) out.upgrades.push(`${e.method} ${e.path}`);
        else if (e.method === 'POST') out.posts.push(`${e.method} ${e.path}`);
        else out.others.push(`${e.method} ${e.path}`);
    }
    return out;
}

// Every Bayeux message array the client sent, one entry per HTTP request body or WebSocket text
// frame: [{ conn, t, via: 'POST /cometd/connect' | 'ws', messages: [...] }].
export function clientUnits(events) {
    const out = [];
    for (const e of events) {
        let text = null;
        let via = null;
        if (e.dir === 'c2s' && e.type === 'http-request' && e.method === 'POST') {
            text = e.body;
            via = `POST ${e.path}`;
        } else if (e.dir === 'c2s' && e.type === 'ws-text') {
            text = e.text;
            via = 'ws';
        }
        if (text === null) continue;
        let messages = null;
        try {
            messages = JSON.parse(text);
        } catch {}
        out.push({ conn: e.conn, t: e.t, via, messages: Array.isArray(messages) ? messages : [messages] });
    }
    return out;
}
