'use strict';
// Browser side of the tests for the plain browser APIs: EventSource, fetch long-polling,
// WebSocket and cross-origin fetch. Each start function records everything it sees in T.st (plain
// data only, so the runner can read it with page.evaluate); the runner publishes, cuts
// connections and checks the record.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

window.T = {
    st: null,

    // Server-Sent Events through the browser's own EventSource (which reconnects by itself and
    // sends Last-Event-ID).
    sse(url) {
        const st = (T.st = {
            data: [], ids: [], opens: 0, errors: 0, gaps: [], lastIdAtError: [], events: [],
        });
        const es = new EventSource(url);
        T.es = es;
        es.onopen = () => {
            st.opens++;
            st.events.push(`open after ${st.data.length} messages`);
        };
        es.onerror = () => {
            st.errors++;
            st.lastIdAtError.push(st.ids.length ? st.ids[st.ids.length - 1] : null);
            st.events.push(`error (readyState ${es.readyState}) after ${st.data.length} messages`);
        };
        es.onmessage = (e) => {
            st.data.push(e.data);
            st.ids.push(e.lastEventId);
        };
        es.addEventListener('gap', (e) => st.gaps.push(e.data));
    },

    // Long-polling with fetch: JSON answers, resumed by ?cursor=. The first poll asks for
    // cursor 0 (everything in the history), so nothing published after the loop starts can be
    // missed whatever the timing; every later poll sends the cursor of the last answer. A failed
    // poll (connection cut) is retried with the same cursor.
    async longPoll(url) {
        const st = (T.st = {
            data: [], ids: [], answers: 0, multi: 0, gaps: [], fetchErrors: [], problems: [],
            cursors: [], inFlight: false, stop: false,
        });
        let cursor = '0';
        while (!st.stop) {
            let r, body;
            try {
                st.inFlight = true;
                st.cursors.push(cursor);
                r = await fetch(`${url}?cursor=${encodeURIComponent(cursor)}`, {
                    headers: { Accept: 'application/json' },
                    cache: 'no-store',
                });
                if (r.status !== 200) {
                    st.problems.push(`poll with cursor ${cursor}: status ${r.status}: ${await r.text()}`);
                    st.inFlight = false;
                    await sleep(200);
                    continue;
                }
                const text = await r.text();
                try {
                    body = JSON.parse(text);
                } catch (e) {
                    st.problems.push(`poll with cursor ${cursor}: not JSON (${r.headers.get('content-type')}): ${text.slice(0, 200)}`);
                    st.inFlight = false;
                    await sleep(200);
                    continue;
                }
            } catch (e) {
                st.inFlight = false;
                st.fetchErrors.push(`poll with cursor ${cursor}: ${e}`);
                await sleep(200);
                continue;
            }
            st.inFlight = false;
            st.answers++;
            const hdr = r.headers.get('Edgecomet-Cursor');
            if (hdr !== body.cursor) {
                st.problems.push(`Edgecomet-Cursor header ${JSON.stringify(hdr)} (readable cross-origin only if exposed) != body cursor ${JSON.stringify(body.cursor)}`);
            }
            if (typeof body.cursor !== 'string' || !/^[0-9]{1,20}$/.test(body.cursor)) {
                st.problems.push(`cursor not a decimal string: ${JSON.stringify(body.cursor)}`);
            }
            if (!Array.isArray(body.messages)) {
                st.problems.push(`no messages array: ${JSON.stringify(body).slice(0, 200)}`);
                body.messages = [];
            }
            if ('gap' in body) st.gaps.push(JSON.stringify(body.gap));
            for (const m of body.messages) {
                if (typeof m.id !== 'string') st.problems.push(`id not a string: ${JSON.stringify(m)}`);
                st.data.push(m.data);
                st.ids.push(m.id);
            }
            if (body.messages.length > 1) st.multi++;
            if (body.messages.length && body.cursor !== body.messages[body.messages.length - 1].id) {
                st.problems.push(`cursor ${body.cursor} is not the last message's id ${body.messages[body.messages.length - 1].id}`);
            }
            cursor = body.cursor;
        }
    },

    // A plain browser WebSocket.
    ws(url) {
        const st = (T.st = { data: [], opened: false, closes: [], errors: 0 });
        const ws = new WebSocket(url);
        T.sock = ws;
        ws.onopen = () => (st.opened = true);
        ws.onmessage = (e) => st.data.push(typeof e.data === 'string' ? e.data : `<binary ${e.data}>`);
        ws.onerror = () => st.errors++;
        ws.onclose = (e) => st.closes.push({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    },
    wsSend(text) {
        T.sock.send(text);
    },

    // WebSockets by name, for permessage-deflate (chromium offers it on every WebSocket): each
    // records in T.x[name] the extensions agreed (ws.extensions, read at open) and every message.
    x: {},
    xs: {},
    wsx(name, url) {
        const st = (T.x[name] = { extensions: null, data: [], opened: false, closes: [], errors: 0 });
        const ws = new WebSocket(url);
        T.xs[name] = ws;
        ws.onopen = () => {
            st.opened = true;
            st.extensions = ws.extensions;
        };
        ws.onmessage = (e) => st.data.push(typeof e.data === 'string' ? e.data : `<binary ${e.data}>`);
        ws.onerror = () => st.errors++;
        ws.onclose = (e) => st.closes.push({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    },
    wsxSend(name, text) {
        T.xs[name].send(text);
    },
    // Message `i` of T.x[name] compared, in the page, with `want`: equal or not, both lengths,
    // the first index where they differ, and the SHA-256 (hex) of what arrived, encoded as UTF-8.
    async wsxCompare(name, i, want) {
        const got = T.x[name].data[i];
        if (typeof got !== 'string') return { missing: true, have: T.x[name].data.length };
        let first = -1;
        for (let k = 0; k < Math.max(got.length, want.length); k++) {
            if (got[k] !== want[k]) {
                first = k;
                break;
            }
        }
        const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(got));
        const sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
        return { equal: got === want, gotLength: got.length, wantLength: want.length, first, sha256 };
    },

    // Cross-origin publish with fetch (a simple request: no preflight). The answer is readable
    // only if it carries a matching Access-Control-Allow-Origin; a failed fetch is an error.
    async publish(url, body) {
        try {
            const r = await fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'text/plain' } });
            return { status: r.status, text: await r.text() };
        } catch (e) {
            return { error: String(e) };
        }
    },

    // What a page from an origin that is not allowed gets: a WebSocket and a fetch.
    async refused(wsUrl, pollUrl) {
        const out = {};
        out.ws = await new Promise((resolve) => {
            const ws = new WebSocket(wsUrl);
            let opened = false;
            ws.onopen = () => (opened = true);
            ws.onclose = (e) => resolve({ opened, code: e.code, wasClean: e.wasClean });
            setTimeout(() => resolve({ opened, timeout: true }), 5000);
        });
        try {
            const r = await fetch(pollUrl, { headers: { Accept: 'application/json' } });
            out.fetch = { status: r.status, text: await r.text() };
        } catch (e) {
            out.fetch = { error: String(e) };
        }
        return out;
    },
};
