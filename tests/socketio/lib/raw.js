// Raw Engine.IO v4 / Socket.IO v5 clients for the conformance tests: no socket.io code, only
// node:http and the `ws` package, written from the protocol documents
// (https://github.com/socketio/engine.io-protocol, https://github.com/socketio/socket.io-protocol).
//
// Engine.IO packets are strings: a type digit and data (0 open, 1 close, 2 ping, 3 pong,
// 4 message, 5 upgrade, 6 noop). Over HTTP long-polling, a payload is packets joined by the record
// separator \x1e; a binary packet travels as `b` + base64. Over WebSocket, one packet per frame,
// binary packets as binary frames (without the type). A Socket.IO packet rides in an Engine.IO
// message: `4` + Socket.IO type digit (0 CONNECT, 1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR,
// 5 BINARY_EVENT, 6 BINARY_ACK) + [attachments `-`] + [namespace `,`] + [ack id] + [JSON].
//
// Every wait here has a time limit and fails with what was seen instead of hanging.

import http from 'node:http';
import WebSocket from 'ws';

export class Failure extends Error {}

export const SEP = '\x1e';

// One HTTP request on its own connection (no agent: two requests are two connections, as two
// concurrent long-polls from a browser would be). Resolves { status, headers, body (Buffer), text }.
export function request(port, method, path, { body = null, headers = {}, timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
        const h = { ...headers };
        if (body !== null) h['content-length'] = Buffer.byteLength(body);
        const req = http.request({ host: '127.0.0.1', port, method, path, headers: h, agent: false }, (res) => {
            const parts = [];
            res.on('data', (d) => parts.push(d));
            res.on('end', () => {
                clearTimeout(timer);
                const b = Buffer.concat(parts);
                resolve({ status: res.statusCode, headers: res.headers, body: b, text: b.toString('utf8') });
            });
            res.on('error', (e) => {
                clearTimeout(timer);
                reject(e);
            });
        });
        const timer = setTimeout(() => {
            req.destroy();
            reject(new Failure(`${method} ${path}: no complete answer within ${timeoutMs} ms`));
        }, timeoutMs);
        req.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
        if (body !== null) req.write(body);
        req.end();
    });
}

// The JSON error body of an Engine.IO error response, or null.
export function errorBody(res) {
    try {
        return JSON.parse(res.text);
    } catch {
        return null;
    }
}

// A long-polling Engine.IO session, driven by hand.
export class Polling {
    constructor(port, { path = '/socket.io/', query = '' } = {}) {
        this.port = port;
        this.path = path;
        this.query = query;
        this.sid = null;
        this.open = null;
        this.log = []; // what went through, for failure messages
    }

    url(extra = '') {
        const sid = this.sid ? `&sid=${encodeURIComponent(this.sid)}` : '';
        return `${this.path}?EIO=4&transport=polling${sid}${this.query}${extra}`;
    }

    // GET without sid: expects a 200 whose payload is one open packet.
    async handshake() {
        const res = await request(this.port, 'GET', this.url());
        if (res.status !== 200) throw new Failure(`handshake: status ${res.status}: ${res.text.slice(0, 200)}`);
        const packets = res.text.split(SEP);
        if (packets.length !== 1 || packets[0][0] !== '0') throw new Failure(`handshake: expected one open packet, got ${JSON.stringify(res.text.slice(0, 300))}`);
        this.open = JSON.parse(packets[0].slice(1));
        this.sid = this.open.sid;
        this.log.push(`handshake -> ${packets[0]}`);
        return { res, open: this.open };
    }

    // GET with the sid: { status, packets (strings, binary ones still as `b<base64>`), res }.
    async get(timeoutMs = 5000) {
        const res = await request(this.port, 'GET', this.url(), { timeoutMs });
        const packets = res.status === 200 ? res.text.split(SEP) : [];
        this.log.push(`GET -> ${res.status} ${JSON.stringify(res.text.slice(0, 200))}`);
        return { status: res.status, packets, res };
    }

    // POST packets (strings; Buffers are sent as `b<base64>`).
    async post(packets, timeoutMs = 5000) {
        const body = packets.map((p) => (Buffer.isBuffer(p) ? `b${p.toString('base64')}` : p)).join(SEP);
        const res = await request(this.port, 'POST', this.url(), { body, headers: { 'content-type': 'text/plain;charset=UTF-8' }, timeoutMs });
        this.log.push(`POST ${JSON.stringify(body.slice(0, 200))} -> ${res.status} ${JSON.stringify(res.text.slice(0, 100))}`);
        return res;
    }

    // GETs (answering pings with a POST of "3") until `done(collected)` is true or `timeoutMs`
    // passes. Returns the packets collected (pings left out) and the number of packets per GET.
    async collect(done, timeoutMs, what) {
        const end = Date.now() + timeoutMs;
        const got = [];
        const perGet = [];
        while (!done(got)) {
            const left = end - Date.now();
            if (left <= 0) throw new Failure(`${what}: not there within ${timeoutMs} ms; got ${JSON.stringify(got).slice(0, 600)}`);
            const r = await this.get(left + 200);
            if (r.status !== 200) throw new Failure(`${what}: GET answered ${r.status} ${r.res.text.slice(0, 200)}; got so far ${JSON.stringify(got).slice(0, 400)}`);
            perGet.push(r.packets.length);
            for (const p of r.packets) {
                if (p === '2') await this.post(['3']);
                else got.push(p);
            }
        }
        return { packets: got, perGet };
    }
}

// A raw WebSocket Engine.IO connection. Text frames arrive as strings, binary frames as Buffers.
// With autoPong (the default) every ping "2" is answered "3" at once and not queued (counted in
// `pings`), so a test is not closed by the server's ping timeout while it waits for something
// else.
export class RawWs {
    constructor(port, { path = '/socket.io/', sid = null, query = '', autoPong = true } = {}) {
        const s = sid ? `&sid=${encodeURIComponent(sid)}` : '';
        this.url = `ws://127.0.0.1:${port}${path}?EIO=4&transport=websocket${s}${query}`;
        this.autoPong = autoPong;
        this.queue = [];
        this.waiters = [];
        this.pings = 0;
        this.log = [];
        this.closeInfo = null;
        this.ws = new WebSocket(this.url, { perMessageDeflate: false });
        this.ws.on('message', (data, isBinary) => {
            const m = isBinary ? Buffer.from(data) : data.toString('utf8');
            this.log.push(`<- ${isBinary ? `binary ${m.toString('hex')}` : JSON.stringify(m).slice(0, 200)}`);
            if (this.autoPong && m === '2') {
                this.pings++;
                this.send('3');
                return;
            }
            this.queue.push(m);
            this.wake();
        });
        this.ws.on('close', (code, reason) => {
            this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
            this.log.push(`closed ${code} ${reason}`);
            this.wake();
        });
        this.ws.on('unexpected-response', (req, res) => {
            this.closeInfo = { code: -1, reason: `HTTP ${res.statusCode}`, status: res.statusCode, at: Date.now() };
            this.log.push(`refused: HTTP ${res.statusCode}`);
            res.resume();
            req.destroy();
            this.wake();
        });
        this.ws.on('error', (e) => {
            this.log.push(`error ${e.message}`);
            if (!this.closeInfo) this.closeInfo = { code: -2, reason: e.message, at: Date.now() };
            this.wake();
        });
        this.opened = new Promise((resolve) => {
            this.ws.once('open', () => resolve(true));
            this.ws.once('close', () => resolve(false));
            this.ws.once('error', () => resolve(false));
            this.ws.once('unexpected-response', () => resolve(false));
        });
    }

    wake() {
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
    }

    send(m) {
        this.log.push(`-> ${Buffer.isBuffer(m) ? `binary ${m.toString('hex')}` : JSON.stringify(m).slice(0, 200)}`);
        if (this.ws.readyState === WebSocket.OPEN) this.ws.send(m);
    }

    history() {
        return this.log.slice(-12).join(' | ');
    }

    // The next frame, or a Failure after timeoutMs (or when the connection closes first).
    async next(timeoutMs, what = 'a packet') {
        const end = Date.now() + timeoutMs;
        for (;;) {
            if (this.queue.length) return this.queue.shift();
            if (this.closeInfo) throw new Failure(`waiting for ${what}: the connection closed (${this.closeInfo.code} ${this.closeInfo.reason}); seen: ${this.history()}`);
            const left = end - Date.now();
            if (left <= 0) throw new Failure(`no ${what} within ${timeoutMs} ms; seen: ${this.history()}`);
            await new Promise((r) => {
                const t = setTimeout(r, left);
                this.waiters.push(() => {
                    clearTimeout(t);
                    r();
                });
            });
        }
    }

    // Resolves with the close info once closed; a Failure if still open after timeoutMs.
    async closed(timeoutMs, what = 'the server to close the connection') {
        const end = Date.now() + timeoutMs;
        while (!this.closeInfo) {
            const left = end - Date.now();
            if (left <= 0) throw new Failure(`${what}: still open after ${timeoutMs} ms; seen: ${this.history()}`);
            await new Promise((r) => {
                const t = setTimeout(r, left);
                this.waiters.push(() => {
                    clearTimeout(t);
                    r();
                });
            });
        }
        return this.closeInfo;
    }

    // Waits for the open packet; returns it parsed.
    async openPacket(timeoutMs = 3000) {
        const p = await this.next(timeoutMs, 'the open packet');
        if (typeof p !== 'string' || p[0] !== '0') throw new Failure(`expected the open packet, got ${JSON.stringify(p)}`);
        this.open = JSON.parse(p.slice(1));
        return this.open;
    }

    close() {
        try {
            this.ws.terminate();
        } catch {}
    }
}

// "40", "40/custom,", "40{...}", "40/custom,{...}"
export function connectPacket(nsp = '/', payload) {
    return `40${nsp === '/' ? '' : `${nsp},`}${payload === undefined ? '' : JSON.stringify(payload)}`;
}

// Splits a Socket.IO packet inside an Engine.IO message ("4..."): { type, attachments, nsp, id,
// data } or null if it is not one.
export function parseSio(msg) {
    if (typeof msg !== 'string' || msg[0] !== '4') return null;
    const m = /^4(\d)(?:(\d+)-)?(\/[^,]*,)?(\d+)?(.*)$/s.exec(msg);
    if (!m) return null;
    let data;
    try {
        data = m[5] === '' ? undefined : JSON.parse(m[5]);
    } catch {
        data = { unparsable: m[5] };
    }
    return { type: Number(m[1]), attachments: m[2] === undefined ? 0 : Number(m[2]), nsp: m[3] ? m[3].slice(0, -1) : '/', id: m[4] === undefined ? null : Number(m[4]), data };
}
