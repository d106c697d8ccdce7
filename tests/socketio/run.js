// Socket.IO / Engine.IO tests (issue 19), judged by clients we did not write: the official
// `socket.io-client` 4.8.4, and raw Engine.IO v4 / Socket.IO v5 requests written from the protocol
// documents (lib/raw.js) for what the official client never sends.
//
//   node run.js --reference                     the official `socket.io` 4.8.4 server, in this
//                                               process, set up as the contract says (validates
//                                               the tests)
//   node run.js --edgecomet-bin PATH [--edgecomet-args "ARGS"] [--recovery-args "ARGS"]
//                                               starts PATH --listen 127.0.0.1:0 --workers 2 ARGS
//                                               plus each test's flags (one process per set of
//                                               flags, started when a test first needs it)
//
// Other options: --only REGEX (tests whose name matches; the others are listed as skipped and the
// run fails, so a partial run is never taken for a full one), --verbose.
//
// Output: "ok - NAME (N ms)", "not ok - NAME: DETAILS", "skip - NAME (REASON)" per test,
// diagnostics on lines starting with "#", a summary line; exit status 1 if any test failed or was
// not run. Every wait has a time limit, every test its own (TEST_TIMEOUT_MS unless it says), the
// whole run RUN_DEADLINE_MS; the edgecomet processes are listed in SOCKETIO_TESTS_PIDFILE so that
// the shell wrapper kills them however the run ends.

import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import util from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { io as ioClient } from 'socket.io-client';
import { Failure, request, errorBody, Polling, RawWs, SEP, connectPacket, parseSio } from './lib/raw.js';
import { startProxy } from './lib/proxy.js';

const RUN_DEADLINE_MS = 150_000;
const TEST_TIMEOUT_MS = 10_000;
const RUN = crypto.randomBytes(3).toString('hex'); // channel prefix: runs never see each other
const TOKEN_SECRET = crypto.randomBytes(32).toString('hex');
const RECOVERY_WINDOW_MS = 2000;

// ---- options -------------------------------------------------------------------------------------

function usage(msg) {
    if (msg) console.error(`run.js: ${msg}`);
    console.error(
        'usage: node run.js (--reference | --edgecomet-bin PATH [--edgecomet-args "ARGS"] [--recovery-args "ARGS"])\n' +
            '                   [--only REGEX] [--verbose]',
    );
    process.exit(2);
}

const opts = {
    mode: null,
    bin: null,
    binArgs: (process.env.EDGECOMET_ARGS || '').split(/\s+/).filter(Boolean),
    recoveryArgs: process.env.SOCKETIO_RECOVERY_ARGS || null,
    only: null,
    verbose: false,
};
{
    const a = process.argv.slice(2);
    for (let i = 0; i < a.length; i++) {
        const need = () => {
            if (i + 1 >= a.length) usage(`${a[i]} needs a value`);
            return a[++i];
        };
        switch (a[i]) {
            case '--reference':
                opts.mode = 'reference';
                break;
            case '--edgecomet-bin':
                opts.mode = 'edgecomet';
                opts.bin = path.resolve(need());
                break;
            case '--edgecomet-args':
                opts.binArgs = need().split(/\s+/).filter(Boolean);
                break;
            case '--recovery-args':
                opts.recoveryArgs = need();
                break;
            case '--only':
                opts.only = new RegExp(need());
                break;
            case '--verbose':
                opts.verbose = true;
                break;
            case '--help':
            case '-h':
                usage();
                break;
            default:
                usage(`unknown argument ${a[i]}`);
        }
    }
    if (!opts.mode) usage('say which server: --reference or --edgecomet-bin');
}
const IS_REFERENCE = opts.mode === 'reference';

// ---- servers -------------------------------------------------------------------------------------
//
// A profile is the server a test needs; each is started once, when a test first asks for it, and
// restarted if it died. lib/reference-server.js documents what each profile means.

const PROFILES = {
    conformance: { conformance: true },
    main: { namespaces: ['/chat', '/admin'], clientPublish: true },
    tokens: { tokenSecret: TOKEN_SECRET, clientPublish: true },
    recovery: { recoveryMs: RECOVERY_WINDOW_MS },
    event: { event: 'update' },
    timers: { conformance: true, pingInterval: 400, pingTimeout: 300, maxPayload: 5000, connectTimeout: 600 },
};

// The flags that turn state recovery on with a window of `ms` milliseconds (docs/socketio.md);
// --recovery-args "… {ms} …" says otherwise (for another server build).
function recoveryArgs(ms) {
    const tmpl = opts.recoveryArgs || '--socketio-recovery {ms}ms';
    return tmpl.replaceAll('{ms}', String(ms)).split(/\s+/).filter(Boolean);
}

function edgecometArgs(profile) {
    const a = [];
    if (profile.conformance) a.push('--socketio-conformance');
    if (profile.namespaces) a.push('--socketio-namespaces', profile.namespaces.join(','));
    if (profile.clientPublish && !opts.binArgs.includes('--client-publish')) a.push('--client-publish');
    if (profile.tokenSecret) a.push('--token-secret', profile.tokenSecret);
    if (profile.recoveryMs) a.push(...recoveryArgs(profile.recoveryMs));
    if (profile.event) a.push('--socketio-event', profile.event);
    if (profile.pingInterval) a.push('--socketio-ping-interval', `${profile.pingInterval}ms`);
    if (profile.pingTimeout) a.push('--socketio-ping-timeout', `${profile.pingTimeout}ms`);
    if (profile.maxPayload) a.push('--socketio-max-payload', String(profile.maxPayload));
    if (profile.connectTimeout) a.push('--socketio-connect-timeout', `${profile.connectTimeout}ms`);
    return a;
}

const PIDFILE = process.env.SOCKETIO_TESTS_PIDFILE || null;
const servers = new Map(); // profile name -> { port, close, describe, log, proc, died }
function writePidFile() {
    if (!PIDFILE) return;
    const pids = [...servers.values()].filter((s) => s.proc && s.proc.exitCode === null && s.proc.signalCode === null).map((s) => s.proc.pid);
    fs.writeFileSync(PIDFILE, pids.map((p) => `${p}\n`).join(''));
}
let restarts = 0;

async function startEdgecomet(name) {
    const args = ['--listen', '127.0.0.1:0', '--workers', '2', ...opts.binArgs, ...edgecometArgs(PROFILES[name])];
    const proc = spawn(opts.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const srv = { name, proc, out: '', port: 0 };
    srv.died = () => proc.exitCode !== null || proc.signalCode !== null;
    srv.close = () =>
        new Promise((resolve) => {
            if (srv.died()) return resolve();
            const k = setTimeout(() => proc.kill('SIGKILL'), 3000);
            proc.once('exit', () => {
                clearTimeout(k);
                resolve();
            });
            proc.kill('SIGTERM');
        });
    servers.set(name, srv);
    writePidFile();
    proc.once('exit', writePidFile);
    srv.log = () => srv.out;
    srv.port = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "listening on" within 10 s: ${srv.out.slice(-1000)}`)), 10_000);
        const onData = (d) => {
            srv.out += d;
            if (srv.out.length > 200_000) srv.out = srv.out.slice(-100_000);
            const m = /listening on 127\.0\.0\.1:(\d+)/.exec(srv.out);
            if (m) {
                clearTimeout(timer);
                resolve(Number(m[1]));
            }
        };
        proc.stdout.on('data', onData);
        proc.stderr.on('data', onData);
        proc.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
        proc.on('exit', (code, sig) => {
            clearTimeout(timer);
            reject(new Error(`exited (${code ?? sig}) before listening: ${srv.out.slice(-1000)}`));
        });
    });
    const shown = args.map((x, i) => (args[i - 1] === '--token-secret' ? "<this run's secret>" : x));
    srv.describe = `edgecomet ${opts.bin} ${shown.join(' ')} on 127.0.0.1:${srv.port}`;
    return srv;
}

async function startReference(name) {
    const { startReferenceServer } = await import('./lib/reference-server.js');
    const srv = { name, out: '' };
    srv.log = () => srv.out;
    const ref = await startReferenceServer(PROFILES[name], { log: (s) => (srv.out += `${s}\n`) });
    srv.port = ref.port;
    srv.close = ref.close;
    srv.died = () => false;
    srv.describe = `reference socket.io 4.8.4 (profile ${name}: ${JSON.stringify(PROFILES[name]).replace(TOKEN_SECRET, '<secret>')}) on 127.0.0.1:${ref.port}`;
    servers.set(name, srv);
    return srv;
}

const startErrors = new Map(); // profile name -> why its server did not start (not retried)

async function server(name) {
    if (startErrors.has(name)) throw new Failure(`not run: the ${name} server did not start (see above): ${startErrors.get(name).split('\n')[0]}`);
    const have = servers.get(name);
    if (have && !have.died()) return have;
    if (have) {
        restarts++;
        const how = have.proc.exitCode !== null ? `status ${have.proc.exitCode}` : have.proc.signalCode;
        console.log(`# the ${name} server died (${how}); restarting it. Its last output: ${have.out.slice(-600).replace(/\n/g, '\n#   ')}`);
    }
    let srv;
    try {
        srv = IS_REFERENCE ? await startReference(name) : await startEdgecomet(name);
    } catch (e) {
        startErrors.set(name, e.message);
        console.log(`# the ${name} server did not start: ${e.message.replace(/\n/g, '\n#   ')}`);
        throw new Failure(`the ${name} server did not start: ${e.message.split('\n')[0]}`);
    }
    console.log(`# ${name} server: ${srv.describe}`);
    return srv;
}

const closeServers = () => Promise.all([...servers.values()].map((s) => s.close().catch(() => {})));

// ---- test machinery --------------------------------------------------------------------------------

function check(cond, msg) {
    if (!cond) throw new Failure(typeof msg === 'function' ? msg() : msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deepEqual = util.isDeepStrictEqual;
const J = (x) => JSON.stringify(x);

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Failure(`no ${what} within ${ms} ms`)), ms);
        }),
    ]);
}

// The next `event` of an emitter (a socket.io-client socket or manager), or a Failure.
function once(emitter, event, ms, what = `"${event}" event`) {
    let handler;
    return withTimeout(
        new Promise((resolve) => {
            handler = (...args) => resolve(args);
            emitter.once(event, handler);
        }),
        ms,
        what,
    ).finally(() => emitter.off(event, handler));
}

function short(list, n = 5) {
    if (list.length <= 2 * n) return J(list);
    return `${J(list.slice(0, n)).slice(0, -1)}, …${list.length - 2 * n} more…, ${J(list.slice(-n)).slice(1)}`;
}

// null when got equals want, else what differs.
function diffSeq(got, want) {
    if (deepEqual(got, want)) return null;
    const counts = new Map();
    for (const g of got) counts.set(J(g), (counts.get(J(g)) || 0) + 1);
    const missing = want.filter((w) => !counts.has(J(w)));
    const dups = [...counts].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
    const wanted = new Set(want.map(J));
    const extra = got.filter((g) => !wanted.has(J(g)));
    let i = got.findIndex((g, k) => !deepEqual(g, want[k]));
    if (i < 0) i = got.length;
    return `received ${got.length}, expected ${want.length}; missing ${short(missing)}; duplicated ${short(dups)}; unexpected ${short(extra)}; first difference at index ${i}: got ${J(got[i])}, expected ${J(want[i])}`;
}

const tests = [];
// refSkip: the reason the reference server cannot run this test (reported as skipped in
// --reference mode, run against edgecomet).
function test(name, fn, { timeoutMs = TEST_TIMEOUT_MS, refSkip = null } = {}) {
    tests.push({ name, fn, timeoutMs, refSkip });
}

class TestContext {
    constructor(name) {
        this.name = name;
        this.cleanups = [];
        this.notes = [];
        this.used = new Map(); // server name -> log length when first used
    }

    note(s) {
        this.notes.push(s);
    }

    cleanup(fn) {
        this.cleanups.push(fn);
    }

    // The port of the server of profile `name`, started if needed.
    async port(name) {
        const srv = await server(name);
        if (!this.used.has(name)) this.used.set(name, srv.log().length);
        return srv.port;
    }

    // A socket.io-client socket (not connected until it is: autoConnect), closed at the end.
    client(port, nsp = '/', o = {}) {
        const s = ioClient(`http://127.0.0.1:${port}${nsp === '/' ? '' : nsp}`, { forceNew: true, reconnection: false, timeout: 5000, ...o });
        this.cleanup(() => {
            s.disconnect();
            s.io.disconnect(); // the manager of this socket alone (forceNew): no reconnection after the test
        });
        return s;
    }

    ws(port, o) {
        const w = new RawWs(port, o);
        this.cleanup(() => w.close());
        return w;
    }

    async runCleanups() {
        for (const fn of this.cleanups.reverse()) {
            try {
                await fn();
            } catch {}
        }
    }
}

// Connected: resolves once `s` is connected; a Failure with the connect_error message otherwise.
function connected(s, ms = 5000) {
    if (s.connected) return Promise.resolve();
    return withTimeout(
        new Promise((resolve, reject) => {
            s.once('connect', resolve);
            s.once('connect_error', (e) => reject(new Failure(`connect_error: ${e && e.message}${e && e.data ? ` ${J(e.data)}` : ''}`)));
        }),
        ms,
        'connection',
    );
}

// Resolves with the connect_error the server sent (a CONNECT_ERROR packet); a Failure if the
// socket connects instead, or if the error is the transport's (no Engine.IO connection: a server
// without Socket.IO must not pass a test of refusals).
function connectError(s, ms = 5000) {
    let opened = false;
    s.io.once('open', () => (opened = true));
    return withTimeout(
        new Promise((resolve, reject) => {
            s.once('connect', () => reject(new Failure(`connected (sid ${s.id}) where a connect_error was expected`)));
            s.once('connect_error', (e) => {
                if (!opened || (e && e.type === 'TransportError')) reject(new Failure(`connect_error from the transport, not from the server: ${e && e.message} (Engine.IO connection ${opened ? 'opened' : 'never opened'})`));
                else resolve(e);
            });
        }),
        ms,
        'connect_error',
    );
}

// Every `event` a socket receives, first argument only (with state recovery the server appends
// the offset as a last argument). wait(n) resolves once n are there.
function collector(s, event = 'message') {
    const c = { list: [], raw: [], waiters: [] };
    s.on(event, (...args) => {
        c.raw.push(args);
        c.list.push(args[0]);
        for (const w of c.waiters) w();
    });
    c.wait = (pred, ms, what) =>
        withTimeout(
            new Promise((resolve) => {
                const f = () => {
                    if (pred(c.list)) {
                        c.waiters = c.waiters.filter((x) => x !== f);
                        resolve(c.list);
                    }
                };
                c.waiters.push(f);
                f();
            }),
            ms,
            `${what} (received so far ${short(c.list, 3)})`,
        );
    return c;
}

// POST /pub/{channel} with `body` (a string, or JSON-encoded); checks the 200. Every publish of
// the run goes through one keep-alive connection, in order. Order is checked within a channel
// only: messages on two channels may reach a subscriber in either order (edgecomet did swap
// two published one after the other through this one connection).
const pubAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function publish(port, channel, body) {
    const data = typeof body === 'string' ? body : J(body);
    return new Promise((resolve, reject) => {
        const req = http.request(
            { host: '127.0.0.1', port, method: 'POST', path: `/pub/${channel}`, agent: pubAgent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
            (res) => {
                let t = '';
                res.on('data', (d) => (t += d));
                res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Failure(`POST /pub/${channel}: ${res.statusCode} ${t.slice(0, 200)}`))));
            },
        );
        req.setTimeout(5000, () => req.destroy(new Failure(`POST /pub/${channel}: no answer within 5000 ms`)));
        req.on('error', reject);
        req.end(data);
    });
}

const ch = (name) => `t${RUN}/${name}`;
const sortJ = (list) => list.map(J).sort();

// An HS256 JSON Web Token (RFC 7519) over `claims`: base64url(header).base64url(claims).signature.
function mintToken(claims, secret = TOKEN_SECRET) {
    const part = (o) => Buffer.from(J(o), 'utf8').toString('base64url');
    const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
    return `${signed}.${crypto.createHmac('sha256', secret).update(signed).digest('base64url')}`;
}
const unixNow = () => Math.floor(Date.now() / 1000);

// ---- Engine.IO v4, raw, against the conformance server -------------------------------------------

const PATH = '/socket.io/';
const q = (s) => `${PATH}?${s}`;

async function expectError(port, method, url, status, code, message, what) {
    const res = await request(port, method, url);
    const body = errorBody(res);
    check(res.status === status && body && body.code === code && body.message === message, () => `${what}: ${method} ${url}: expected ${status} ${J({ code, message })}, got ${res.status} ${J(res.text.slice(0, 200))}`);
}

test('engine.io: polling handshake: open packet with a sid, upgrades ["websocket"], pingInterval 300, pingTimeout 200, maxPayload 1000000', async (t) => {
    const port = await t.port('conformance');
    const a = new Polling(port);
    const { open } = await a.handshake();
    check(typeof open.sid === 'string' && open.sid.length > 0, `sid: ${J(open)}`);
    check(deepEqual(open.upgrades, ['websocket']), `upgrades: ${J(open)}`);
    check(open.pingInterval === 300 && open.pingTimeout === 200 && open.maxPayload === 1_000_000, `timers/maxPayload: ${J(open)}`);
    const b = new Polling(port);
    await b.handshake();
    check(b.sid !== a.sid, `two handshakes got the same sid ${a.sid}`);
});

test('engine.io: conformance mode: CORS open to any origin (handshake with an Origin, preflight OPTIONS)', async (t) => {
    const port = await t.port('conformance');
    const origin = 'http://somewhere.example:1234';
    const res = await request(port, 'GET', q('EIO=4&transport=polling'), { headers: { origin } });
    check(res.status === 200, `handshake with Origin: ${res.status} ${res.text.slice(0, 200)}`);
    const allow = res.headers['access-control-allow-origin'];
    check(allow === '*' || allow === origin, `access-control-allow-origin: ${allow}`);
    const pre = await request(port, 'OPTIONS', q('EIO=4&transport=polling'), { headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    const allow2 = pre.headers['access-control-allow-origin'];
    check(pre.status >= 200 && pre.status < 300 && (allow2 === '*' || allow2 === origin), `preflight: ${pre.status} access-control-allow-origin ${allow2}`);
});

test('engine.io: websocket handshake: the first frame is the open packet, upgrades []', async (t) => {
    const port = await t.port('conformance');
    const w = t.ws(port);
    const open = await w.openPacket();
    check(typeof open.sid === 'string' && open.sid.length > 0 && deepEqual(open.upgrades, []) && open.pingInterval === 300 && open.pingTimeout === 200 && open.maxPayload === 1_000_000, `open packet ${J(open)}`);
});

test('engine.io: bad EIO (3, 5, abc, none): 400 {"code":5,"message":"Unsupported protocol version"}', async (t) => {
    const port = await t.port('conformance');
    for (const e of ['EIO=3&', 'EIO=5&', 'EIO=abc&', '']) await expectError(port, 'GET', q(`${e}transport=polling`), 400, 5, 'Unsupported protocol version', e || 'no EIO');
});

test('engine.io: unknown or no transport: 400 {"code":0,"message":"Transport unknown"}', async (t) => {
    const port = await t.port('conformance');
    await expectError(port, 'GET', q('EIO=4&transport=carrier-pigeon'), 400, 0, 'Transport unknown', 'unknown transport');
    await expectError(port, 'GET', q('EIO=4'), 400, 0, 'Transport unknown', 'no transport');
});

test('engine.io: a handshake by POST or PUT: 400 {"code":2,"message":"Bad handshake method"}', async (t) => {
    const port = await t.port('conformance');
    for (const m of ['POST', 'PUT']) await expectError(port, m, q('EIO=4&transport=polling'), 400, 2, 'Bad handshake method', m);
});

test('engine.io: an unknown sid: GET and POST 400 {"code":1,"message":"Session ID unknown"}', async (t) => {
    const port = await t.port('conformance');
    for (const m of ['GET', 'POST']) await expectError(port, m, q('EIO=4&transport=polling&sid=nope-not-a-sid'), 400, 1, 'Session ID unknown', m);
});

// CONNECT to "/" over polling: POST "40", then GETs until the CONNECT reply and the auth event.
async function pollConnect(p) {
    const res = await p.post(['40']);
    check(res.status === 200 && res.text === 'ok', `POST 40: ${res.status} ${J(res.text)}`);
    const { packets } = await p.collect((got) => got.length >= 2, 3000, 'the CONNECT reply and auth');
    check(/^40\{"sid":"[^"]+"/.test(packets[0]) && packets[1] === '42["auth",{}]', `CONNECT over polling: ${J(packets)}`);
}

test('engine.io: a plain GET (no Upgrade header) with transport=websocket: 400 {"code":3,"message":"Bad request"}', async (t) => {
    const port = await t.port('conformance');
    await expectError(port, 'GET', q('EIO=4&transport=websocket'), 400, 3, 'Bad request', 'no Upgrade');
});

// GETs until the session is gone (400 code 1); a GET held meanwhile may get "1" or "6" first.
async function sessionEnds(p, ms, what) {
    const from = Date.now();
    for (;;) {
        check(Date.now() - from < ms, () => `${what}: the session still answers ${Date.now() - from} ms later: ${p.log.slice(-4).join(' | ')}`);
        const g = await p.get(3000);
        if (g.status === 400) {
            const b = errorBody(g.res);
            check(b && b.code === 1, `${what}: 400 with ${J(g.res.text)}, expected code 1`);
            return Date.now() - from;
        }
        check(g.status === 200 && g.packets.every((x) => x === '1' || x === '6'), `${what}: a GET got ${g.status} ${J(g.res.text)}`);
    }
}

for (const [label, bad] of [
    ['an unknown Engine.IO packet type (9abc)', '9abc'],
    ['an invalid Socket.IO packet (4abc)', '4abc'],
]) {
    test(`engine.io: polling: ${label} in a POST ends the session`, async (t) => {
        const port = await t.port('conformance');
        const p = new Polling(port);
        await p.handshake();
        await pollConnect(p);
        const res = await p.post([bad]);
        t.note(`the POST was answered ${res.status} ${J(res.text)} (the reference server: 200 ok)`);
        check(res.status === 200 || res.status === 400, `POST: ${res.status} ${J(res.text)}`);
        await sessionEnds(p, 1500, `after ${bad}`);
    });
}

test('engine.io: polling round trip: a POST of packets joined by \\x1e is answered "ok"; GETs bring the replies joined by \\x1e, in order', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    // The reference server closes a connection that sends an EVENT before its CONNECT is
    // answered (its namespace middlewares run asynchronously), as the official client never does:
    // CONNECT first, then the events in one POST.
    await pollConnect(p);
    const res = await p.post(['42["message","one"]', '42["message",2]', '42["message",{"three":[3]}]']);
    check(res.status === 200 && res.text === 'ok', `POST: ${res.status} ${J(res.text)}`);
    check(/^text\/html/.test(res.headers['content-type'] || ''), `POST answered with content-type ${res.headers['content-type']}, expected text/html`);
    const { packets, perGet } = await p.collect((got) => got.length >= 3, 3000, 'three message-back');
    check(deepEqual(packets, ['42["message-back","one"]', '42["message-back",2]', '42["message-back",{"three":[3]}]']), `packets ${J(packets)}`);
    t.note(`packets per GET: ${J(perGet)}`);
    check(perGet.some((n) => n > 1), `every GET brought one packet (${J(perGet)}): none joined by \\x1e`);
});

test('engine.io: polling: binary packets travel as b<base64> both ways', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    const bin = Buffer.from([0x01, 0x02, 0x03, 0xff]);
    await pollConnect(p);
    const res = await p.post(['451-["message",{"_placeholder":true,"num":0}]', bin]);
    check(res.status === 200 && res.text === 'ok', `POST: ${res.status} ${J(res.text)}`);
    const { packets } = await p.collect((got) => got.length >= 2, 3000, 'the binary message-back and its attachment');
    check(deepEqual(packets, ['451-["message-back",{"_placeholder":true,"num":0}]', `b${bin.toString('base64')}`]), `packets ${J(packets)}`);
});

// The ping tests CONNECT first, so that a close by the connect timeout (1 s) cannot pass for a
// ping timeout, and run past it: 4 pings, > pingInterval + pingTimeout and > the connect timeout.
test('engine.io: polling: the server pings "2" every pingInterval; pongs keep the session open', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    await pollConnect(p);
    for (let i = 0; i < 4; i++) {
        const start = Date.now();
        const r = await p.get(3000);
        const ms = Date.now() - start;
        check(r.status === 200 && deepEqual(r.packets, ['2']), `GET ${i + 1}: expected a ping, got ${r.status} ${J(r.res.text)}`);
        // The first GET may find a ping already due (pollConnect answered the earlier ones).
        check(i === 0 || (ms >= 150 && ms <= 1500), `ping ${i + 1} came ${ms} ms after the pong (pingInterval 300)`);
        const pong = await p.post(['3']);
        check(pong.status === 200 && pong.text === 'ok', `pong POST: ${pong.status} ${J(pong.text)}`);
    }
});

test('engine.io: websocket: the server pings "2" every pingInterval; pongs keep the connection open', async (t) => {
    const port = await t.port('conformance');
    const w = t.ws(port, { autoPong: false });
    await w.openPacket();
    await rawConnectPinged(w);
    let last = Date.now();
    for (let i = 0; i < 4; i++) {
        const m = await w.next(1500, `ping ${i + 1}`);
        const ms = Date.now() - last;
        check(m === '2', `expected a ping, got ${J(m)}`);
        check(i === 0 || (ms >= 150 && ms <= 1500), `ping ${i + 1} came ${ms} ms after the pong (pingInterval 300)`);
        w.send('3');
        last = Date.now();
    }
    check(!w.closeInfo, 'closed');
});

test('engine.io: polling: no pong → the session is closed after pingTimeout; its next GET is 400 (Session ID unknown)', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    await pollConnect(p);
    const r = await p.get(3000);
    check(deepEqual(r.packets, ['2']), `expected a ping, got ${r.status} ${J(r.res.text)}`);
    // Not answered (pingTimeout 200 ms).
    const ms = await sessionEnds(p, 2000, 'after an unanswered ping');
    t.note(`ended ${ms} ms after the ping`);
});

test('engine.io: websocket: no pong → the server closes the connection after pingTimeout', async (t) => {
    const port = await t.port('conformance');
    const w = t.ws(port, { autoPong: false });
    await w.openPacket();
    await rawConnectPinged(w);
    check((await w.next(1500, 'a ping')) === '2', 'expected a ping');
    const at = Date.now();
    await w.closed(1500, 'close after an unanswered ping');
    t.note(`closed ${Date.now() - at} ms after the ping`);
});

test('engine.io: polling: a close packet "1" ends the session: the next GET is 400', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    const res = await p.post(['1']);
    check(res.status === 200, `POST "1": ${res.status} ${J(res.text)}`);
    const g = await p.get(2000);
    check(g.status === 400 && (errorBody(g.res) || {}).code === 1, `GET after the close packet: ${g.status} ${J(g.res.text)}`);
});

test('engine.io: websocket: a close packet "1" makes the server close the connection', async (t) => {
    const port = await t.port('conformance');
    const w = t.ws(port);
    await w.openPacket();
    await rawConnect(w, '/');
    w.send('1');
    await w.closed(500);
}, { refSkip: 'the reference server (engine.io 6.6) ignores a close packet over WebSocket (its client closes the WebSocket instead); the Engine.IO protocol says the transport can be closed' });

// Polling handshake, then the WebSocket upgrade with a GET held meanwhile. Returns the polling
// session and the upgraded WebSocket.
async function upgrade(t, port) {
    const p = new Polling(port);
    await p.handshake();
    const held = p.get(3000);
    const w = t.ws(port, { sid: p.sid });
    check(await w.opened, () => `the WebSocket with the sid was refused: ${w.history()}`);
    w.send('2probe');
    const probe = await w.next(2000, 'the 3probe');
    check(probe === '3probe', `expected 3probe, got ${J(probe)}`);
    // The GET held during the upgrade must be released with a noop (a ping may have won the race:
    // answer it and hold another).
    let r = await held;
    for (let i = 0; i < 3 && r.status === 200 && deepEqual(r.packets, ['2']); i++) {
        await p.post(['3']);
        r = await p.get(3000);
    }
    check(r.status === 200 && deepEqual(r.packets, ['6']), `the held GET: expected a noop "6", got ${r.status} ${J(r.res.text)}`);
    w.send('5');
    return { p, w };
}

test('engine.io: upgrade: 2probe → 3probe; the held GET is answered with noop "6"; after "5" packets flow over the WebSocket', async (t) => {
    const port = await t.port('conformance');
    const { w } = await upgrade(t, port);
    w.send('40');
    const c = await w.next(2000, 'the CONNECT reply over the WebSocket');
    check(/^40\{"sid":"[^"]+"/.test(c), `CONNECT reply ${J(c)}`);
    check((await w.next(2000, 'auth')) === '42["auth",{}]', 'auth');
});

// The official client does this: after 3probe it pauses polling, and the GET it has in flight
// then may reach the server after the probe (another connection, maybe another worker).
test('engine.io: upgrade: a GET that arrives after the probe (before "5") is answered with noop "6" too', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    await pollConnect(p);
    const w = t.ws(port, { sid: p.sid });
    check(await w.opened, () => `the WebSocket with the sid was refused: ${w.history()}`);
    w.send('2probe');
    check((await w.next(2000, 'the 3probe')) === '3probe', '3probe');
    const start = Date.now();
    let r = await p.get(3000);
    if (r.status === 200 && deepEqual(r.packets, ['2'])) {
        await p.post(['3']);
        r = await p.get(3000);
    }
    check(r.status === 200 && deepEqual(r.packets, ['6']), `the GET after the probe: ${r.status} ${J(r.res.text)} after ${Date.now() - start} ms, expected a noop "6"`);
    t.note(`answered after ${Date.now() - start} ms`);
    w.send('5');
    w.send('42["message","after"]');
    check((await w.next(2000, 'message-back over the WebSocket')) === '42["message-back","after"]', 'message-back over the upgraded WebSocket');
});

test('engine.io: after the upgrade, a GET with the same sid is refused (400 {"code":3,"message":"Bad request"})', async (t) => {
    const port = await t.port('conformance');
    const { p } = await upgrade(t, port);
    const g = await p.get(2000);
    const b = errorBody(g.res);
    check(g.status === 400 && b && b.code === 3 && b.message === 'Bad request', `GET after the upgrade: ${g.status} ${J(g.res.text)}`);
});

test('engine.io: after the upgrade, a second WebSocket with the same sid is refused or closed; the first keeps working', async (t) => {
    const port = await t.port('conformance');
    const { p, w } = await upgrade(t, port);
    w.send('40');
    check(/^40\{/.test(await w.next(2000, 'the CONNECT reply')), 'CONNECT reply');
    check((await w.next(2000, 'auth')) === '42["auth",{}]', 'auth');
    const second = t.ws(port, { sid: p.sid });
    // 500 ms: well before the connect timeout (1 s), which would close it anyway.
    const info = await second.closed(500, 'the second WebSocket with the same sid to be refused or closed');
    check(!second.queue.some((m) => typeof m === 'string' && (m[0] === '0' || m === '3probe')), `the second WebSocket got ${J(second.queue)}`);
    t.note(`second WebSocket: ${J(info)}`);
    w.send('42["message","still here"]');
    check((await w.next(2000, 'message-back on the first WebSocket')) === '42["message-back","still here"]', 'message-back');
});

test('engine.io: two concurrent GETs on one sid: one is answered 400, the other is not left hanging', async (t) => {
    const port = await t.port('conformance');
    const p = new Polling(port);
    await p.handshake();
    const [a, b] = await Promise.all([p.get(3000), p.get(3000)]);
    const st = [a.status, b.status].sort();
    check(st[0] === 200 && st[1] === 400, `statuses ${a.status} ${J(a.res.text)}, ${b.status} ${J(b.res.text)}`);
    const after = await p.get(2000);
    t.note(`then a GET: ${after.status} ${J(after.res.text)} (the reference server closes the session)`);
});

test('engine.io: --socketio-ping-interval 400ms, -ping-timeout 300ms, -max-payload 5000, -connect-timeout 600ms (with --socketio-conformance): advertised and applied', async (t) => {
    const port = await t.port('timers');
    const p = new Polling(port);
    const { open } = await p.handshake();
    check(open.pingInterval === 400 && open.pingTimeout === 300 && open.maxPayload === 5000, `open packet ${J(open)}`);
    const w = t.ws(port);
    const o2 = await w.openPacket();
    check(o2.pingInterval === 400 && o2.pingTimeout === 300 && o2.maxPayload === 5000, `open packet over websocket ${J(o2)}`);
    const at = Date.now();
    const info = await w.closed(3000, 'the close for want of a CONNECT');
    const ms = info.at - at;
    t.note(`closed without CONNECT after ${ms} ms (pings answered: ${w.pings})`);
    check(ms >= 400 && ms < 1000, `closed without CONNECT after ${ms} ms; the connect timeout is 600 ms (the conformance default 1 s)`);
});

test('engine.io: over --socketio-max-payload (5000): a POST is answered 413, a WebSocket message closes 1009; the session ends', async (t) => {
    const port = await t.port('timers');
    const p = new Polling(port);
    await p.handshake();
    const big = `4${'x'.repeat(6000)}`;
    let status;
    try {
        status = (await p.post([big])).status;
    } catch (e) {
        status = `no answer (${e.code || e.message})`;
    }
    check(status === 413, `POST of ${big.length} bytes: ${status}, expected 413`);
    const g = await p.get(2000);
    check(g.status === 400 && (errorBody(g.res) || {}).code === 1, `GET after the 413: ${g.status} ${J(g.res.text)}, expected the session to have ended (400 code 1)`);
    const w = t.ws(port);
    await w.openPacket();
    w.send(big);
    const info = await w.closed(1500, 'the close after an oversized message');
    check(info.code === 1009, `closed with ${info.code} ${info.reason}, expected 1009`);
});

// ---- Socket.IO v5, raw over WebSocket, against the conformance server -----------------------------

// A raw WebSocket through the open packet.
async function rawOpen(t, port, o) {
    const w = t.ws(port, o);
    await w.openPacket();
    return w;
}

// CONNECT to nsp, checks the reply and the auth event; returns the sid.
async function rawConnect(w, nsp = '/', payload) {
    w.send(connectPacket(nsp, payload));
    const prefix = nsp === '/' ? '40' : `40${nsp},`;
    const c = await w.next(2000, `the CONNECT reply for ${nsp}`);
    check(typeof c === 'string' && c.startsWith(prefix), `CONNECT ${nsp}: got ${J(c)}`);
    const body = JSON.parse(c.slice(prefix.length));
    check(typeof body.sid === 'string' && body.sid.length > 0, `CONNECT reply ${J(c)} has no sid`);
    const a = await w.next(2000, `the auth event for ${nsp}`);
    const want = `42${nsp === '/' ? '' : `${nsp},`}["auth",${J(payload === undefined ? {} : payload)}]`;
    check(a === want, `auth event: got ${J(a)}, expected ${J(want)}`);
    return body.sid;
}

// rawConnect for a RawWs without autoPong: answers the pings that come meanwhile.
async function rawConnectPinged(w, nsp = '/') {
    w.send(connectPacket(nsp));
    const seen = [];
    while (seen.length < 2) {
        const m = await w.next(2000, `CONNECT reply and auth for ${nsp}`);
        if (m === '2') w.send('3');
        else seen.push(m);
    }
    check(seen[0].startsWith(nsp === '/' ? '40{' : `40${nsp},{`) && seen[1] === `42${nsp === '/' ? '' : `${nsp},`}["auth",{}]`, `CONNECT ${nsp}: ${J(seen)}`);
}

test('socket.io: CONNECT to "/" → 40{"sid":…}, then 42["auth",{}]', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    const sid = await rawConnect(w, '/');
    check(sid !== w.open.sid, `the Socket.IO sid equals the Engine.IO sid ${sid} (they are different ids)`);
});

test('socket.io: CONNECT to "/custom" → 40/custom,{"sid":…}, then 42/custom,["auth",{}]', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/custom');
});

test('socket.io: CONNECT to an unknown namespace → 44/random,{"message":"Invalid namespace"}; the connection stays usable', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    w.send('40/random,');
    const r = await w.next(2000, 'the CONNECT_ERROR');
    check(r === '44/random,{"message":"Invalid namespace"}', `got ${J(r)}`);
    await rawConnect(w, '/');
});

test('socket.io: the CONNECT payload is emitted back as "auth" (/ and /custom)', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/', { token: '123' });
    await rawConnect(w, '/custom', { token: '456', nested: { a: [1, true, null] } });
});

test('socket.io: "message" → "message-back" with the same arguments (/ and /custom)', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/');
    await rawConnect(w, '/custom');
    w.send('42["message",1,"2",{"3":[true]}]');
    check((await w.next(2000, 'message-back')) === '42["message-back",1,"2",{"3":[true]}]', 'message-back on /');
    w.send('42/custom,["message",{"é":"ü\\u2028"},[]]');
    const m = await w.next(2000, 'message-back on /custom');
    const s = parseSio(m);
    check(s && s.type === 2 && s.nsp === '/custom' && deepEqual(s.data, ['message-back', { é: 'ü\u2028' }, []]), `got ${J(m)}`);
});

test('socket.io: "message-with-ack" → ACK 43<id> with the same arguments (/ and /custom)', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/');
    await rawConnect(w, '/custom');
    w.send('42456["message-with-ack",1,"2",{"3":[false]}]');
    check((await w.next(2000, 'the ACK')) === '43456[1,"2",{"3":[false]}]', 'ack on /');
    w.send('42/custom,7["message-with-ack","x"]');
    check((await w.next(2000, 'the ACK on /custom')) === '43/custom,7["x"]', 'ack on /custom');
});

const BIN = [Buffer.from([1, 2, 3]), Buffer.from([4, 5, 6, 0, 255])];
async function binaryFrames(w, n, what) {
    const out = [];
    for (let i = 0; i < n; i++) {
        const f = await w.next(2000, `${what}: attachment ${i}`);
        check(Buffer.isBuffer(f), `${what}: attachment ${i} is not a binary frame: ${J(f)}`);
        out.push(f);
    }
    return out;
}

test('socket.io: BINARY_EVENT 452-["message",…] + 2 binary frames → 452-["message-back",…] + the same 2 frames', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/');
    w.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    w.send(BIN[0]);
    w.send(BIN[1]);
    const m = await w.next(2000, 'the binary message-back');
    check(m === '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', `got ${J(m)}`);
    const f = await binaryFrames(w, 2, 'message-back');
    check(f[0].equals(BIN[0]) && f[1].equals(BIN[1]), `attachments ${f.map((x) => x.toString('hex'))}`);
});

test('socket.io: BINARY_EVENT with an ack id → BINARY_ACK 462-<id>[…] + the same 2 frames', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    await rawConnect(w, '/');
    w.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    w.send(BIN[0]);
    w.send(BIN[1]);
    const m = await w.next(2000, 'the BINARY_ACK');
    check(m === '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', `got ${J(m)}`);
    const f = await binaryFrames(w, 2, 'BINARY_ACK');
    check(f[0].equals(BIN[0]) && f[1].equals(BIN[1]), `attachments ${f.map((x) => x.toString('hex'))}`);
});

for (const [label, bad, connectFirst] of [
    ['4abc (unknown packet type) before CONNECT', '4abc', false],
    ['4abc (unknown packet type)', '4abc', true],
    ['42{} (the payload of an EVENT is not an array)', '42{}', true],
    ['42abc[…] (an invalid ack id)', '42abc["message-with-ack",1,"2",{"3":[false]}]', true],
]) {
    test(`socket.io: an invalid packet closes the connection: ${label}`, async (t) => {
        const w = await rawOpen(t, await t.port('conformance'));
        if (connectFirst) await rawConnect(w, '/');
        w.send(bad);
        await w.closed(500); // well before the connect timeout (1 s)
        check(!w.queue.some((m) => typeof m === 'string' && /^42\["message-back"|^43/.test(m)), `it was answered: ${J(w.queue)}`);
    });
}

test('socket.io: no CONNECT → the connection is closed after the connect timeout (1 s)', async (t) => {
    const w = await rawOpen(t, await t.port('conformance'));
    const at = Date.now();
    const info = await w.closed(3000, 'the close for want of a CONNECT');
    const ms = info.at - at;
    check(ms >= 700, `closed after ${ms} ms, before the connect timeout (pings answered: ${w.pings})`);
    t.note(`closed after ${ms} ms`);
});

test('socket.io: DISCONNECT 41 (and 41/custom,) keeps the Engine.IO connection: the next packet is a ping', async (t) => {
    const port = await t.port('conformance');
    for (const nsp of ['/', '/custom']) {
        const w = t.ws(port, { autoPong: false });
        await w.openPacket();
        await rawConnectPinged(w, nsp);
        w.send(nsp === '/' ? '41' : `41${nsp},`);
        const next = await w.next(1500, `the packet after 41 on ${nsp}`);
        check(next === '2', `${nsp}: after the DISCONNECT came ${J(next)}, expected a ping`);
        w.send('3');
        check(!w.closeInfo, `${nsp}: closed`);
        w.close();
    }
});

// ---- the official socket.io-client -------------------------------------------------------------

// Waits for the engine to run on websocket (after the upgrade, or at once).
async function onWebsocket(s, ms = 5000) {
    const engine = s.io.engine;
    if (engine.transport.name === 'websocket') return;
    await once(engine, 'upgrade', ms, 'the upgrade to websocket');
    check(engine.transport.name === 'websocket', `transport ${engine.transport.name} after the upgrade event`);
}

test('client: default transports: polling first, then upgraded to websocket', async (t) => {
    const port = await t.port('main');
    const s = t.client(port);
    const firstTransport = await once(s.io, 'open', 5000).then(() => s.io.engine.transport.name);
    const events = [];
    for (const e of ['upgrading', 'upgrade', 'upgradeError', 'close']) s.io.engine.on(e, (x) => events.push(`${e}${x && x.name ? ` ${x.name}` : x && x.message ? ` ${x.message}` : ''}`));
    await connected(s);
    check(firstTransport === 'polling', `first transport ${firstTransport}`);
    try {
        await onWebsocket(s);
    } catch (e) {
        throw new Failure(`${e.message}; engine events: ${J(events)}; the polling transport is ${s.io.engine.transport.polling ? 'polling (a GET not answered)' : 'idle'}`);
    }
});

test('client: transports ["websocket"]: connected over websocket', async (t) => {
    const port = await t.port('main');
    const s = t.client(port, '/', { transports: ['websocket'] });
    await connected(s);
    check(s.io.engine.transport.name === 'websocket', `transport ${s.io.engine.transport.name}`);
});

for (const transports of [undefined, ['websocket']]) {
    const T = transports ? 'websocket' : 'polling-upgrade';
    test(`client (${T}): channels from auth.channels: POST /pub/{channel} arrives as "message" (JSON bodies as JSON, others as strings)`, async (t) => {
        const port = await t.port('main');
        const [a, b] = [ch(`auth-${T}/a`), ch(`auth-${T}/b`)];
        const s = t.client(port, '/', { transports, auth: { channels: [a, b] } });
        const got = collector(s);
        await connected(s);
        await publish(port, a, { seq: 1, text: 'héllo' });
        await publish(port, b, 'not json at all');
        await publish(port, a, '[1,"two",null]');
        await publish(port, b, '"a JSON string"');
        await got.wait((l) => l.length >= 4, 5000, 'four messages');
        // In order per channel; the two channels may interleave either way.
        const onA = [{ seq: 1, text: 'héllo' }, [1, 'two', null]];
        const onB = ['not json at all', 'a JSON string'];
        const inList = (list) => got.list.filter((m) => list.some((x) => deepEqual(x, m)));
        check(got.list.length === 4 && deepEqual(inList(onA), onA) && deepEqual(inList(onB), onB), `got ${J(got.list)}`);
    });

    test(`client (${T}): channels from the query (channels=a,b)`, async (t) => {
        const port = await t.port('main');
        const [a, b] = [ch(`query-${T}/a`), ch(`query-${T}/b`)];
        const s = t.client(port, '/', { transports, query: { channels: `${a},${b}` } });
        const got = collector(s);
        await connected(s);
        await publish(port, a, { n: 1 });
        await publish(port, b, { n: 2 });
        await got.wait((l) => l.length >= 2, 5000, 'two messages');
        // Two channels: either order.
        check(deepEqual(sortJ(got.list), sortJ([{ n: 1 }, { n: 2 }])), `got ${J(got.list)}`);
    });

    test(`client (${T}): 1000 messages published by POST /pub arrive once each, in order`, async (t) => {
        const port = await t.port('main');
        const c = ch(`thousand-${T}`);
        const s = t.client(port, '/', { transports, auth: { channels: [c] } });
        const got = collector(s);
        await connected(s);
        const want = [];
        for (let i = 0; i < 1000; i++) {
            want.push({ seq: i, run: RUN });
            await publish(port, c, { seq: i, run: RUN });
        }
        want.push({ seq: 'end' });
        await publish(port, c, { seq: 'end' });
        await got.wait((l) => l.some((m) => m && m.seq === 'end'), 10_000, 'the last message');
        const d = diffSeq(got.list, want);
        check(d === null, d);
        t.note(`transport at the end: ${s.io.engine.transport.name}`);
    }, { timeoutMs: 30_000 });
}

test('client: --socketio-event update: POST /pub messages arrive as the event "update" (and not as "message")', async (t) => {
    const port = await t.port('event');
    const c = ch('event');
    const s = t.client(port, '/', { transports: ['websocket'], auth: { channels: [c] } });
    const got = collector(s, 'update');
    const wrong = collector(s, 'message');
    await connected(s);
    await publish(port, c, { n: 1 });
    await got.wait((l) => l.length >= 1, 5000, 'the "update" event');
    check(wrong.list.length === 0 && deepEqual(got.list, [{ n: 1 }]), `update ${J(got.list)}, message ${J(wrong.list)}`);
});

test('client: 20 sockets on one channel (websocket and polling, spread over the workers) each get all 50 messages, in order', async (t) => {
    const port = await t.port('main');
    const c = ch('fanout');
    const socks = [];
    for (let i = 0; i < 20; i++) socks.push(t.client(port, '/', { transports: i % 2 ? ['websocket'] : ['polling'], auth: { channels: [c] } }));
    const cols = socks.map((s) => collector(s));
    await Promise.all(socks.map((s) => connected(s)));
    const want = [];
    for (let i = 0; i < 50; i++) {
        want.push({ seq: i });
        await publish(port, c, { seq: i });
    }
    for (const [i, col] of cols.entries()) {
        await col.wait((l) => l.length >= 50, 5000, `socket ${i}: 50 messages`);
        const d = diffSeq(col.list, want);
        check(d === null, `socket ${i} (${socks[i].io.engine.transport.name}): ${d}`);
    }
}, { timeoutMs: 20_000 });

for (const transports of [['polling'], ['websocket']]) {
    test(`client (${transports[0]}): a 300 KB JSON payload (non-ASCII, U+2028, quotes, backslashes) arrives intact`, async (t) => {
        const port = await t.port('main');
        const c = ch(`big-${transports[0]}`);
        const s = t.client(port, '/', { transports, auth: { channels: [c] } });
        const got = collector(s);
        await connected(s);
        const big = { text: 'é€😀\u2028"\\'.repeat(20000), list: Array.from({ length: 2000 }, (_, i) => i) };
        check(Buffer.byteLength(J(big)) > 300_000, `payload only ${Buffer.byteLength(J(big))} bytes`);
        await publish(port, c, big);
        await got.wait((l) => l.length >= 1, 5000, 'the big message');
        check(deepEqual(got.list[0], big), `the payload differs (${J(got.list[0]).length} characters, sent ${J(big).length})`);
    });
}

test('client: wildcards: a/* gets a/b only; a/** gets a/b and a/b/c; neither gets a or x/b', async (t) => {
    const port = await t.port('main');
    const base = ch('wild');
    const one = t.client(port, '/', { transports: ['websocket'], auth: { channels: [`${base}/a/*`] } });
    const any = t.client(port, '/', { transports: ['websocket'], auth: { channels: [`${base}/a/**`] } });
    const [g1, g2] = [collector(one), collector(any)];
    await Promise.all([connected(one), connected(any)]);
    for (const [c, n] of [['a/b', 1], ['a/b/c', 2], ['a', 3], ['x/b', 4], ['a/b/c/d', 5], ['a/end', 'end']]) await publish(port, `${base}/${c}`, { n });
    // Messages on different channels may arrive in either order: wait for all those expected,
    // then check that nothing else came (what was published before them through the same
    // connection had every chance to arrive).
    await g1.wait((l) => l.length >= 2, 5000, 'two messages on a/*');
    await g2.wait((l) => l.length >= 4, 5000, 'four messages on a/**');
    check(deepEqual(sortJ(g1.list.map((m) => m.n)), sortJ([1, 'end'])), `a/* got ${J(g1.list)}`);
    check(deepEqual(sortJ(g2.list.map((m) => m.n)), sortJ([1, 2, 5, 'end'])), `a/** got ${J(g2.list)}`);
});

test('client: --client-publish: emit("publish", channel, data, ack) reaches another socket; the ack is {ok:true}', async (t) => {
    const port = await t.port('main');
    const c = ch('client-publish');
    const sub = t.client(port, '/', { auth: { channels: [c] } });
    const pub = t.client(port, '/', { transports: ['websocket'] });
    const got = collector(sub);
    await Promise.all([connected(sub), connected(pub)]);
    const ack1 = await withTimeout(new Promise((r) => pub.emit('publish', c, { from: 'pub', n: 1 }, r)), 3000, 'ack of the object publish');
    check(deepEqual(ack1, { ok: true }), `ack ${J(ack1)}`);
    const ack2 = await withTimeout(new Promise((r) => pub.emit('publish', c, 'plain text', r)), 3000, 'ack of the string publish');
    check(deepEqual(ack2, { ok: true }), `ack ${J(ack2)}`);
    await got.wait((l) => l.length >= 2, 5000, 'two messages');
    check(deepEqual(got.list, [{ from: 'pub', n: 1 }, 'plain text']), `got ${J(got.list)}`);
});

test('client: --client-publish: a publish on an invalid channel name is acked {error:…}', async (t) => {
    const port = await t.port('main');
    const pub = t.client(port, '/', { transports: ['websocket'] });
    await connected(pub);
    const ack = await withTimeout(new Promise((r) => pub.emit('publish', 'bad channel!', { n: 1 }, r)), 3000, 'the ack');
    check(ack && typeof ack.error === 'string' && ack.ok === undefined, `ack ${J(ack)}`);
});

test('client: an unknown namespace → connect_error "Invalid namespace"', async (t) => {
    const port = await t.port('main');
    const s = t.client(port, '/nope');
    const e = await connectError(s);
    check(e.message === 'Invalid namespace', `connect_error ${J(e.message)}`);
});

test('client: --socketio-namespaces /chat,/admin: both connect (polling and websocket); /nope gets connect_error "Invalid namespace"', async (t) => {
    const port = await t.port('main');
    const chat = t.client(port, '/chat');
    const admin = t.client(port, '/admin', { transports: ['websocket'] });
    await Promise.all([connected(chat), connected(admin)]);
    const nope = t.client(port, '/nope', { transports: ['websocket'] });
    check((await connectError(nope)).message === 'Invalid namespace', 'connect_error for /nope');
});

// The contract says "a socket joins the channels it asks for in its CONNECT auth payload", for
// any namespace; edgecomet's docs/socketio.md (draft) says the CONNECT to `/` only. Kept apart so
// that the answer to that question is one test's.
test('client: channels asked for in the CONNECT to a configured namespace (/chat, /admin) get POST /pub messages', async (t) => {
    const port = await t.port('main');
    const c = ch('namespaces');
    const chat = t.client(port, '/chat', { auth: { channels: [c] } });
    const admin = t.client(port, '/admin', { transports: ['websocket'], auth: { channels: [c] } });
    const [gc, ga] = [collector(chat), collector(admin)];
    await Promise.all([connected(chat), connected(admin)]);
    await publish(port, c, { to: 'both' });
    await gc.wait((l) => l.length >= 1, 5000, 'the message on /chat');
    await ga.wait((l) => l.length >= 1, 5000, 'the message on /admin');
});

test('client: a channel name that is not a channel or pattern ("bad channel!", "a/*/b") → connect_error', async (t) => {
    const port = await t.port('main');
    for (const bad of ['bad channel!', `${ch('x')}/*/b`]) {
        const s = t.client(port, '/', { transports: ['websocket'], auth: { channels: [ch('fine'), bad] } });
        const e = await connectError(s);
        t.note(`${bad}: connect_error ${J(e.message)} ${J(e.data)}`);
    }
});

// ---- subscribe tokens -----------------------------------------------------------------------------

test('client: tokens: auth.token allowing the channel → connected; POST /pub messages arrive', async (t) => {
    const port = await t.port('tokens');
    const c = ch('tok/ok');
    const s = t.client(port, '/', { auth: { token: mintToken({ exp: unixNow() + 600, channels: [c] }), channels: [c] } });
    const got = collector(s);
    await connected(s);
    await publish(port, c, { n: 1 });
    await got.wait((l) => l.length >= 1, 5000, 'the message');
});

test('client: tokens: query.token allowing the channel (channels in the query) → connected', async (t) => {
    const port = await t.port('tokens');
    const c = ch('tok/query');
    const s = t.client(port, '/', { transports: ['websocket'], query: { token: mintToken({ exp: unixNow() + 600, channels: [`${ch('tok')}/*`] }), channels: c } });
    const got = collector(s);
    await connected(s);
    await publish(port, c, { n: 2 });
    await got.wait((l) => l.length >= 1, 5000, 'the message');
});

for (const [label, auth, query = () => undefined] of [
    ['a token that does not allow the channel', () => ({ token: mintToken({ exp: unixNow() + 600, channels: [ch('tok/other')] }), channels: [ch('tok/secret')] })],
    ['no token', () => ({ channels: [ch('tok/secret')] })],
    ['an expired token', () => ({ token: mintToken({ exp: unixNow() - 60, channels: [ch('tok/secret')] }), channels: [ch('tok/secret')] })],
    ['query.token that does not allow the channel (channels in the query)', () => ({}), () => ({ token: mintToken({ exp: unixNow() + 600, channels: [ch('tok/other')] }), channels: ch('tok/secret') })],
    ['a token signed with another secret', () => ({ token: mintToken({ exp: unixNow() + 600, channels: [ch('tok/secret')] }, crypto.randomBytes(32).toString('hex')), channels: [ch('tok/secret')] })],
]) {
    test(`client: tokens: ${label} → connect_error {message} (a CONNECT_ERROR from the server)`, async (t) => {
        const port = await t.port('tokens');
        const s = t.client(port, '/', { transports: ['websocket'], auth: auth(), query: query() });
        const e = await connectError(s);
        check(typeof e.message === 'string' && e.message.length > 0, `connect_error without a message: ${J(e)}`);
        t.note(`connect_error: ${e.message}`);
    });
}

test('client: tokens: when the token ends, the socket is disconnected by the server ("io server disconnect") and does not reconnect by itself', async (t) => {
    const port = await t.port('tokens');
    const c = ch('tok/ending');
    const exp = unixNow() + 3;
    const s = t.client(port, '/', { transports: ['websocket'], reconnection: true, reconnectionDelay: 100, auth: { token: mintToken({ exp, channels: [c] }), channels: [c] } });
    await connected(s);
    const [reason] = await once(s, 'disconnect', 8000, 'the disconnect at the end of the token');
    const late = Date.now() - exp * 1000;
    t.note(`disconnected ${late} ms after exp, reason ${reason}`);
    check(reason === 'io server disconnect', `disconnect reason ${J(reason)}, expected "io server disconnect"`);
    check(late > -1500 && late < 2500, `disconnected ${late} ms after the token's exp`);
    check(!s.active, 'the client is still trying to reconnect');
}, { timeoutMs: 12_000 });

// ---- the official client against the conformance server -------------------------------------

for (const transports of [['polling'], ['websocket']]) {
    test(`client (conformance, ${transports[0]}): the auth payload comes back as "auth" on / and /custom`, async (t) => {
        const port = await t.port('conformance');
        for (const nsp of ['/', '/custom']) {
            const s = t.client(port, nsp, { transports, auth: { who: nsp, list: [1, 2] } });
            const auth = once(s, 'auth', 5000);
            await connected(s);
            const [a] = await auth;
            check(deepEqual(a, { who: nsp, list: [1, 2] }), `${nsp}: auth ${J(a)}`);
        }
    });

    test(`client (conformance, ${transports[0]}): binary emit: Buffers come back in message-back and in an ack`, async (t) => {
        const port = await t.port('conformance');
        const s = t.client(port, '/', { transports });
        await connected(s);
        const back = once(s, 'message-back', 5000);
        s.emit('message', BIN[0], { nested: BIN[1], n: 7 });
        const [a, b] = await back;
        check(Buffer.from(a).equals(BIN[0]) && b && Buffer.from(b.nested).equals(BIN[1]) && b.n === 7, `message-back ${util.inspect([a, b])}`);
        const ack = await withTimeout(new Promise((r) => s.emit('message-with-ack', 'x', BIN[1], (...args) => r(args))), 5000, 'the ack');
        check(ack.length === 2 && ack[0] === 'x' && Buffer.from(ack[1]).equals(BIN[1]), `ack ${util.inspect(ack)}`);
    });
}

// ---- connection state recovery ----------------------------------------------------------------

for (const transports of [['websocket'], undefined]) {
    const T = transports ? 'websocket' : 'polling-upgrade';
    test(`client (${T}): state recovery: after a cut, socket.recovered is true and the 10 messages published meanwhile arrive once, in order`, async (t) => {
        const port = await t.port('recovery');
        const px = await startProxy(port);
        t.cleanup(() => px.close());
        const c = ch(`recover-${T}`);
        const s = t.client(px.port, '/', { transports, auth: { channels: [c] }, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200, randomizationFactor: 0 });
        const got = collector(s);
        await connected(s);
        if (!transports) await onWebsocket(s);
        check(!s.recovered, 'recovered on the first connection');
        await publish(port, c, { seq: 0 });
        await got.wait((l) => l.length >= 1, 5000, 'the first message');
        const offsetArg = got.raw[0].length >= 2 && typeof got.raw[0].at(-1) === 'string';
        check(offsetArg, `no offset (a string) after the payload: ${J(got.raw[0])}`);
        const disconnected = once(s, 'disconnect', 3000);
        t.note(`cut ${px.cut()} connection(s)`);
        await disconnected;
        for (let i = 1; i <= 10; i++) await publish(port, c, { seq: i });
        const reconnected = once(s, 'connect', 5000, 'the reconnection');
        px.up();
        await reconnected;
        check(s.recovered === true, `socket.recovered is ${s.recovered}`);
        await publish(port, c, { seq: 11 });
        await got.wait((l) => l.some((m) => m.seq === 11), 5000, 'the message published after the reconnection');
        const want = Array.from({ length: 12 }, (_, i) => ({ seq: i }));
        const d = diffSeq(got.list, want);
        check(d === null, d);
    }, { timeoutMs: 15_000 });
}

test(`client: state recovery: away longer than the recovery window (${RECOVERY_WINDOW_MS} ms) → socket.recovered is false; the channels are joined again`, async (t) => {
    const port = await t.port('recovery');
    const px = await startProxy(port);
    t.cleanup(() => px.close());
    const c = ch('recover-late');
    const s = t.client(px.port, '/', { transports: ['websocket'], auth: { channels: [c] }, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200, randomizationFactor: 0 });
    const got = collector(s);
    await connected(s);
    await publish(port, c, { seq: 0 });
    await got.wait((l) => l.length >= 1, 5000, 'the first message');
    const disconnected = once(s, 'disconnect', 3000);
    px.cut();
    await disconnected;
    for (let i = 1; i <= 10; i++) await publish(port, c, { seq: i });
    // What is waited for here is time itself: the recovery window must pass.
    await sleep(RECOVERY_WINDOW_MS + 1500);
    const reconnected = once(s, 'connect', 5000, 'the reconnection');
    px.up();
    await reconnected;
    check(s.recovered === false, `socket.recovered is ${s.recovered}`);
    await publish(port, c, { seq: 11 });
    await got.wait((l) => l.some((m) => m.seq === 11), 5000, 'the message published after the reconnection');
    check(deepEqual(got.list, [{ seq: 0 }, { seq: 11 }]), `got ${J(got.list)} (the missed messages must not be replayed by a session that was not recovered)`);
}, { timeoutMs: 15_000 });

// ---- running --------------------------------------------------------------------------------------

async function runOne(tc) {
    const t = new TestContext(tc.name);
    const started = Date.now();
    let error = null;
    try {
        await withTimeout(tc.fn(t), tc.timeoutMs, 'end of the test (time limit)');
    } catch (e) {
        error = e;
    }
    const ms = Date.now() - started;
    await t.runCleanups();
    return { t, error, ms };
}

function report(tc, { t, error, ms }) {
    if (error) {
        const msg = error instanceof Failure || !opts.verbose ? (error && error.message) || String(error) : (error && error.stack) || String(error);
        console.log(`not ok - ${tc.name}: ${msg.split('\n').join('\n#   ')}`);
        for (const n of t.notes) console.log(`#   ${n}`);
        for (const [name, from] of t.used) {
            const srv = servers.get(name);
            const out = srv ? srv.log().slice(from).trim() : '';
            if (out) console.log(`#   ${name} server output: ${out.slice(-600).replace(/\n/g, '\n#   ')}`);
            if (srv && srv.died()) console.log(`#   the ${name} server died`);
        }
        return false;
    }
    console.log(`ok - ${tc.name} (${ms} ms)`);
    if (opts.verbose) for (const n of t.notes) console.log(`#   ${n}`);
    return true;
}

async function main() {
    const deadline = Date.now() + RUN_DEADLINE_MS;
    const counts = { passed: 0, failed: 0, skipped: 0, refSkipped: 0, filtered: 0 };
    console.log(`# client: socket.io-client 4.8.4; raw Engine.IO v4 / Socket.IO v5; run id ${RUN}; mode ${opts.mode}`);
    for (const tc of tests) {
        if (opts.only && !opts.only.test(tc.name)) {
            console.log(`skip - ${tc.name} (not selected by --only)`);
            counts.skipped++;
            counts.filtered++;
            continue;
        }
        if (tc.refSkip && IS_REFERENCE) {
            console.log(`skip - ${tc.name} (reference-skip: ${tc.refSkip})`);
            counts.skipped++;
            counts.refSkipped++;
            continue;
        }
        if (Date.now() > deadline) {
            console.log(`not ok - ${tc.name}: not run: the run passed its ${RUN_DEADLINE_MS / 1000} s deadline`);
            counts.failed++;
            continue;
        }
        if (report(tc, await runOne(tc))) counts.passed++;
        else counts.failed++;
    }
    const total = counts.passed + counts.failed + counts.skipped;
    let summary = `# ${total} tests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`;
    const parts = [];
    if (counts.refSkipped) parts.push(`${counts.refSkipped} the reference server cannot run`);
    if (counts.filtered) parts.push(`${counts.filtered} not selected by --only`);
    if (parts.length) summary += ` (${parts.join('; ')})`;
    console.log(summary);
    if (restarts) console.log(`# a server died and was restarted ${restarts} time(s): see "died" above`);
    return counts.failed > 0 || counts.filtered > 0 ? 1 : 0;
}

let exitCode = 1;
const hardStop = setTimeout(() => {
    console.log(`not ok - the run did not finish within ${RUN_DEADLINE_MS / 1000 + 8} s`);
    closeServers().finally(() => process.exit(1));
}, RUN_DEADLINE_MS + 8000);
hardStop.unref();
for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
        closeServers().finally(() => process.exit(130));
    });
}
try {
    exitCode = await main();
} catch (e) {
    console.log(`not ok - runner: ${(e && e.stack) || e}`);
    exitCode = 1;
} finally {
    pubAgent.destroy();
    await Promise.race([closeServers(), sleep(5000)]);
}
process.exit(exitCode);
