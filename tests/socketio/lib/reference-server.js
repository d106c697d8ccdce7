// The reference server for `--reference` mode: the official npm `socket.io` 4.8.4 server, set up
// to behave as /work/sio-contract.md (issue 19) says edgecomet does, so that the tests can be
// validated before edgecomet exists and a failure against edgecomet is edgecomet's.
//
// A profile says which server a test needs (the same profile starts edgecomet with the matching
// flags, see run.js):
//   conformance: true   the socket.io-protocol v5 test-suite server: namespaces / and /custom,
//                       CORS open, `auth` emitted on connect with the CONNECT payload, `message`
//                       echoed as `message-back`, `message-with-ack` acknowledged with its
//                       arguments; pingInterval 300 ms, pingTimeout 200 ms, connect timeout 1 s,
//                       maxPayload 1,000,000.
//   namespaces: [...]   more namespaces than `/` (--socketio-namespaces).
//   clientPublish       emit("publish", channel, data, ack) publishes (--client-publish).
//   tokenSecret         HS256 subscribe tokens in auth.token / query.token (--token-secret).
//   recoveryMs          connectionStateRecovery with that maxDisconnectionDuration.
//   event               the event name of published messages (--socketio-event; `message`).
//   pingInterval, pingTimeout, maxPayload, connectTimeout
//                       (conformance profile only) instead of 300, 200, 1e6, 1000.
//
// Channels are rooms: a socket joins the channels of its CONNECT auth `channels` (array or
// comma-separated string) and of the handshake query `channels` (comma-separated). A message for
// channel c (POST /pub/c, or a client publish) is emitted as `message` to the rooms c, parent/*,
// and every ancestor/** — always, even with nobody in them, so that connection state recovery
// keeps it for sockets that are away — in every namespace.

import http from 'node:http';
import crypto from 'node:crypto';
import { Server } from 'socket.io';

const SEGMENT = /^[A-Za-z0-9._~:@-]+$/;

// A channel name (no wildcard) or, with allowWildcard, a pattern ending in /* or /**.
export function validChannel(name, allowWildcard = false) {
    if (typeof name !== 'string' || name === '' || name.length > 256) return false;
    const segs = name.split('/');
    return segs.every((s, i) => SEGMENT.test(s) || (allowWildcard && i === segs.length - 1 && (s === '*' || s === '**')));
}

// The rooms a message on `channel` goes to: itself, parent/*, each ancestor/**.
export function roomsFor(channel) {
    const segs = channel.split('/');
    const rooms = [channel];
    if (segs.length >= 2) rooms.push(`${segs.slice(0, -1).join('/')}/*`);
    for (let k = 1; k < segs.length; k++) rooms.push(`${segs.slice(0, k).join('/')}/**`);
    return rooms;
}

// Does `pattern` match channel `ch`?
function matches(pattern, ch) {
    return roomsFor(ch).includes(pattern);
}

// Verifies an HS256 JWT; returns its claims or throws.
function verifyToken(token, secret) {
    if (typeof token !== 'string') throw new Error('no token');
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('malformed token');
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    if (header.alg !== 'HS256') throw new Error('unsupported alg');
    const sig = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2], 'base64url');
    if (given.length !== sig.length || !crypto.timingSafeEqual(given, sig)) throw new Error('bad signature');
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof claims.exp !== 'number' || claims.exp <= Math.floor(Date.now() / 1000)) throw new Error('token expired');
    return claims;
}

const asList = (v) => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

// May a token granting `grants` join `pattern`?
function granted(grants, pattern) {
    return grants.some((g) => g === pattern || (!/\*/.test(pattern) && matches(g, pattern)) || (g.endsWith('/**') && pattern.startsWith(g.slice(0, -2))));
}

function channelsOf(socket) {
    const out = [];
    const a = socket.handshake.auth && socket.handshake.auth.channels;
    if (Array.isArray(a)) out.push(...a);
    else if (typeof a === 'string') out.push(...a.split(','));
    const q = socket.handshake.query && socket.handshake.query.channels;
    if (typeof q === 'string') out.push(...q.split(','));
    return [...new Set(out.map((s) => s.trim()).filter(Boolean))];
}

const parsePayload = (body) => {
    try {
        return JSON.parse(body);
    } catch {
        return body;
    }
};

export async function startReferenceServer(profile = {}, { port = 0, log = () => {} } = {}) {
    const httpServer = http.createServer();
    let io;
    const namespaces = profile.conformance ? ['/', '/custom'] : ['/', ...(profile.namespaces || [])];
    const event = profile.event || 'message';
    const stats = { published: 0 };

    const deliver = (channel, payload) => {
        stats.published++;
        for (const n of namespaces) io.of(n).to(roomsFor(channel)).emit(event, payload);
    };

    httpServer.on('request', (req, res) => {
        // socket.io answers its own path; everything else comes here.
        if (req.url.startsWith('/socket.io/')) return;
        const u = new URL(req.url, 'http://x');
        if (req.method === 'POST' && u.pathname.startsWith('/pub/')) {
            const channel = decodeURIComponent(u.pathname.slice(5));
            const parts = [];
            req.on('data', (d) => parts.push(d));
            req.on('end', () => {
                if (!validChannel(channel)) {
                    res.writeHead(400, { 'content-type': 'text/plain' });
                    return res.end('bad channel\n');
                }
                deliver(channel, parsePayload(Buffer.concat(parts).toString('utf8')));
                res.writeHead(200, { 'content-type': 'text/plain' });
                res.end('ok\n');
            });
            return;
        }
        if (req.method === 'GET' && u.pathname === '/stats') {
            res.writeHead(200, { 'content-type': 'application/json' });
            return res.end(JSON.stringify(stats));
        }
        res.writeHead(404);
        res.end();
    });

    if (profile.conformance) {
        io = new Server(httpServer, {
            pingInterval: profile.pingInterval || 300,
            pingTimeout: profile.pingTimeout || 200,
            maxHttpBufferSize: profile.maxPayload || 1e6,
            connectTimeout: profile.connectTimeout || 1000,
            cors: { origin: '*' },
        });
        for (const n of namespaces) {
            io.of(n).on('connection', (socket) => {
                socket.emit('auth', socket.handshake.auth);
                socket.on('message', (...args) => socket.emit('message-back', ...args));
                socket.on('message-with-ack', (...args) => {
                    const ack = args.pop();
                    if (typeof ack === 'function') ack(...args);
                });
            });
        }
    } else {
        io = new Server(httpServer, {
            connectionStateRecovery: profile.recoveryMs ? { maxDisconnectionDuration: profile.recoveryMs, skipMiddlewares: true } : undefined,
        });
        for (const n of namespaces) {
            const nsp = io.of(n);
            nsp.use((socket, next) => {
                const channels = channelsOf(socket);
                const bad = channels.find((c) => !validChannel(c, true));
                if (bad !== undefined) return next(new Error(`invalid channel ${bad}`));
                if (profile.tokenSecret) {
                    const token = (socket.handshake.auth && socket.handshake.auth.token) || socket.handshake.query.token;
                    let claims;
                    try {
                        claims = verifyToken(token, profile.tokenSecret);
                    } catch (e) {
                        return next(new Error(e.message));
                    }
                    const refused = channels.find((c) => !granted(asList(claims.channels), c));
                    if (refused !== undefined) return next(new Error(`the token does not allow the channel ${refused}`));
                    socket.data.publish = asList(claims.publish);
                    socket.data.exp = claims.exp;
                }
                socket.data.channels = channels;
                next();
            });
            nsp.on('connection', (socket) => {
                if (!socket.recovered) socket.join(socket.data.channels || []);
                if (socket.data.exp) {
                    // The token's end: DISCONNECT (the client does not reconnect by itself).
                    const timer = setTimeout(() => socket.disconnect(true), Math.max(0, socket.data.exp * 1000 - Date.now()));
                    socket.once('disconnect', () => clearTimeout(timer));
                }
                log(`${n} ${socket.id} connected${socket.recovered ? ' (recovered)' : ''}, rooms ${JSON.stringify([...socket.rooms])}`);
                if (profile.clientPublish) {
                    socket.on('publish', (channel, data, ack) => {
                        if (typeof ack !== 'function') return;
                        if (!validChannel(channel)) return ack({ error: 'invalid channel' });
                        if (profile.tokenSecret && !granted(socket.data.publish || [], channel)) return ack({ error: 'the token does not allow publishing on this channel' });
                        deliver(channel, parsePayload(typeof data === 'string' ? data : JSON.stringify(data)));
                        ack({ ok: true });
                    });
                }
            });
        }
    }

    await new Promise((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(port, '127.0.0.1', resolve);
    });
    return {
        port: httpServer.address().port,
        close: () =>
            new Promise((resolve) => {
                io.close(() => resolve());
                httpServer.closeAllConnections?.();
            }),
    };
}
