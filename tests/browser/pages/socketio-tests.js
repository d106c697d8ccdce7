// Browser side of the Socket.IO tests: the official client, npm `socket.io-client` 4.x (its UMD
// bundle dist/socket.io.js, loaded by socketio.html as a classic script: window.io; served by the
// static server from node_modules), talking to edgecomet on another origin.
//
// S.connect(name, url, opts) opens one socket (always `forceNew`: a Manager, so an Engine.IO
// session, of its own) and records in S.st[name] everything it sees, as plain data the runner
// reads with page.evaluate:
//
//   connects:      each `connect`: socket id, `socket.recovered`, the Engine.IO transport then;
//   disconnects:   each `disconnect` reason;  connectErrors: each `connect_error` (message, data);
//   data:          args[0] of every `message` event (the payload; with state recovery on the
//                  server appends the message's id, the offset, as a last argument: `offsets`),
//                  `argc` the number of arguments of each, `via` the transport it came over;
//   events:        every other event the server emitted ([name, ...args], ArrayBuffers as
//                  {binary: [bytes]});
//   engine:        per Engine.IO session the manager opened: its first transport and upgrades;
//   manager:       `reconnect_attempt` / `reconnect` / `reconnect_error` of the manager.
//
// The functions the runner calls return plain data and never reject.

const io = window.io;
if (typeof io !== 'function') throw new Error('socket.io.js did not define window.io');

// ArrayBuffers and typed arrays as {binary: [bytes]}, recursively; the rest as JSON would have it.
function plain(x) {
    if (x instanceof ArrayBuffer) return { binary: Array.from(new Uint8Array(x)) };
    if (ArrayBuffer.isView(x)) return { binary: Array.from(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)) };
    if (Array.isArray(x)) return x.map(plain);
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
    return x === undefined ? null : x;
}

// The reverse, for what the runner passes: {binary: [bytes]} becomes an ArrayBuffer.
function live(x) {
    if (Array.isArray(x)) return x.map(live);
    if (x && typeof x === 'object') {
        if (Array.isArray(x.binary) && Object.keys(x).length === 1) return new Uint8Array(x.binary).buffer;
        return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, live(v)]));
    }
    return x;
}

const sockets = {};

window.S = {
    st: {},

    connect(name, url, opts = {}) {
        const socket = io(url, { forceNew: true, ...opts });
        sockets[name] = socket;
        const st = (S.st[name] = {
            connects: [],
            disconnects: [],
            connectErrors: [],
            data: [],
            argc: [],
            offsets: [],
            via: [],
            events: [],
            engine: [],
            manager: [],
        });
        const transport = () => (socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : null);
        const watchEngine = () => {
            const engine = socket.io.engine;
            const e = { first: transport(), upgrades: [], closes: [] };
            st.engine.push(e);
            engine.on('upgrade', (t) => e.upgrades.push(t.name));
            engine.on('close', (reason) => e.closes.push(String(reason)));
        };
        socket.io.on('open', watchEngine);
        socket.io.on('reconnect_attempt', (n) => st.manager.push(`reconnect_attempt ${n}`));
        socket.io.on('reconnect', (n) => st.manager.push(`reconnect ${n}`));
        socket.io.on('reconnect_error', (e) => st.manager.push(`reconnect_error ${e && e.message}`));
        socket.on('connect', () => st.connects.push({ id: socket.id, recovered: socket.recovered, transport: transport(), at: Date.now() }));
        socket.on('disconnect', (reason) => st.disconnects.push(String(reason)));
        socket.on('connect_error', (e) => st.connectErrors.push({ message: e && e.message, data: plain(e && e.data), active: socket.active }));
        socket.onAny((event, ...args) => {
            if (event === 'message') {
                st.data.push(plain(args[0]));
                st.argc.push(args.length);
                if (args.length > 1) st.offsets.push(args[args.length - 1]);
                st.via.push(transport());
            } else {
                st.events.push([event, ...plain(args)]);
            }
        });
        return true;
    },

    // socket.emit(event, ...args, ack) with a timeout: {ack: [...]} or {err: "…"}.
    emit(name, event, args, ms = 5000) {
        return new Promise((resolve) => {
            try {
                sockets[name].timeout(ms).emit(event, ...live(args), (err, ...resp) =>
                    resolve(err ? { err: String(err && err.message ? err.message : err) } : { ack: plain(resp) }),
                );
            } catch (e) {
                resolve({ thrown: String(e) });
            }
        });
    },

    // socket.emit(event, ...args), no ack.
    send(name, event, args) {
        sockets[name].emit(event, ...live(args));
        return true;
    },

    // The socket's state now.
    info(name) {
        const s = sockets[name];
        return {
            connected: s.connected,
            active: s.active,
            id: s.id || null,
            recovered: s.recovered,
            transport: s.io.engine && s.io.engine.transport ? s.io.engine.transport.name : null,
            // What the client keeps for connection state recovery (socket.io-client 4.6+, private
            // fields): the CONNECT reply's pid and the last offset received.
            pid: s._pid === undefined ? null : s._pid,
            lastOffset: s._lastOffset === undefined ? null : s._lastOffset,
        };
    },

    close(name) {
        sockets[name].disconnect();
        return true;
    },
};
