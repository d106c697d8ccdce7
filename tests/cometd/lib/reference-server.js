// The reference Bayeux server used to validate the tests (run.js --reference): the official
// CometD NodeJS server, npm `cometd-nodejs-server` 1.2.1, with its own ack extension
// (`cometd-nodejs-server/ack-extension.js`), in this process, on 127.0.0.1 and a free port.
//
// What the package does not have, and is added here (each is small and says what it mirrors):
//
//  - WebSocket. The package is long-polling only ("WebSocket not (yet) supported", its README).
//    shimWebSocket() accepts upgrades on the Bayeux path with the `ws` package and hands every
//    text frame (a JSON array of messages) to the server's own HTTP transport as if it were a
//    POST body, sending each reply array back as one text frame. So all Bayeux processing
//    (sessions, held /meta/connect, queues, extensions) is the package's; only the framing is
//    ours. Like the Java server's WebSocket endpoint, a frame that is not JSON closes the
//    connection with 1011, sessions are found by clientId whatever the connection, and messages
//    for a client leave in the reply to its next request or in its held /meta/connect.
//  - /service/echo: answers the sender with the request's id and data, successful:true — the
//    message the Java server's RemoteCall support sends, which the JavaScript client's
//    remoteCall() matches by id.
//  - timesync: the Java server's TimesyncExtension semantics (the reply to a meta message whose
//    request carried ext.timesync {tc,l,o} gets ext.timesync {tc, ts, p, a}, when l is 0 or the
//    client's estimate is off by 25 ms or more).
//  - supportedConnectionTypes: the package answers ["long-polling"] only; with the shim it
//    serves both, so the handshake reply says ["websocket", "long-polling"].
//  - a security policy refusing subscriptions to /* and /**, as the Java server's default
//    (and issue 5) do; /meta/** is refused by the package itself.
//
// Configuration chosen so that tests are quick and meaningful: timeout 5 s (held /meta/connect),
// maxInterval 3 s (session expiry after the last /meta/connect), sweep every 250 ms, interval 0,
// no limit of sessions per browser cookie (the Node client keeps one cookie jar per process, so
// every test client looks like the same browser).

import http from 'node:http';
import crypto from 'node:crypto';
import cometdServerPkg from 'cometd-nodejs-server';
import ackPkg from 'cometd-nodejs-server/ack-extension.js';
import { WebSocketServer } from 'ws';

export const REFERENCE_OPTIONS = {
    logLevel: 'info',
    timeout: 5000,
    maxInterval: 3000,
    interval: 0,
    sweepPeriod: 250,
    maxSessionsPerBrowser: -1,
};

const SHIM_COOKIE = 'BAYEUX_BROWSER=websocket-shim';

function timesyncExtension(accuracyTarget = 25) {
    return {
        incoming(cometd, session, message, callback) {
            const sync = message.ext && message.ext.timesync;
            if (typeof message.channel === 'string' && message.channel.startsWith('/meta/') && sync && message.reply) {
                Object.defineProperty(message.reply, '_timesyncIn', { value: { ...sync, ts: Date.now() } });
            }
            callback(undefined, true);
        },
        outgoing(cometd, sender, session, message, callback) {
            const sync = message._timesyncIn;
            if (sync && typeof sync.tc === 'number') {
                const out = { tc: sync.tc, ts: sync.ts, p: Date.now() - sync.ts };
                let send = true;
                if (typeof sync.l === 'number') {
                    const a = Math.trunc(sync.tc + (sync.o || 0) + sync.l - sync.ts);
                    out.a = a;
                    send = sync.l === 0 || Math.abs(a) >= accuracyTarget;
                }
                if (send) {
                    message.ext = message.ext || {};
                    message.ext.timesync = out;
                }
            }
            callback(undefined, true);
        },
    };
}

function connectionTypesExtension() {
    return {
        outgoing(cometd, sender, session, message, callback) {
            if (message.channel === '/meta/handshake' && message.successful) {
                message.supportedConnectionTypes = ['websocket', 'long-polling'];
            }
            callback(undefined, true);
        },
    };
}

function shimWebSocket(httpServer, cometd, path, log) {
    const wss = new WebSocketServer({ noServer: true });
    // The browser cookie the shim files every WebSocket session under (see above), also set on the
    // 101 so that a raw HTTP request can name the same session, as a long-polling client would.
    wss.on('headers', (headers) => headers.push(`Set-Cookie: ${SHIM_COOKIE}; Path=/`));
    httpServer.on('upgrade', (req, socket, head) => {
        const p = req.url.split('?')[0];
        if (p !== path && !p.startsWith(path + '/')) {
            socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
            return;
        }
        wss.handleUpgrade(req, socket, head, (ws) => {
            ws.on('message', (data, isBinary) => {
                if (isBinary) {
                    ws.close(1003, 'binary');
                    return;
                }
                let messages;
                try {
                    messages = JSON.parse(data.toString('utf8'));
                } catch (e) {
                    ws.close(1011, 'bad JSON');
                    return;
                }
                if (!Array.isArray(messages)) {
                    // The Java server accepts a single object too; the package's transport
                    // needs an array.
                    messages = [messages];
                }
                const hasConnect = messages.some((m) => m && m.channel === '/meta/connect');
                const listeners = {};
                const res = {
                    statusCode: 200,
                    setHeader() {},
                    addListener(ev, fn) {
                        (listeners[ev] = listeners[ev] || []).push(fn);
                    },
                    get socket() {
                        return { destroyed: ws.readyState !== ws.OPEN };
                    },
                    end(content) {
                        if (this.statusCode === 200 && typeof content === 'string') {
                            if (ws.readyState === ws.OPEN) ws.send(content);
                        } else if (hasConnect && this.statusCode === 500 && content === undefined) {
                            // A held /meta/connect replaced by a newer one (the package's
                            // duplicate-connect cancel): on WebSocket nothing is sent for it.
                        } else {
                            log(`websocket shim: request failed with ${this.statusCode}, closing 1011`);
                            if (ws.readyState === ws.OPEN) ws.close(1011, 'bayeux failure');
                        }
                        for (const fn of listeners.finish || []) fn();
                    },
                };
                const req = {
                    method: 'POST',
                    body: messages,
                    headers: { cookie: SHIM_COOKIE },
                    addListener() {},
                };
                try {
                    cometd.handle(req, res);
                } catch (e) {
                    log(`websocket shim: ${e && e.message}`);
                    if (ws.readyState === ws.OPEN) ws.close(1011, 'bayeux failure');
                }
            });
            ws.on('error', () => {});
        });
    });
    return wss;
}

export async function startReferenceServer({ path = '/cometd', port = 0, log = () => {} } = {}) {
    const cometd = cometdServerPkg.createCometDServer(REFERENCE_OPTIONS);
    cometd.addExtension(connectionTypesExtension());
    cometd.addExtension(timesyncExtension());
    cometd.addExtension(new ackPkg.AcknowledgedMessagesExtension());
    cometd.policy = {
        canSubscribe(session, message, channel, callback) {
            callback(null, channel.name !== '/*' && channel.name !== '/**');
        },
    };
    const echo = cometd.createServerChannel('/service/echo');
    echo.addListener('message', (session, channel, message, callback) => {
        session._deliver(session, { id: message.id, channel: '/service/echo', successful: true, data: message.data }, () => {});
        callback();
    });

    const server = http.createServer((req, res) => {
        const p = req.url.split('?')[0];
        if (p === path || p.startsWith(path + '/')) {
            cometd.handle(req, res);
        } else {
            res.statusCode = 404;
            res.end();
        }
    });
    // The package's README: Node's request timeout must exceed the Bayeux timeout.
    server.requestTimeout = 0;
    server.keepAliveTimeout = 30_000;
    const wss = shimWebSocket(server, cometd, path, log);
    const sockets = new Set();
    server.on('connection', (s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
    });
    const bound = server.address().port;
    return {
        port: bound,
        url: `http://127.0.0.1:${bound}${path}`,
        cometd,
        id: crypto.randomBytes(4).toString('hex'),
        async close() {
            cometd.close();
            for (const c of wss.clients) c.terminate();
            for (const s of sockets) s.destroy();
            await new Promise((r) => server.close(() => r()));
        },
    };
}
