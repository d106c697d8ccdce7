// Browser side of the CometD tests: the official CometD 9 JavaScript client (npm `cometd`, ES
// modules, served by the static server from node_modules) with the callback-polling transport
// alone, talking to edgecomet on another origin: every Bayeux request is a cross-origin
// <script src="…/cometd/<type>?jsonp=_cometd_jsonp_N&message=…"> the client adds to the page.
//
// One CometD client per page: the transport names its JSONP callbacks window._cometd_jsonp_<N>
// with a counter of its own, so two clients in one page would overwrite each other's callbacks.
// A test that needs two clients opens two pages (they share the browser's cookies, so the two
// sessions also share the BAYEUX_BROWSER cookie, as two tabs would).
//
// Everything the client sends and receives is recorded in C.st (plain data only, so the runner
// can read it with page.evaluate): `in` by the first extension, before the client's own dispatch
// (which matches wildcards itself and would hide a server that delivers too much), `out` as it
// leaves, and per subscription what the subscription callback got. The functions the runner calls
// return plain data and never reject: a missing answer is {timeout: "…"}.

import { CometD, CallbackPollingTransport } from '/node_modules/cometd/cometd.js';

const plain = (x) => (x === undefined ? null : JSON.parse(JSON.stringify(x)));

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

    // A client that can use callback-polling only (the constructor registers websocket,
    // long-polling and callback-polling; all are unregistered, then callback-polling alone is
    // registered again).
    start(url) {
        const cometd = new CometD('edgecomet-browser-test');
        cometd.unregisterTransports();
        cometd.registerTransport('callback-polling', new CallbackPollingTransport());
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

    // The client's state, and what is left of its JSONP requests in the page.
    status() {
        const t = C.cometd.getTransport();
        return {
            status: C.cometd.getStatus(),
            transport: t ? t.type : null,
            transportTypes: C.cometd.getTransportTypes(),
            clientId: C.cometd.getClientId(),
            url: C.cometd.getURL(),
            // <script> elements of requests not answered yet (the client removes each when its
            // callback runs).
            pendingScripts: document.querySelectorAll('script[src*="jsonp=_cometd_jsonp_"]').length,
            pendingCallbacks: Object.keys(window).filter((k) => k.startsWith('_cometd_jsonp_')).length,
        };
    },

    // A Bayeux request of our own, the way callback-polling sends one (a <script> element; the
    // browser adds its cookies), outside the client: {replies} or {error} or {timeout}.
    raw(url, messages) {
        const name = `C_raw_${++rawSeq}`;
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
