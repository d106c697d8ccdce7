'use strict';
// Browser side of the dojox/socket tests. The real dojox/socket 1.17 (LongPoll, WebSocket,
// Reconnect) is loaded with dojo's AMD loader; window.D.ready is set once it is, or
// D.loadError if it failed. Every socket records what it sees in D.st[name] (plain data only).

window.D = { ready: false, loadError: null, st: {}, socks: {} };

require.on('error', (e) => {
    D.loadError = `dojo loader: ${e.message} ${JSON.stringify(e.info || '').slice(0, 300)}`;
});

require(['dojox/socket', 'dojox/socket/Reconnect', 'dojo/aspect'], (Socket, Reconnect, aspect) => {
    function record(name) {
        return (D.st[name] = {
            data: [], answers: [], bad: [], errors: [], closes: [], opens: 0, gaps: [],
            inflight: 0, lastPollEnd: 0, sends: [],
        });
    }

    // Count the requests a LongPoll socket has outstanding by wrapping its transport (every poll
    // and every send() goes through socket.transport).
    function trackTransport(sock, st) {
        const transport = sock.transport;
        sock.transport = function (args) {
            st.inflight++;
            const d = transport.apply(this, arguments);
            const end = () => {
                st.inflight--;
                st.lastPollEnd = Date.now();
            };
            d.then(end, end);
            return d;
        };
    }

    function errorText(e) {
        const err = e && e.error;
        if (!err) return String(e && e.type);
        const status = err.status !== undefined ? err.status : err.response && err.response.status;
        return `${err.name || 'error'} status=${status} ${err.message || ''}`.trim();
    }

    // A long-poll answer is the JSON body of docs/http-transports.md; each message in it is
    // recorded. Anything else arriving as a message event is recorded as bad.
    function onLongPollMessage(st, e) {
        let body;
        try {
            body = JSON.parse(e.data);
        } catch (err) {
            st.bad.push(`message event that is not JSON: ${JSON.stringify(String(e.data).slice(0, 200))}`);
            return;
        }
        if (!body || !Array.isArray(body.messages)) {
            st.bad.push(`answer without messages: ${String(e.data).slice(0, 200)}`);
            return;
        }
        if (body.gap) st.gaps.push(JSON.stringify(body.gap));
        st.answers.push(body.messages.length);
        for (const m of body.messages) st.data.push(m.data);
    }

    D.longPoll = (name, url, clientId, interval, reconnectTime) => {
        const st = record(name);
        let sock = Socket.LongPoll({
            url,
            headers: { 'Client-Id': clientId, Accept: 'application/json' },
            interval,
        });
        trackTransport(sock, st);
        if (reconnectTime) sock = Reconnect(sock, { reconnectTime });
        D.socks[name] = sock;
        sock.on('open', () => st.opens++);
        sock.on('message', (e) => onLongPollMessage(st, e));
        sock.on('error', (e) => st.errors.push(errorText(e)));
        sock.on('close', (e) => st.closes.push({ wasClean: e.wasClean }));
    };

    // dojox/socket(url): a WebSocket where the browser has one (falls back to LongPoll if it
    // never opens; st.fellBack says so).
    D.webSocket = (name, url, reconnectTime) => {
        const st = record(name);
        let sock = Socket(url);
        st.isWebSocket = sock instanceof WebSocket;
        if (reconnectTime) sock = Reconnect(sock, { reconnectTime });
        D.socks[name] = sock;
        sock.on('open', () => st.opens++);
        sock.on('message', (e) => st.data.push(e.data));
        sock.on('error', () => st.errors.push('error'));
        sock.on('close', (e) => st.closes.push({ code: e.code, wasClean: e.wasClean }));
    };

    // A native EventSource beside the dojox sockets (the restart test): it reconnects by itself
    // with Last-Event-ID.
    D.eventSource = (name, url) => {
        const st = record(name);
        st.ids = [];
        const es = new EventSource(url);
        D.socks[name] = es;
        es.onopen = () => st.opens++;
        es.onerror = () => st.errors.push(`error (readyState ${es.readyState}) after ${st.data.length} messages`);
        es.onmessage = (e) => {
            st.data.push(e.data);
            st.ids.push(e.lastEventId);
        };
        es.addEventListener('gap', (e) => st.gaps.push(e.data));
    };

    // send() through the socket; for LongPoll, the deferred's outcome is recorded.
    D.send = (name, text) => {
        const st = D.st[name];
        const r = D.socks[name].send(text);
        if (r && typeof r.then === 'function') {
            const entry = { text, outcome: 'pending' };
            st.sends.push(entry);
            r.then(
                (resp) => (entry.outcome = `resolved ${JSON.stringify(resp)}`),
                (err) => (entry.outcome = `rejected ${errorText({ error: err })}`),
            );
        } else {
            st.sends.push({ text, outcome: 'sent' });
        }
    };

    // Socket.WebSocket falls back to LongPoll (and Reconnect swaps in a new socket) through
    // Socket.replace, which gives the socket an own send method.
    D.replaced = (name) => Object.prototype.hasOwnProperty.call(D.socks[name], 'send');

    D.close = (name) => D.socks[name].close();
    D.aspect = aspect;
    D.ready = true;
});
