// Browser side of the CometD tests: the official CometD 9 JavaScript client (npm `cometd`, ES
// modules, served by the static server from node_modules) with one transport alone, talking to
// edgecomet on another origin. C.start(url, type) registers `type` only:
//
//   - callback-polling: every Bayeux request is a cross-origin
//     <script src="…/cometd/<type>?jsonp=_cometd_jsonp_N&message=…"> the client adds to the page;
//   - long-polling: XMLHttpRequest POSTs of JSON arrays to …/cometd/<type>, withCredentials (so
//     CORS preflights, and answers that must allow credentials);
//   - websocket: one WebSocket to …/cometd (the URL with ws: for http:), arrays in text frames.
//
// One CometD client per page: callback-polling names its JSONP callbacks window._cometd_jsonp_<N>
// with a counter of its own, so two clients in one page would overwrite each other's callbacks.
// A test that needs two clients opens two pages (they share the browser's cookies, so the two
// sessions also share the BAYEUX_BROWSER cookie, as two tabs would).
//
// Everything the client sends and receives is recorded in C.st (plain data only, so the runner
// can read it with page.evaluate): `in` by the first extension, before the client's own dispatch
// (which matches wildcards itself and would hide a server that delivers too much), `out` as it
// leaves, and per subscription what the subscription callback got. The page also counts, under
// the client, the XMLHttpRequests in flight and the WebSockets it opened (C.net), so the runner
// can tell a held /meta/connect from the page's side whatever the transport. The functions the
// runner calls return plain data and never reject: a missing answer is {timeout: "…"}.

import { CometD, CallbackPollingTransport, LongPollingTransport, WebSocketTransport } from '/node_modules/cometd/cometd.js';

const TRANSPORTS = {
    'callback-polling': () => new CallbackPollingTransport(),
    'long-polling': () => new LongPollingTransport(),
    websocket: () => new WebSocketTransport(),
};

const plain = (x) => (x === undefined ? null : JSON.parse(JSON.stringify(x)));

// What the page's network objects do, whoever uses them: XMLHttpRequests sent and still in
// flight, and every WebSocket created (the client's; C.raw uses the original constructor).
const net = { xhrSent: 0, xhrInFlight: 0, sockets: [] };
const xhrSend = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.send = function (...args) {
    net.xhrSent++;
    net.xhrInFlight++;
    this.addEventListener('loadend', () => net.xhrInFlight--);
    return xhrSend.apply(this, args);
};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
        super(url, protocols);
        const s = { url: String(url), opened: false, closed: null };
        net.sockets.push(s);
        this.addEventListener('open', () => (s.opened = true));
        this.addEventListener('close', (e) => (s.closed = { code: e.code, reason: e.reason, wasClean: e.wasClean }));
    }
};

// A reply as plain data; a failure holds the transport and maybe an exception.
function replyData(reply) {
    if (!reply || typeof reply !== 'object') return { notAReply: String(reply) };
    const r = { ...reply };
    if (r.failure) {
        const f = r.failure;
        r.failure = {
            reason: f.reason,
            httpCode: f.httpCode,
            exception: f.exception && String(f.exception),
            connectionType: f.connectionType,
        };
    }
    return plain(r);
}

// Resolves with what `start` hands to done(), or with {timeout} after ms.
function within(ms, what, start) {
    return new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ timeout: `no ${what} within ${ms} ms` }), ms);
        try {
            start((v) => {
                clearTimeout(timer);
                resolve(v);
            });
        } catch (e) {
            clearTimeout(timer);
            resolve({ thrown: String(e) });
        }
    });
}

let rawSeq = 0;

window.C = {
    st: null,
    cometd: null,
    type: null,
    net,

    // A client that can use `type` only (the constructor registers websocket, long-polling and
    // callback-polling; all are unregistered, then `type` alone is registered again).
    start(url, type) {
        const cometd = new CometD('edgecomet-browser-test');
        cometd.unregisterTransports();
        cometd.registerTransport(type, TRANSPORTS[type]());
        cometd.configure({
            url,
            logLevel: 'warn',
            maxNetworkDelay: 5000,
            backoffIncrement: 100,
            maxBackoff: 1000,
        });
        const st = (C.st = { in: [], out: [], subs: {}, transportTypes: cometd.getTransportTypes() });
        cometd.registerExtension('wire-capture', {
            incoming(m) {
                st.in.push(plain(m));
                return m;
            },
            outgoing(m) {
                st.out.push(plain(m));
                return m;
            },
        });
        C.cometd = cometd;
        C.type = type;
        return st.transportTypes;
    },

    handshake() {
        return within(10_000, 'handshake reply', (done) => C.cometd.handshake((r) => done(replyData(r))));
    },

    // Messages given to the subscription callback go to C.st.subs[channel].
    subscribe(channel) {
        const list = (C.st.subs[channel] = C.st.subs[channel] || []);
        return within(8000, `reply to subscribe ${channel}`, (done) =>
            C.cometd.subscribe(
                channel,
                (m) => list.push({ channel: m.channel, data: plain(m.data) }),
                (r) => done(replyData(r)),
            ),
        );
    },

    publish(channel, data) {
        return within(8000, `reply to the publish on ${channel}`, (done) =>
            C.cometd.publish(channel, data, (r) => done(replyData(r))),
        );
    },

    // Publishes every item of list without waiting in between; the replies, in list order.
    publishAll(channel, list) {
        return Promise.all(list.map((d) => C.publish(channel, d)));
    },

    remoteCall(target, data, timeout) {
        return within(timeout + 3000, `answer to remoteCall ${target}`, (done) =>
            C.cometd.remoteCall(target, data, timeout, (r) => done(replyData(r))),
        );
    },

    disconnect() {
        return within(8000, 'disconnect reply', (done) => C.cometd.disconnect((r) => done(replyData(r))));
    },

    // The client's state, and what is left of its requests in the page.
    status() {
        const t = C.cometd.getTransport();
        const answered = new Set(C.st.in.filter((m) => m.channel === '/meta/connect').map((m) => m.id));
        return {
            status: C.cometd.getStatus(),
            transport: t ? t.type : null,
            transportTypes: C.cometd.getTransportTypes(),
            clientId: C.cometd.getClientId(),
            url: C.cometd.getURL(),
            // /meta/connect messages sent and not answered yet (any transport).
            pendingConnects: C.st.out.filter((m) => m.channel === '/meta/connect' && !answered.has(m.id)).length,
            // callback-polling: <script> elements of requests not answered yet (the client
            // removes each when its callback runs).
            pendingScripts: document.querySelectorAll('script[src*="jsonp=_cometd_jsonp_"]').length,
            pendingCallbacks: Object.keys(window).filter((k) => k.startsWith('_cometd_jsonp_')).length,
            // long-polling: XMLHttpRequests not finished.
            xhrSent: net.xhrSent,
            xhrInFlight: net.xhrInFlight,
            // websocket: the client's WebSockets, and those open now.
            sockets: plain(net.sockets),
            socketsOpen: net.sockets.filter((s) => s.opened && !s.closed).length,
        };
    },

    // One /meta/connect is outstanding, and the transport holds it: one script waiting
    // (callback-polling), one XHR in flight (long-polling), the one WebSocket open (websocket).
    held() {
        const s = C.status();
        if (s.pendingConnects !== 1) return false;
        if (C.type === 'callback-polling') return s.pendingScripts === 1 && s.xhrSent === 0 && s.sockets.length === 0;
        if (C.type === 'long-polling') return s.xhrInFlight === 1 && s.pendingScripts === 0 && s.sockets.length === 0;
        return s.socketsOpen === 1 && s.sockets.length === 1 && s.pendingScripts === 0 && s.xhrSent === 0;
    },

    // Nothing outstanding: no connect waiting, no script or XHR pending. (Whether the WebSocket
    // is closed is the runner's business: see the websocket disconnect test.)
    idle() {
        const s = C.status();
        return s.pendingConnects === 0 && s.pendingScripts === 0 && s.pendingCallbacks === 0 && s.xhrInFlight === 0;
    },

    // A Bayeux request of our own, outside the client but the way its transport sends one:
    // {replies} or {error} or {timeout}. callback-polling: a <script> element (the browser adds
    // its cookies); long-polling: a credentialed fetch POST of the JSON array; websocket: a new
    // WebSocket (not counted in C.net) that sends the array and waits for the reply to the last
    // message's id. Message ids should start with "raw-" (the runner's wire checks tell them from
    // the client's by that).
    raw(url, messages) {
        const name = `C_raw_${++rawSeq}`;
        if (C.type === 'long-polling') {
            return within(5000, `answer to the raw request ${name}`, (done) => {
                fetch(url, { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(messages) })
                    .then((r) => (r.status === 200 ? r.json().then((replies) => done({ replies })) : r.text().then((t) => done({ error: `status ${r.status}: ${t}` }))))
                    .catch((e) => done({ error: String(e) }));
            });
        }
        if (C.type === 'websocket') {
            let ws;
            const last = messages[messages.length - 1].id;
            return within(5000, `answer to the raw request ${name}`, (done) => {
                ws = new NativeWebSocket(url.replace(/^http/, 'ws'));
                const replies = [];
                ws.onopen = () => ws.send(JSON.stringify(messages));
                ws.onmessage = (e) => {
                    replies.push(...JSON.parse(e.data));
                    if (replies.some((m) => m.id === last)) done({ replies });
                };
                ws.onclose = (e) => done({ error: `closed ${e.code} ${e.reason}`, replies });
            }).then((v) => {
                ws.close();
                return v;
            });
        }
        const script = document.createElement('script');
        return within(5000, `answer to the raw request ${name}`, (done) => {
            window[name] = (replies) => done({ replies: plain(replies) });
            script.onerror = (e) => done({ error: `script ${e.type}` });
            script.src = `${url}?jsonp=${name}&message=${encodeURIComponent(JSON.stringify(messages))}`;
            document.head.appendChild(script);
        }).then((v) => {
            script.remove();
            delete window[name];
            return v;
        });
    },
};
