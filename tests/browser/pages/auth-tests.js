'use strict';
// Browser side of the authorization tests (docs/auth.md): private push addresses (a page makes
// one with fetch POST /push/new and subscribes to it; a page of another origin sends to it with
// a JSONP <script>) and subscribe tokens (?token= on an EventSource or a WebSocket URL: browsers
// cannot set headers on either). Every EventSource, WebSocket and JSONP send records what it
// sees in A.st[name] (plain data only, so the runner can read it with page.evaluate); the runner
// makes the tokens, publishes and checks the records.

window.A = {
    st: {},
    socks: {},

    // POST /push/new with a cross-origin fetch (a simple request: no preflight). The answer is
    // readable only with a matching Access-Control-Allow-Origin; a failed fetch is an error.
    async pushNew(url) {
        try {
            const r = await fetch(url, { method: 'POST', cache: 'no-store' });
            const text = await r.text();
            let json = null;
            try {
                json = JSON.parse(text);
            } catch {}
            return { status: r.status, contentType: r.headers.get('content-type'), text, json };
        } catch (e) {
            return { error: String(e) };
        }
    },

    // The browser's own EventSource. After an error, readyState CONNECTING means it will
    // reconnect by itself, CLOSED that it gave up (a non-200 answer: docs/auth.md's 401 and 403).
    // `event: expired` (the token's end, docs/auth.md) is recorded apart from messages.
    eventSource(name, url) {
        const st = (A.st[name] = { kind: 'EventSource', data: [], ids: [], opens: 0, errors: [], expired: [], gaps: [], closed: false, events: [] });
        const es = new EventSource(url);
        A.socks[name] = es;
        es.onopen = () => {
            st.opens++;
            st.events.push(`open after ${st.data.length} messages`);
        };
        es.onmessage = (e) => {
            st.data.push(e.data);
            st.ids.push(e.lastEventId);
        };
        es.addEventListener('expired', (e) => {
            st.expired.push(e.data);
            st.events.push(`expired: ${e.data}`);
        });
        es.addEventListener('gap', (e) => st.gaps.push(e.data));
        es.onerror = () => {
            st.errors.push({ readyState: es.readyState, at: Date.now(), after: st.data.length });
            st.events.push(`error (readyState ${es.readyState}) after ${st.data.length} messages`);
            if (es.readyState === EventSource.CLOSED) st.closed = true;
        };
    },

    // A plain browser WebSocket; every error and close event says whether the socket had opened.
    webSocket(name, url) {
        const st = (A.st[name] = { kind: 'WebSocket', data: [], opened: false, openAt: null, errors: [], closes: [], events: [] });
        const ws = new WebSocket(url);
        A.socks[name] = ws;
        ws.onopen = () => {
            st.opened = true;
            st.openAt = Date.now();
            st.events.push('open');
        };
        ws.onmessage = (e) => st.data.push(typeof e.data === 'string' ? e.data : `<binary ${e.data}>`);
        ws.onerror = () => {
            st.errors.push({ at: Date.now(), opened: st.opened });
            st.events.push('error');
        };
        ws.onclose = (e) => {
            st.closes.push({ code: e.code, reason: e.reason, wasClean: e.wasClean, at: Date.now(), opened: st.opened });
            st.events.push(`close ${e.code}`);
        };
    },

    close(name) {
        const s = A.socks[name];
        if (s) s.close();
    },

    // Sends `message` to a private address the way a page of any origin can: a JSONP <script>,
    // GET BASE/push/ADDRESS?message=…&callback=jsonp_NAME (no CORS involved). Resolves once the
    // script's load or error event fired (at most 10 s) with what happened: the callback's
    // arguments, load (a 200 script ran) or error (e.g. a 404).
    send(name, base, address, message) {
        const st = (A.st[name] = { called: [], load: false, error: false, timeout: false, src: null });
        const cb = `jsonp_${name}`;
        window[cb] = (...args) => st.called.push(JSON.parse(JSON.stringify(args)));
        return new Promise((resolve) => {
            const s = document.createElement('script');
            let done = false;
            const end = (what) => {
                if (done) return;
                done = true;
                st[what] = true;
                s.remove();
                resolve(st);
            };
            s.onload = () => end('load');
            s.onerror = () => end('error');
            setTimeout(() => end('timeout'), 10_000);
            s.src = st.src = `${base}/push/${address}?message=${encodeURIComponent(message)}&callback=${cb}`;
            document.head.appendChild(s);
        });
    },
};
