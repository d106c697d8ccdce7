// Raw Bayeux over HTTP and WebSocket, without the CometD client, for the protocol edge cases:
// what a server must do with requests the official client never sends (or sends only in rare
// timings), asserted on the exact replies.

import http from 'node:http';
import { WebSocket } from 'ws';

let idCounter = 0;
export const nextId = (prefix = 'm') => `${prefix}${++idCounter}`;

// One POST on a new TCP connection (agent: false), so that a test decides which requests share a
// connection. Resolves with { status, headers, body, json, ms }; rejects when no complete answer
// arrives within timeoutMs. `pending` (returned by postPending) lets a test look at a request that
// is still held.
export function postPending(port, path, body, { headers = {}, timeoutMs = 10_000, cookie } = {}) {
    const t0 = Date.now();
    const state = { done: false, result: null, error: null };
    const promise = new Promise((resolve, reject) => {
        const h = { 'Content-Type': 'application/json;charset=UTF-8', ...headers };
        const buf = Buffer.from(body, 'utf8');
        h['Content-Length'] = buf.length;
        if (cookie && cookie.value) h.Cookie = cookie.value;
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path, headers: h, agent: false }, (res) => {
            const chunks = [];
            res.on('data', (d) => chunks.push(d));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let json;
                try {
                    json = JSON.parse(text);
                } catch {}
                const sc = res.headers['set-cookie'];
                if (cookie && sc) cookie.value = [].concat(sc).map((c) => c.split(';')[0]).join('; ');
                state.done = true;
                state.result = { status: res.statusCode, headers: res.headers, body: text, json, ms: Date.now() - t0 };
                resolve(state.result);
            });
            res.on('error', (e) => {
                state.done = true;
                state.error = e;
                reject(e);
            });
        });
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`POST ${path}: no complete answer within ${timeoutMs} ms`)));
        req.on('error', (e) => {
            state.done = true;
            state.error = e;
            reject(e);
        });
        req.end(buf);
    });
    promise.catch(() => {});
    return { promise, state, abort: () => {} };
}

export function post(port, path, body, opts) {
    return postPending(port, path, body, opts).promise;
}

// JSON for messages; never throws (a failure message of the client holds the XHR or WebSocket:
// circular, so those branches are replaced by "[circular]").
export function safeJson(x) {
    const seen = new WeakSet();
    try {
        return JSON.stringify(x, (k, v) => {
            if (v && typeof v === 'object') {
                if (seen.has(v)) return '[circular]';
                seen.add(v);
            }
            return typeof v === 'function' ? undefined : v;
        });
    } catch (e) {
        return `[unprintable: ${e.message}]`;
    }
}

export function fmt(x, n = 400) {
    const s = typeof x === 'string' ? x : safeJson(x);
    return s === undefined ? 'undefined' : s.length > n ? s.slice(0, n) + `…(${s.length} chars)` : s;
}

// A Bayeux session driven by hand over HTTP POSTs (each on its own TCP connection). Keeps the
// cookie the server set (the reference server finds sessions by its BAYEUX_BROWSER cookie and
// clientId; edgecomet may ignore cookies).
export class RawHttpSession {
    constructor(port, path) {
        this.port = port;
        this.path = path;
        this.cookie = { value: null };
        this.clientId = null;
    }

    pending(messages, opts = {}) {
        const body = typeof messages === 'string' ? messages : JSON.stringify(messages);
        return postPending(this.port, this.path, body, { cookie: this.cookie, ...opts });
    }

    async send(messages, opts) {
        return this.pending(messages, opts).promise;
    }

    // Sends messages and returns the reply array; fails unless 200 with a JSON array.
    async exchange(messages, opts) {
        const r = await this.send(messages, opts);
        if (r.status !== 200 || !Array.isArray(r.json)) {
            throw new Error(`POST ${this.path} ${fmt(messages, 200)}: ${r.status} ${fmt(r.body, 300)}`);
        }
        return r.json;
    }

    async handshake(extra = {}, types = ['long-polling']) {
        const id = nextId('h');
        const replies = await this.exchange([
            { id, channel: '/meta/handshake', version: '1.0', minimumVersion: '1.0', supportedConnectionTypes: types, ...extra },
        ]);
        const r = replies.find((m) => m.channel === '/meta/handshake');
        if (!r || r.successful !== true || typeof r.clientId !== 'string') {
            throw new Error(`handshake failed: ${fmt(replies)}`);
        }
        this.clientId = r.clientId;
        this.handshakeReply = r;
        return r;
    }

    connectMessage(extra = {}) {
        return { id: nextId('c'), channel: '/meta/connect', connectionType: 'long-polling', clientId: this.clientId, ...extra };
    }

    // The first /meta/connect as the CometD client sends it (advice timeout 0: answer at once).
    async firstConnect() {
        const replies = await this.exchange([this.connectMessage({ advice: { timeout: 0 } })], { timeoutMs: 5000 });
        const r = replies.find((m) => m.channel === '/meta/connect');
        if (!r || r.successful !== true) throw new Error(`first /meta/connect failed: ${fmt(replies)}`);
        return replies;
    }

    async subscribe(channel) {
        const id = nextId('s');
        const replies = await this.exchange([{ id, channel: '/meta/subscribe', clientId: this.clientId, subscription: channel }]);
        const r = replies.find((m) => m.id === id);
        if (!r || r.successful !== true) throw new Error(`subscribe ${channel} failed: ${fmt(replies)}`);
        return r;
    }

    async publish(channel, data) {
        const id = nextId('p');
        const replies = await this.exchange([{ id, channel, clientId: this.clientId, data }]);
        const r = replies.find((m) => m.id === id && m.data === undefined);
        if (!r || r.successful !== true) throw new Error(`publish to ${channel} failed: ${fmt(replies)}`);
        return replies;
    }

    async disconnect() {
        const id = nextId('d');
        return this.exchange([{ id, channel: '/meta/disconnect', clientId: this.clientId }], { timeoutMs: 5000 });
    }
}

// A raw WebSocket to the Bayeux URL. Every received text frame is parsed and its messages appended
// to `received` (with the frame number); waitFor() resolves with the first message matching a
// predicate (looking at what already arrived, then at what arrives), or rejects after timeoutMs.
export class RawWs {
    static open(url, timeoutMs = 5000) {
        return new Promise((resolve, reject) => {
            const ws = new WebSocket(url.replace(/^http/, 'ws'), { perMessageDeflate: false });
            const timer = setTimeout(() => {
                ws.terminate();
                reject(new Error(`WebSocket ${url}: not open within ${timeoutMs} ms`));
            }, timeoutMs);
            ws.once('open', () => {
                clearTimeout(timer);
                resolve(new RawWs(ws));
            });
            ws.once('unexpected-response', (req, res) => {
                clearTimeout(timer);
                reject(new Error(`WebSocket ${url}: HTTP ${res.statusCode} instead of 101`));
            });
            ws.once('error', (e) => {
                clearTimeout(timer);
                reject(e);
            });
        });
    }

    constructor(ws) {
        this.ws = ws;
        this.received = [];
        this.frames = 0;
        this.badFrames = [];
        this.waiters = [];
        this.closed = null;
        this.closedPromise = new Promise((resolve) => {
            ws.on('close', (code, reason) => {
                this.closed = { code, reason: reason.toString() };
                resolve(this.closed);
                for (const w of this.waiters.splice(0)) w.onClose(this.closed);
            });
        });
        ws.on('error', () => {});
        ws.on('message', (data) => {
            const frame = ++this.frames;
            let arr;
            try {
                arr = JSON.parse(data.toString('utf8'));
            } catch {
                this.badFrames.push(data.toString('utf8').slice(0, 200));
                return;
            }
            for (const m of Array.isArray(arr) ? arr : [arr]) {
                this.received.push({ frame, m });
                for (const w of [...this.waiters]) {
                    if (w.pred(m)) {
                        this.waiters.splice(this.waiters.indexOf(w), 1);
                        w.resolve(m);
                    }
                }
            }
        });
    }

    send(messages) {
        this.ws.send(typeof messages === 'string' ? messages : JSON.stringify(messages));
    }

    waitFor(pred, timeoutMs = 5000, what = 'a message') {
        const have = this.received.find((r) => pred(r.m));
        if (have) return Promise.resolve(have.m);
        return new Promise((resolve, reject) => {
            const w = {
                pred,
                resolve: (m) => {
                    clearTimeout(w.timer);
                    resolve(m);
                },
                onClose: (c) => {
                    clearTimeout(w.timer);
                    reject(new Error(`connection closed (${c.code} ${c.reason}) while waiting for ${what}`));
                },
            };
            w.timer = setTimeout(() => {
                this.waiters.splice(this.waiters.indexOf(w), 1);
                reject(new Error(`no ${what} within ${timeoutMs} ms; received: ${fmt(this.received.map((r) => r.m), 600)}`));
            }, timeoutMs);
            if (this.closed) {
                w.onClose(this.closed);
                return;
            }
            this.waiters.push(w);
        });
    }

    reply(id, timeoutMs = 5000) {
        return this.waitFor((m) => m && m.id === id && ((typeof m.channel === 'string' && m.channel.startsWith('/meta/')) || m.data === undefined), timeoutMs, `the reply with id ${id}`);
    }

    close() {
        try {
            this.ws.terminate();
        } catch {}
    }
}
