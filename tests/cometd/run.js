// CometD / Bayeux 1.0 conformance tests (issue 5), judged by the official CometD JavaScript client
// (npm `cometd` 9.0.0 with `cometd-nodejs-client` 2.0.0) and by raw HTTP/WebSocket requests.
//
//   node run.js --reference                   the official cometd-nodejs-server, in this process
//   node run.js --url http://127.0.0.1:P/cometd   a Bayeux server already running
//   node run.js --edgecomet-bin PATH [--edgecomet-args "..."]
//                                              starts PATH --listen 127.0.0.1:0 --workers 2 ...
//                                              and, for the subscribe-token tests (issue 17), a
//                                              second one with --token-secret S --client-publish
//
// Other options: --transport websocket|long-polling (default both), --only REGEX (tests whose name
// matches; the others are listed as skipped and the run fails, so a partial run is never taken for
// a full one), --record DIR (every byte each test exchanged, parsed, as JSON per test: see
// wire-dump.js), --controls (also run negative controls that show a test can fail: the ack test
// without the ack extension must lose messages), --max-interval-ms N (session expiry to wait for
// when the server does not advertise advice.maxInterval; default 10000), --verbose.
//
// Output: "ok - NAME", "not ok - NAME: DETAILS", "skip - NAME (REASON)" per test, diagnostics on
// lines starting with "#", a summary line; exit status 1 if any test failed or was not run.
//
// Every test runs under its own time limit, the whole run under RUN_DEADLINE_MS; every process and
// socket this runner opens is closed before it exits (the shell wrapper kills whatever is listed in
// COMETD_TESTS_PIDFILE if it dies).

import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import crypto from 'node:crypto';
import util from 'node:util';
import { spawn } from 'node:child_process';
import { adapt } from 'cometd-nodejs-client';
import { CometD, AckExtension, TimeSyncExtension } from 'cometd';
import { startWireProxy, requestKinds, clientUnits } from './lib/wire-proxy.js';
import { RawHttpSession, RawWs, post, nextId, fmt } from './lib/raw.js';

const RUN_DEADLINE_MS = 110_000;
const TEST_TIMEOUT_MS = 20_000;
const RUN = crypto.randomBytes(3).toString('hex'); // channel prefix: runs never see each other

// ---- options -------------------------------------------------------------------------------------

function usage(msg) {
    if (msg) console.error(`run.js: ${msg}`);
    console.error(
        'usage: node run.js (--reference | --url http://127.0.0.1:PORT/cometd | --edgecomet-bin PATH [--edgecomet-args "ARGS"])\n' +
            '                   [--transport websocket|long-polling] [--only REGEX] [--record DIR] [--controls]\n' +
            '                   [--max-interval-ms N] [--verbose]',
    );
    process.exit(2);
}

const opts = {
    mode: null,
    url: null,
    bin: null,
    binArgs: (process.env.EDGECOMET_ARGS || '').split(/\s+/).filter(Boolean),
    transports: ['websocket', 'long-polling'],
    only: null,
    record: null,
    controls: false,
    maxIntervalMs: 10_000,
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
            case '--url':
                opts.mode = 'url';
                opts.url = need();
                break;
            case '--edgecomet-bin':
                opts.mode = 'edgecomet';
                opts.bin = path.resolve(need());
                break;
            case '--edgecomet-args':
                opts.binArgs = need().split(/\s+/).filter(Boolean);
                break;
            case '--transport':
                opts.transports = [need()];
                if (!['websocket', 'long-polling'].includes(opts.transports[0])) usage('--transport is websocket or long-polling');
                break;
            case '--only':
                opts.only = new RegExp(need());
                break;
            case '--record':
                opts.record = path.resolve(need());
                break;
            case '--controls':
                opts.controls = true;
                break;
            case '--max-interval-ms':
                opts.maxIntervalMs = Number(need());
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
    if (!opts.mode) usage('say which server: --reference, --url or --edgecomet-bin');
}
const IS_EDGECOMET = opts.mode !== 'reference'; // --url and --edgecomet-bin run the edgecomet-only tests

// ---- the official client, adapted to Node --------------------------------------------------------

// The adapter keeps one cookie jar per process and host (not port): two clients handshaking at the
// same time would overwrite each other's BAYEUX_BROWSER cookie, which the reference server uses to
// find sessions (a 402 for the other one). Each client here talks through its own proxy port, so
// a jar per host:port gives each client its own, as separate browsers would have.
const cookieJars = new Map();
const jarFor = (host) => {
    if (!cookieJars.has(host)) cookieJars.set(host, new Map());
    return cookieJars.get(host);
};
adapt({
    cookies: {
        storeCookie(uri, header, callback) {
            const nv = header.split(';')[0].trim();
            const i = nv.indexOf('=');
            if (i > 0) jarFor(uri.host).set(nv.slice(0, i), nv);
            callback();
        },
        retrieveCookies(context, uri, callback) {
            callback(null, [...jarFor(uri.host).values()]);
        },
    },
});
// The client logs through window.console; keep its lines out of the test output and show them
// only for a failed test (they are often the explanation).
const clientLog = []; // { seq, line }
let clientLogSeq = 0;
{
    const keep = (level) => (...args) => {
        const line = `${level}: ${args.map((x) => (typeof x === 'string' ? x : util.inspect(x, { depth: 2, breakLength: Infinity }))).join(' ')}`;
        clientLog.push({ seq: ++clientLogSeq, line: line.slice(0, 400) });
        if (clientLog.length > 200) clientLog.shift();
    };
    global.window.console = { log: keep('log'), debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') };
}

// ---- target server --------------------------------------------------------------------------------

const target = { port: 0, path: '/cometd', origin: null, close: async () => {}, maxIntervalMs: opts.maxIntervalMs, describe: '', name: 'server', extraArgs: [] };
// The subscribe-token tests (issue 17) need a server started with --token-secret: with
// --edgecomet-bin, a second edgecomet process (the same flags as the main one, plus
// --token-secret and --client-publish), started and stopped like the main one. The secret is
// this run's own; the tests mint their tokens with it.
const TOKEN_SECRET = crypto.randomBytes(32).toString('hex');
const tokenTarget = {
    port: 0,
    path: '/cometd',
    origin: null,
    close: async () => {},
    maxIntervalMs: opts.maxIntervalMs,
    describe: '(not started)',
    name: 'token server',
    extraArgs: ['--token-secret', TOKEN_SECRET, ...(opts.binArgs.includes('--client-publish') ? [] : ['--client-publish'])],
    startError: null,
};
const PIDFILE = process.env.COMETD_TESTS_PIDFILE || null;
// The edgecomet processes running, by server name: the pid file lists them all.
const livePids = new Map();
function writePidFile() {
    if (PIDFILE) fs.writeFileSync(PIDFILE, [...livePids.values()].map((pid) => `${pid}\n`).join(''));
}

// Starts (or, after it died, restarts) edgecomet on a free port, as `srv` (target or
// tokenTarget). Its output accumulates in one log per server across restarts; tests read their
// slice of it.
async function startEdgecomet(srv = target) {
    const args = ['--listen', '127.0.0.1:0', '--workers', '2', ...opts.binArgs, ...srv.extraArgs];
    const proc = spawn(opts.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    livePids.set(srv.name, proc.pid);
    writePidFile();
    proc.once('exit', () => {
        if (livePids.get(srv.name) === proc.pid) {
            livePids.delete(srv.name);
            writePidFile();
        }
    });
    if (srv.out === undefined) srv.out = '';
    const startAt = srv.out.length;
    srv.log = () => srv.out;
    srv.port = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "listening on" within 10 s: ${srv.out.slice(startAt).slice(-1000)}`)), 10_000);
        const onData = (d) => {
            srv.out += d;
            const m = /listening on 127\.0\.0\.1:(\d+)/.exec(srv.out.slice(startAt));
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
            reject(new Error(`${opts.bin} ${args.join(' ')} exited (${code ?? sig}) before listening: ${srv.out.slice(startAt).slice(-1000)}`));
        });
    });
    srv.proc = proc;
    srv.origin = `http://127.0.0.1:${srv.port}`;
    srv.close = () =>
        new Promise((resolve) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
            const k = setTimeout(() => proc.kill('SIGKILL'), 3000);
            proc.once('exit', () => {
                clearTimeout(k);
                resolve();
            });
            proc.kill('SIGTERM');
        });
    // The secret is not printed.
    const shown = args.map((a, i) => (args[i - 1] === '--token-secret' ? '<this run\'s secret>' : a));
    srv.describe = `edgecomet ${opts.bin} ${shown.join(' ')} on 127.0.0.1:${srv.port}`;
}

const serverDied = (srv = target) => srv.proc && (srv.proc.exitCode !== null || srv.proc.signalCode !== null);

// After a failed test: is edgecomet still serving? A crashing process can keep its sockets open
// for a while (a core dump), so ask it something (GET /stats, 1 s); if it does not answer, wait for
// it to exit (5 s), else kill it. Returns false when the server is gone.
async function serverAnswers(srv = target) {
    if (!srv.proc || serverDied(srv)) return !serverDied(srv);
    const ok = await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: srv.port, path: '/stats', agent: false }, (res) => {
            res.resume();
            resolve(true);
        });
        req.setTimeout(1000, () => req.destroy());
        req.on('error', () => resolve(false));
    });
    if (ok) return true;
    const proc = srv.proc;
    if (!serverDied(srv)) {
        await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(5000)]);
        if (!serverDied(srv)) {
            proc.kill('SIGKILL');
            await new Promise((r) => proc.once('exit', r));
        }
    }
    return false;
}

const closeServers = () => Promise.all([target.close(), tokenTarget.close()]);

async function startTarget() {
    if (opts.mode === 'reference') {
        const { startReferenceServer, REFERENCE_OPTIONS } = await import('./lib/reference-server.js');
        const ref = await startReferenceServer({ path: '/cometd', log: (s) => opts.verbose && console.log(`# reference: ${s}`) });
        target.port = ref.port;
        target.close = () => ref.close();
        target.maxIntervalMs = REFERENCE_OPTIONS.maxInterval;
        target.describe = `reference server cometd-nodejs-server 1.2.1 (+ WebSocket shim, /service/echo, timesync) on 127.0.0.1:${ref.port}/cometd, timeout ${REFERENCE_OPTIONS.timeout} ms, maxInterval ${REFERENCE_OPTIONS.maxInterval} ms`;
    } else if (opts.mode === 'url') {
        const u = new URL(opts.url);
        if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) usage('--url must be on loopback');
        target.port = Number(u.port || 80);
        target.path = u.pathname.replace(/\/$/, '') || '/cometd';
        target.describe = `server at ${opts.url}`;
    } else {
        await startEdgecomet();
    }
    target.origin = `http://127.0.0.1:${target.port}`;
}

// ---- test machinery --------------------------------------------------------------------------------

class Failure extends Error {}
function check(cond, msg) {
    if (!cond) throw new Failure(typeof msg === 'function' ? msg() : msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deepEqual = util.isDeepStrictEqual;

async function waitUntil(cond, timeoutMs, what) {
    const end = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > end) throw new Failure(`${typeof what === 'function' ? what() : what} (waited ${timeoutMs} ms)`);
        await sleep(10);
    }
}

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Failure(`no ${what} within ${ms} ms`)), ms);
        }),
    ]);
}

function short(list, n = 5) {
    if (list.length <= 2 * n) return JSON.stringify(list);
    return `${JSON.stringify(list.slice(0, n)).slice(0, -1)}, …${list.length - 2 * n} more…, ${JSON.stringify(list.slice(-n)).slice(1)}`;
}

// null when got equals want, else what differs.
function diffSeq(got, want) {
    if (deepEqual(got, want)) return null;
    const counts = new Map();
    for (const g of got) counts.set(g, (counts.get(g) || 0) + 1);
    const missing = want.filter((w) => !counts.has(w));
    const dups = [...counts].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
    const wanted = new Set(want);
    const extra = got.filter((g) => !wanted.has(g));
    let i = got.findIndex((g, k) => g !== want[k]);
    if (i < 0) i = got.length;
    return `received ${got.length}, expected ${want.length}; missing ${short(missing)}; duplicated ${short(dups)}; unexpected ${short(extra)}; first difference at index ${i}: got ${JSON.stringify(got[i])}, expected ${JSON.stringify(want[i])}`;
}

const tests = [];
// kind: undefined | 'edgecomet-only' | 'reference-gap' (the reference server cannot do it: runs
// against edgecomet/--url only, and is reported as skipped with the reason in reference mode).
// tokens: runs against the token server (tokenTarget), which only --edgecomet-bin starts: with
// --url it is reported as skipped (and with --reference as edgecomet-only).
function test(name, fn, { timeoutMs = TEST_TIMEOUT_MS, kind, gap, parallel = false, tokens = false } = {}) {
    tests.push({ name, fn, timeoutMs, kind, gap, parallel, tokens });
}

let recordIndex = 0;

class TestContext {
    constructor(name, server = target) {
        this.name = name;
        this.server = server; // the server this test talks to: target, or tokenTarget
        this.logFrom = clientLogSeq;
        this.serverLogFrom = server.log ? server.log().length : 0;
        this.cleanups = [];
        this.proxies = [];
        this.notes = [];
        this.clients = [];
    }

    note(s) {
        this.notes.push(s);
    }

    cleanup(fn) {
        this.cleanups.push(fn);
    }

    // A recording proxy to the target; `transport` tags it for the check that only that transport
    // went through it.
    async proxy(label = 'proxy', transport = null) {
        const p = await startWireProxy(this.server.port, { name: label });
        p.transport = transport;
        this.proxies.push(p);
        return p;
    }

    // An official CometD client that can use only `transport`, through its own recording proxy
    // (or `proxy`). The first registered extension records every message as received (before any
    // other extension) and as sent (after every other extension), so tests can look at exactly
    // what the server sent, including what the client's own wildcard dispatch would hide.
    // `extensions`: [name, extension] pairs registered after the recorder (so their outgoing
    // changes are recorded as sent, and they see incoming messages after it).
    async client(transport, { proxy, ack = false, timesync = false, label = 'client', extensions = [] } = {}) {
        const p = proxy || (await this.proxy(label, transport));
        const cometd = new CometD(`${label}-${transport}`);
        for (const type of cometd.getTransportTypes()) if (type !== transport) cometd.unregisterTransport(type);
        cometd.configure({
            url: `http://127.0.0.1:${p.port}${this.server.path}`,
            logLevel: 'warn',
            maxNetworkDelay: 5000,
            backoffIncrement: 100,
            maxBackoff: 1000,
        });
        const wire = { in: [], out: [] };
        cometd.registerExtension('wire-capture', {
            incoming(m) {
                wire.in.push({ t: Date.now(), m: structuredClone(m) });
                return m;
            },
            outgoing(m) {
                wire.out.push({ t: Date.now(), m: structuredClone(m) });
                return m;
            },
        });
        for (const [name, ext] of extensions) cometd.registerExtension(name, ext);
        if (ack) cometd.registerExtension('ack', new AckExtension());
        const ts = timesync ? new TimeSyncExtension() : null;
        if (ts) cometd.registerExtension('timesync', ts);
        const c = new Client(cometd, wire, p, label, ts);
        this.clients.push(c);
        return c;
    }

    async runCleanups() {
        for (const c of this.clients) await c.close();
        for (const fn of this.cleanups.reverse()) {
            try {
                await fn();
            } catch {}
        }
        for (const p of this.proxies) await p.close();
    }

    // A test of the official client passes only if each tagged proxy saw that transport alone.
    checkTransports() {
        for (const p of this.proxies) {
            if (!p.transport) continue;
            const k = requestKinds(p.events);
            if (p.transport === 'websocket') {
                check(k.upgrades.length >= 1 && k.posts.length === 0 && k.others.length === 0,
                    `${p.name}: expected WebSocket upgrades only, saw upgrades ${short(k.upgrades)}, POSTs ${short(k.posts)}, others ${short(k.others)}`);
            } else {
                check(k.posts.length >= 1 && k.upgrades.length === 0 && k.others.length === 0,
                    `${p.name}: expected long-polling POSTs only, saw POSTs ${short(k.posts)}, upgrades ${short(k.upgrades)}, others ${short(k.others)}`);
            }
        }
    }

    record() {
        if (!opts.record) return;
        fs.mkdirSync(opts.record, { recursive: true });
        const file = path.join(opts.record, `${String(++recordIndex).padStart(2, '0')}-${this.name.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 80)}.json`);
        fs.writeFileSync(file, JSON.stringify({ test: this.name, target: this.server.describe, proxies: this.proxies.map((p) => ({ name: p.name, transport: p.transport, events: p.events })) }, null, 1));
    }
}

// A reply or failure of the official client, without the XHR/WebSocket it may hold.
function describe(reply) {
    if (!reply || !reply.failure) return fmt(reply);
    const f = reply.failure;
    const short = { reason: f.reason, httpCode: f.httpCode, websocketCode: f.websocketCode, exception: f.exception && String(f.exception) };
    return fmt({ ...reply, failure: short });
}

// Promise-returning wrappers around the callback API of the official client.
class Client {
    constructor(cometd, wire, proxy, label, timesync) {
        this.cometd = cometd;
        this.wire = wire;
        this.proxy = proxy;
        this.label = label;
        this.timesync = timesync;
        this.received = {}; // channel subscribed -> messages given to the subscription callback
    }

    // The reply to a handshake, successful or not.
    handshakeReply(props) {
        return withTimeout(new Promise((resolve) => this.cometd.handshake(props, resolve)), 8000, `${this.label}: handshake reply`);
    }

    handshake(props) {
        return withTimeout(
            new Promise((resolve, reject) => {
                this.cometd.handshake(props, (reply) => {
                    if (reply.successful) resolve(reply);
                    else reject(new Failure(`${this.label}: handshake failed: ${describe(reply)}`));
                });
            }),
            8000,
            `${this.label}: successful handshake reply`,
        );
    }

    // Resolves once the first /meta/connect reply arrived (successful).
    connected(timeoutMs = 5000) {
        return waitUntil(() => this.wire.in.find((x) => x.m.channel === '/meta/connect' && x.m.successful === true), timeoutMs, `${this.label}: no successful /meta/connect reply`);
    }

    subscribe(channel, onMessage) {
        const list = (this.received[channel] = this.received[channel] || []);
        return withTimeout(
            new Promise((resolve, reject) => {
                const handle = this.cometd.subscribe(
                    channel,
                    (m) => {
                        list.push(m);
                        if (onMessage) onMessage(m);
                    },
                    (reply) => {
                        if (reply.successful) resolve(handle);
                        else reject(new Failure(`${this.label}: subscribe ${channel} failed: ${describe(reply)}`));
                    },
                );
            }),
            8000,
            `${this.label}: reply to subscribe ${channel}`,
        );
    }

    unsubscribe(handle) {
        return withTimeout(
            new Promise((resolve, reject) => {
                this.cometd.unsubscribe(handle, (reply) => {
                    if (reply.successful) resolve(reply);
                    else reject(new Failure(`${this.label}: unsubscribe failed: ${describe(reply)}`));
                });
            }),
            8000,
            `${this.label}: reply to unsubscribe`,
        );
    }

    publish(channel, data) {
        return withTimeout(
            new Promise((resolve, reject) => {
                this.cometd.publish(channel, data, (reply) => {
                    if (reply.successful) resolve(reply);
                    else reject(new Failure(`${this.label}: publish to ${channel} failed: ${describe(reply)}`));
                });
            }),
            8000,
            `${this.label}: reply to the publish to ${channel}`,
        );
    }

    // Publishes all at once (the client queues or pipelines them) and waits for every reply.
    publishAll(channel, datas) {
        return Promise.all(datas.map((d) => this.publish(channel, d)));
    }

    disconnect() {
        return withTimeout(
            new Promise((resolve, reject) => {
                this.cometd.disconnect((reply) => {
                    if (reply.successful) resolve(reply);
                    else reject(new Failure(`${this.label}: disconnect failed: ${describe(reply)}`));
                });
            }),
            5000,
            `${this.label}: reply to /meta/disconnect`,
        );
    }

    // Non-meta messages as they arrived on the wire (before the client's own dispatch).
    delivered(filter = () => true) {
        return this.wire.in.filter((x) => !x.m.channel.startsWith('/meta/') && x.m.data !== undefined && filter(x.m)).map((x) => x.m);
    }

    async close() {
        try {
            if (!this.cometd.isDisconnected()) {
                await Promise.race([new Promise((r) => this.cometd.disconnect(() => r())), sleep(1000)]);
            }
        } catch {}
    }
}

// The cookies a client used through a proxy: those it sent and those the server set (the reference
// server finds long-polling sessions by the BAYEUX_BROWSER cookie it sets in the handshake;
// edgecomet may use none).
function cookiesSetThrough(proxy) {
    const jar = new Map();
    for (const e of proxy.events) {
        if (e.type !== 'http-response' && e.type !== 'http-request') continue;
        for (const line of e.head.split('\r\n')) {
            let m = /^set-cookie:\s*([^=;\s]+)=([^;]*)/i.exec(line);
            if (m) jar.set(m[1], m[2]);
            m = /^cookie:\s*(.*)$/i.exec(line);
            if (m) {
                for (const kv of m[1].split(';')) {
                    const i = kv.indexOf('=');
                    if (i > 0) jar.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim());
                }
            }
        }
    }
    return [...jar].map(([k, v]) => `${k}=${v}`).join('; ') || null;
}

// A raw HTTP session reusing an official client's clientId (and its cookies).
function rawAs(client, port = target.port) {
    const s = new RawHttpSession(port, target.path);
    s.clientId = client.cometd.getClientId();
    s.cookie.value = cookiesSetThrough(client.proxy);
    return s;
}

function errorCode(reply) {
    return typeof reply.error === 'string' ? reply.error.split(':')[0] : null;
}

// POST /pub/{channel} on the native API (edgecomet only), straight to the server (the main one,
// or the one on `port`).
function nativePublish(channel, body, port = target.port) {
    return new Promise((resolve, reject) => {
        const buf = Buffer.from(body, 'utf8');
        const req = http.request(
            { host: '127.0.0.1', port, method: 'POST', path: `/pub/${channel}`, headers: { 'Content-Length': buf.length }, agent: false },
            (res) => {
                let text = '';
                res.on('data', (d) => (text += d));
                res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Failure(`POST /pub/${channel}: ${res.statusCode} ${text.slice(0, 200)}`))));
            },
        );
        req.setTimeout(5000, () => req.destroy(new Error(`POST /pub/${channel}: no answer within 5 s`)));
        req.on('error', reject);
        req.end(buf);
    });
}

// ---- tests with the official client, over each transport ------------------------------------------

const TC = { websocket: 'ws', 'long-polling': 'lp' };

for (const T of opts.transports) {
    const ch = (name) => `/t${RUN}/${TC[T]}/${name}`;

    test(`${T}: handshake and first /meta/connect over ${T} only; the clientId is the server's`, async (t) => {
        const a = await t.client(T, { label: 'a' });
        const reply = await a.handshake();
        check(a.cometd.getTransport() && a.cometd.getTransport().type === T, () => `client negotiated ${a.cometd.getTransport() && a.cometd.getTransport().type}, expected ${T}`);
        const sent = a.wire.out.find((x) => x.m.channel === '/meta/handshake').m;
        check(deepEqual(sent.supportedConnectionTypes, [T]) && sent.version === '1.0', () => `the client sent ${fmt(sent)}`);
        const raw = a.wire.in.find((x) => x.m.channel === '/meta/handshake').m;
        check(raw.successful === true, () => `handshake reply ${fmt(raw)}`);
        check(raw.id === sent.id, () => `handshake reply id ${fmt(raw.id)}, request id ${fmt(sent.id)}`);
        check(typeof raw.clientId === 'string' && raw.clientId.length >= 22, () => `clientId ${fmt(raw.clientId)}: expected a string of at least 22 characters (128 random bits)`);
        check(a.cometd.getClientId() === raw.clientId && reply.clientId === raw.clientId, () => `client uses clientId ${a.cometd.getClientId()}, server sent ${raw.clientId}`);
        check(Array.isArray(raw.supportedConnectionTypes) && raw.supportedConnectionTypes.includes(T), () => `supportedConnectionTypes ${fmt(raw.supportedConnectionTypes)} lacks ${T}`);
        check(typeof raw.version === 'string', () => `no version in ${fmt(raw)}`);
        await a.connected();
        const connect = a.wire.out.find((x) => x.m.channel === '/meta/connect').m;
        check(connect.clientId === raw.clientId && connect.connectionType === T, () => `first /meta/connect sent ${fmt(connect)}`);
        const b = await t.client(T, { label: 'b' });
        await b.handshake();
        check(b.cometd.getClientId() !== a.cometd.getClientId(), 'two clients got the same clientId');
        t.note(`handshake reply: ${fmt(raw, 300)}`);
    });

    test(`${T}: 100 messages published by another client arrive once each, in order`, async (t) => {
        const s = await t.client(T, { label: 'sub' });
        const p = await t.client(T, { label: 'pub' });
        await s.handshake();
        await p.handshake();
        const c = ch('order');
        await s.subscribe(c);
        const want = Array.from({ length: 100 }, (_, i) => i + 1);
        await p.publishAll(c, want.map((i) => ({ seq: i, text: `message ${i}` })));
        await waitUntil(() => s.received[c].length >= 100, 10_000, () => `subscriber got ${s.received[c].length} of 100`);
        await sleep(200); // a duplicate would arrive now
        const got = s.received[c].map((m) => m.data && m.data.seq);
        const d = diffSeq(got, want);
        check(!d, d);
        check(s.received[c].every((m) => m.channel === c && m.data.text === `message ${m.data.seq}`), 'a message arrived with the wrong channel or data');
    });

    test(`${T}: wildcards: /a/* gets /a/b only, /a/** gets /a/b, /a/b/c and deeper`, async (t) => {
        const one = await t.client(T, { label: 'star' });
        const two = await t.client(T, { label: 'starstar' });
        const p = await t.client(T, { label: 'pub' });
        await Promise.all([one.handshake(), two.handshake(), p.handshake()]);
        const base = ch('w');
        await one.subscribe(`${base}/a/*`);
        await two.subscribe(`${base}/a/**`);
        await one.subscribe(`${base}/end`);
        await two.subscribe(`${base}/end`);
        for (const c of [`${base}/a/b`, `${base}/a/b/c`, `${base}/a`, `${base}/ab`, `${base}/a/b/c/d`, `${base}/x/a/b`, `${base}/end`]) {
            await p.publish(c, { to: c });
        }
        await waitUntil(() => one.received[`${base}/end`].length && two.received[`${base}/end`].length, 5000, 'the final message on /end did not reach both');
        await sleep(100);
        const chans = (cl) => cl.delivered((m) => m.channel !== `${base}/end`).map((m) => m.channel);
        check(deepEqual(chans(one), [`${base}/a/b`]), () => `/a/* subscriber received on the wire ${fmt(chans(one))}, expected only /a/b`);
        check(deepEqual(chans(two), [`${base}/a/b`, `${base}/a/b/c`, `${base}/a/b/c/d`]), () => `/a/** subscriber received on the wire ${fmt(chans(two))}, expected /a/b, /a/b/c, /a/b/c/d`);
        check(one.received[`${base}/a/*`].length === 1 && two.received[`${base}/a/**`].length === 3, 'the client dispatched a different number of messages than arrived');
        check(one.delivered().every((m) => m.data.to === m.channel), 'data does not match channel');
    });

    test(`${T}: a batch goes in one request and is processed in order (subscribe, then publishes)`, async (t) => {
        const s = await t.client(T, { label: 'other' });
        const p = await t.client(T, { label: 'batcher' });
        await Promise.all([s.handshake(), p.handshake()]);
        await p.connected();
        const own = ch('batch-own');
        const other = ch('batch-other');
        await s.subscribe(other);
        const ownGot = (p.received[own] = []);
        const replies = [];
        p.cometd.batch(() => {
            p.cometd.subscribe(own, (m) => ownGot.push(m), (r) => replies.push(['sub', r.successful]));
            for (let i = 1; i <= 5; i++) p.cometd.publish(own, { i }, (r) => replies.push([`own${i}`, r.successful]));
            for (let i = 1; i <= 5; i++) p.cometd.publish(other, { i }, (r) => replies.push([`other${i}`, r.successful]));
        });
        await waitUntil(() => replies.length === 11, 5000, () => `got ${replies.length} of 11 replies: ${fmt(replies)}`);
        check(replies.every(([, ok]) => ok === true), () => `unsuccessful replies: ${fmt(replies)}`);
        await waitUntil(() => ownGot.length >= 5 && s.received[other].length >= 5, 5000, () => `batcher got ${ownGot.length} of its 5, other subscriber ${s.received[other].length} of 5`);
        await sleep(100);
        check(deepEqual(ownGot.map((m) => m.data.i), [1, 2, 3, 4, 5]), () => `own publishes came back as ${fmt(ownGot.map((m) => m.data.i))} (the subscribe must be processed before the publishes that follow it)`);
        check(deepEqual(s.received[other].map((m) => m.data.i), [1, 2, 3, 4, 5]), () => `the other subscriber got ${fmt(s.received[other].map((m) => m.data.i))}`);
        // On the wire: one request body / frame with exactly these 11 messages in this order.
        const units = clientUnits(p.proxy.events).filter((u) => u.messages.some((m) => m && (m.subscription === own || m.channel === own || m.channel === other)));
        check(units.length === 1, () => `the batch went out in ${units.length} requests/frames: ${fmt(units.map((u) => `${u.via}: ${u.messages.length} messages`))}`);
        const seq = units[0].messages.map((m) => (m.channel === '/meta/subscribe' ? `sub ${m.subscription === own ? 'own' : m.subscription}` : `${m.channel === own ? 'own' : 'other'} ${m.data && m.data.i}`));
        const want = ['sub own', 'own 1', 'own 2', 'own 3', 'own 4', 'own 5', 'other 1', 'other 2', 'other 3', 'other 4', 'other 5'];
        check(deepEqual(seq, want), () => `batch on the wire (${units[0].via}): ${fmt(seq)}`);
        t.note(`the batch went as one ${units[0].via}`);
    });

    test(`${T}: unsubscribe: nothing arrives after its reply`, async (t) => {
        const s = await t.client(T, { label: 'sub' });
        const p = await t.client(T, { label: 'pub' });
        await Promise.all([s.handshake(), p.handshake()]);
        const c = ch('unsub');
        const end = ch('unsub-end');
        const handle = await s.subscribe(c);
        await s.subscribe(end);
        await p.publish(c, { n: 1 });
        await waitUntil(() => s.received[c].length === 1, 5000, 'the message before unsubscribe did not arrive');
        await s.unsubscribe(handle);
        await p.publish(c, { n: 2 });
        await p.publish(c, { n: 3 });
        await p.publish(end, { n: 'end' });
        await waitUntil(() => s.received[end].length === 1, 5000, 'the message on the other channel did not arrive');
        await sleep(100);
        const onWire = s.delivered((m) => m.channel === c).map((m) => m.data.n);
        check(deepEqual(onWire, [1]), () => `after unsubscribe the server still sent ${fmt(onWire)} on ${c}`);
    });

    test(`${T}: remoteCall("echo") returns the same data; a /service/ publish is not broadcast`, async (t) => {
        const caller = await t.client(T, { label: 'caller' });
        const other = await t.client(T, { label: 'other' });
        await Promise.all([caller.handshake(), other.handshake()]);
        const end = ch('svc-end');
        // Subscribing to a service channel is a no-op for CometD servers (successful, nothing
        // recorded); a server may also refuse it. Either way nothing may be delivered.
        const subReply = await new Promise((resolve) => other.cometd.subscribe('/service/echo', () => {}, resolve));
        t.note(`subscribe to /service/echo: ${describe(subReply)}`);
        await other.subscribe(end);
        const data = { text: 'héllo ☃', n: [1, 2.5, -3], nested: { a: null, b: true, s: '' } };
        const reply = await withTimeout(
            new Promise((resolve) => caller.cometd.remoteCall('echo', data, 5000, resolve)),
            7000,
            'remoteCall callback',
        );
        check(reply.successful === true, () => `remoteCall reply ${describe(reply)}`);
        check(deepEqual(reply.data, data), () => `remoteCall returned ${fmt(reply.data)}, sent ${fmt(data)}`);
        check(reply.channel === '/service/echo', () => `remoteCall reply on channel ${reply.channel}`);
        const rawReply = caller.wire.in.find((x) => x.m.channel === '/service/echo' && x.m.data !== undefined);
        t.note(`echo reply on the wire: ${fmt(rawReply && rawReply.m, 300)}`);
        if (T === 'websocket') {
            // Over WebSocket the client clears its per-message timer only on a reply without data
            // (or a meta reply) carrying the message's id; with the echo's data reply alone it
            // closes the WebSocket after maxNetworkDelay ("Message Timeout").
            const ack = caller.wire.in.find((x) => x.m.id === rawReply.m.id && x.m.data === undefined);
            check(ack && ack.m.successful === true, () => `no publish reply (same id, no data) for the remote call ${rawReply.m.id}: the client would close the WebSocket after maxNetworkDelay`);
        }
        await new Promise((resolve) => caller.cometd.publish('/service/echo', { direct: 1 }, resolve));
        await new Promise((resolve) => caller.cometd.publish('/service/nobody-listens', { direct: 2 }, resolve));
        await caller.publish(end, { end: true });
        await waitUntil(() => other.received[end].length === 1, 5000, 'the final message did not arrive');
        await sleep(100);
        const leaked = other.delivered((m) => m.channel.startsWith('/service/'));
        check(leaked.length === 0, () => `a /service/ message reached another client: ${fmt(leaked)}`);
    });

    test(`${T}: timesync extension: handshake reply carries ext.timesync {tc, ts, p, a}`, async (t) => {
        const c = await t.client(T, { label: 'timesync', timesync: true });
        const before = Date.now();
        await c.handshake();
        const after = Date.now();
        const sent = c.wire.out.find((x) => x.m.channel === '/meta/handshake').m;
        const s = sent.ext && sent.ext.timesync;
        check(s && typeof s.tc === 'number' && s.l === 0 && s.o === 0, () => `the client sent ${fmt(sent.ext)}`);
        const got = c.wire.in.find((x) => x.m.channel === '/meta/handshake').m;
        const r = got.ext && got.ext.timesync;
        check(r, () => `handshake reply without ext.timesync: ${fmt(got)}`);
        check(r.tc === s.tc, () => `timesync.tc ${r.tc} is not the client's ${s.tc}`);
        check(Number.isFinite(r.ts) && r.ts >= before - 50 && r.ts <= after + 50, () => `timesync.ts ${r.ts} is not a server time between ${before} and ${after} (same machine)`);
        check(Number.isFinite(r.p) && r.p >= 0 && r.p <= after - before + 50, () => `timesync.p ${r.p}`);
        check(Number.isFinite(r.a), () => `timesync.a ${r.a}`);
        await c.connected();
        const connectOut = c.wire.out.find((x) => x.m.channel === '/meta/connect').m;
        check(connectOut.ext && connectOut.ext.timesync && typeof connectOut.ext.timesync.tc === 'number', 'the client did not send ext.timesync on /meta/connect');
        const lag = c.timesync.getNetworkLag();
        const offset = c.timesync.getTimeOffset();
        check(Number.isFinite(lag) && lag >= 0 && lag < 1000 && Math.abs(offset) < 1000, () => `client estimates lag ${lag} ms, offset ${offset} ms`);
        t.note(`timesync reply ${fmt(r)}; client lag ${lag} ms, offset ${offset} ms`);
    });

    // The ack extension test. The subscriber's proxy first turns into a black hole (the server
    // writes, the client never sees it), then the connection is cut; everything published in
    // between must arrive after the client reconnects (same clientId, no new handshake), once, in
    // order. Without the ack extension the server would have counted the black-holed reply as
    // delivered; --controls runs that variant and expects a loss, proving the test can fail.
    const ackTest = (withAck) => async (t) => {
        const s = await t.client(T, { label: 'sub', ack: withAck });
        const p = await t.client(T, { label: 'pub' });
        await Promise.all([s.handshake(), p.handshake()]);
        if (withAck) {
            const hs = s.wire.in.find((x) => x.m.channel === '/meta/handshake').m;
            const ackField = hs.ext && hs.ext.ack;
            check(ackField === true || (ackField && ackField.enabled === true), () => `handshake reply does not enable ack: ext ${fmt(hs.ext)}`);
            const sentHs = s.wire.out.find((x) => x.m.channel === '/meta/handshake').m;
            check(sentHs.ext && sentHs.ext.ack === true, () => `the client sent ext ${fmt(sentHs.ext)}`);
        }
        const c = ch(withAck ? 'ack' : 'noack');
        await s.subscribe(c);
        if (withAck) {
            await waitUntil(() => s.wire.in.find((x) => x.m.channel === '/meta/connect' && x.m.ext && typeof x.m.ext.ack === 'number'), 5000, '/meta/connect replies carry no numeric ext.ack');
        }
        const seqs = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
        const got = () => s.received[c].map((m) => m.data.seq);
        await p.publishAll(c, seqs(1, 20).map((seq) => ({ seq })));
        await waitUntil(() => got().length >= 20, 5000, () => `before the cut: subscriber got ${got().length} of 20`);
        s.proxy.freeze();
        await p.publishAll(c, seqs(21, 40).map((seq) => ({ seq })));
        const droppedMsgs = () =>
            s.proxy.events.filter((e) => e.dropped && ((e.text && e.text.includes(c)) || (e.body && e.body.includes(c)))).length;
        await waitUntil(() => droppedMsgs() > 0, 5000, 'the server sent nothing to the frozen subscriber: the test would prove nothing');
        await sleep(200);
        check(got().length === 20, () => `the black hole leaked: subscriber got ${got().length} during the freeze`);
        const cut = s.proxy.cut();
        const cutAt = Date.now();
        await p.publishAll(c, seqs(41, 60).map((seq) => ({ seq })));
        const want = seqs(1, 60);
        if (withAck) {
            await waitUntil(() => got().length >= 60, 15_000, () => `after the cut: subscriber got ${got().length} of 60: ${diffSeq(got(), want)}`);
            await sleep(300);
            const d = diffSeq(got(), want);
            check(!d, d);
            const handshakes = s.wire.out.filter((x) => x.m.channel === '/meta/handshake').length;
            check(handshakes === 1, () => `the subscriber handshook ${handshakes} times: its session was lost`);
            const after = s.wire.out.find((x) => x.t >= cutAt && x.m.channel === '/meta/connect');
            check(after && after.m.ext && typeof after.m.ext.ack === 'number', () => `the reconnecting /meta/connect carried ext ${fmt(after && after.m.ext)}`);
            t.note(`${cut} connection(s) cut; ${droppedMsgs()} server write(s) with messages black-holed; reconnect /meta/connect ext ${fmt(after.m.ext)}`);
        } else {
            await waitUntil(() => got().includes(60), 15_000, () => `after the cut: subscriber got ${got().length}, not 60`);
            await sleep(300);
            const lost = want.filter((x) => !got().includes(x));
            check(lost.length > 0, 'nothing was lost without the ack extension: the ack test cannot tell a server with ack from one without');
            t.note(`without ack, lost ${lost.length}: ${short(lost)} (as expected)`);
        }
    };
    test(`${T}: ack extension: messages the server wrote into a broken connection arrive after the reconnect, once each, in order`, ackTest(true), { timeoutMs: 30_000 });
    if (opts.controls) {
        test(`${T}: control: the same cut without the ack extension loses messages`, ackTest(false), { timeoutMs: 30_000 });
    }

    test(`${T}: disconnect: successful, releases the held /meta/connect, then the old clientId is unknown (402)`, async (t) => {
        const c = await t.client(T, { label: 'leaver' });
        await c.handshake();
        await c.connected();
        await sleep(300); // the second /meta/connect is now held
        const connects = c.wire.out.filter((x) => x.m.channel === '/meta/connect');
        check(connects.length >= 2, () => `the client sent ${connects.length} /meta/connect`);
        const held = connects[connects.length - 1].m;
        check(!c.wire.in.some((x) => x.m.channel === '/meta/connect' && x.m.id === held.id), () => `/meta/connect ${held.id} was not held: answered at once`);
        const clientId = c.cometd.getClientId();
        // Control: the session is known before the disconnect (same transport kind).
        if (T === 'long-polling') {
            const raw = rawAs(c);
            const r = await raw.exchange([{ id: nextId('p'), channel: ch('dc'), clientId, data: { before: true } }]);
            check(r.some((m) => m.successful === true), () => `publish with the live clientId over raw HTTP: ${fmt(r)}`);
        } else {
            const ws = await RawWs.open(`http://127.0.0.1:${c.proxy.port}${target.path}`);
            t.cleanup(() => ws.close());
            const id = nextId('p');
            ws.send([{ id, channel: ch('dc'), clientId, data: { before: true } }]);
            const r = await ws.reply(id);
            check(r.successful === true, () => `publish with the live clientId on a new WebSocket: ${fmt(r)}`);
            ws.close();
        }
        const dReply = await c.disconnect();
        t.note(`disconnect reply ${fmt(dReply, 200)}`);
        await waitUntil(() => c.wire.in.find((x) => x.m.channel === '/meta/connect' && x.m.id === held.id), 2000, `the held /meta/connect ${held.id} was not answered after the disconnect`);
        const raw = rawAs(c);
        const r = await raw.exchange([{ id: nextId('p'), channel: ch('dc'), clientId, data: { after: true } }]);
        const pr = r.find((m) => m.channel === ch('dc'));
        check(pr && pr.successful === false && errorCode(pr) === '402', () => `publish with the old clientId over raw HTTP: ${fmt(r)}`);
        t.note(`publish after disconnect: ${fmt(pr, 200)}`);
        if (T === 'websocket') {
            const ws = await RawWs.open(`http://127.0.0.1:${c.proxy.port}${target.path}`);
            t.cleanup(() => ws.close());
            const id = nextId('p');
            ws.send([{ id, channel: ch('dc'), clientId, data: { after: true } }]);
            const wr = await ws.reply(id);
            check(wr.successful === false && errorCode(wr) === '402', () => `publish with the old clientId on a new WebSocket: ${fmt(wr)}`);
        }
    });

    test(`${T}: edgecomet: POST /pub/{channel} reaches Bayeux subscribers of /{channel} with data = the JSON body`, async (t) => {
        const s = await t.client(T, { label: 'sub' });
        await s.handshake();
        const native = `b${RUN}-${TC[T]}`;
        await s.subscribe(`/${native}`);
        const bodies = ['{"n":1,"s":"é ☃","nested":{"a":[1,2,null]}}', '[1,2,3]', '"just a string"'];
        for (const b of bodies) await nativePublish(native, b);
        await waitUntil(() => s.received[`/${native}`].length >= 3, 5000, () => `got ${s.received[`/${native}`].length} of 3: ${fmt(s.received[`/${native}`])}`);
        const got = s.received[`/${native}`];
        for (let i = 0; i < 3; i++) {
            check(got[i].channel === `/${native}` && deepEqual(got[i].data, JSON.parse(bodies[i])), () => `message ${i}: ${fmt(got[i])}, expected data ${bodies[i]}`);
        }
        // TODO (issue 5, the other way round): a Bayeux publish to /x must reach native subscribers
        // of x: a long-poll `GET /sub/x?cursor=0` with `Accept: application/json` then answers
        // with the message whose text is the Bayeux message's `data` serialized as JSON (e.g.
        // publish {"n":1} -> the native message text is `{"n":1}`), and a WebSocket subscriber of
        // /sub/x gets that text as one frame.
    }, { kind: 'edgecomet-only' });
}

// ---- subscribe tokens (issue 17), with the official client, over each transport -------------------
//
// Against the token server (tokenTarget: edgecomet with --token-secret and --client-publish, started
// by --edgecomet-bin only). The spec: docs/auth.md, "Subscribe tokens" and its Bayeux paragraph.

// An HS256 JSON Web Token (RFC 7519) over `claims`, signed with `secret` (this run's by default):
// base64url(header).base64url(claims).base64url(HMAC-SHA256 of the two).
function mintToken(claims, secret = TOKEN_SECRET) {
    const part = (o) => Buffer.from(JSON.stringify(o), 'utf8').toString('base64url');
    const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
    return `${signed}.${crypto.createHmac('sha256', secret).update(signed).digest('base64url')}`;
}
const unixNow = () => Math.floor(Date.now() / 1000);

// A client extension that puts `next()` into the `ext.auth.token` of every /meta/handshake the
// client sends, as an application refreshing its token does: the CometD client reuses the props of
// the first handshake when it handshakes again by itself, so only an extension can bring a fresh
// token then.
function tokenExtension(next) {
    return {
        outgoing(m) {
            if (m.channel === '/meta/handshake') m.ext = { ...(m.ext || {}), auth: { token: next() } };
            return m;
        },
    };
}

// The /meta/handshake messages a client sent through its proxy (what the server saw).
const handshakesOnWire = (proxy) =>
    clientUnits(proxy.events)
        .flatMap((u) => u.messages)
        .filter((m) => m && m.channel === '/meta/handshake');

// A subscribe's reply, successful or not.
function subscribeReply(client, channel, onMessage = () => {}) {
    return withTimeout(new Promise((resolve) => client.cometd.subscribe(channel, onMessage, resolve)), 8000, `${client.label}: reply to subscribe ${channel}`);
}

// A publish's reply, successful or not.
function publishReply(client, channel, data) {
    return withTimeout(new Promise((resolve) => client.cometd.publish(channel, data, resolve)), 8000, `${client.label}: reply to the publish to ${channel}`);
}

// A client refused at its handshake gives up (advice reconnect: none); a client that retried
// would send its next handshake after backoffIncrement (100 ms) and more each time: this long
// without one is its absence on the wire.
const NO_RETRY_WINDOW_MS = 600;

for (const T of opts.transports) {
    // Native names (the token's patterns); the Bayeux channel of `x` is `/x`.
    const base = `t${RUN}/${TC[T]}/tok`;
    const tok = { kind: 'edgecomet-only', tokens: true };

    test(`${T}: tokens: a handshake with a valid ext.auth.token succeeds; a granted subscription gets a POST /pub message`, async (t) => {
        const token = mintToken({ exp: unixNow() + 60, sub: 'alice', channels: [`${base}/ok/*`] });
        const c = await t.client(T, { label: 'alice' });
        const reply = await c.handshake({ ext: { auth: { token } } });
        check(c.cometd.getTransport().type === T, () => `client negotiated ${c.cometd.getTransport().type}`);
        const sent = handshakesOnWire(c.proxy);
        check(sent.length === 1 && sent[0].ext && sent[0].ext.auth && sent[0].ext.auth.token === token, () => `the server was sent ${fmt(sent)}`);
        check(typeof reply.clientId === 'string' && reply.clientId.length >= 22, () => `handshake reply ${describe(reply)}`);
        await c.connected();
        const chan = `/${base}/ok/news`;
        await c.subscribe(chan);
        const body = '{"hello":"token","n":[1,2]}';
        await nativePublish(`${base}/ok/news`, body, t.server.port);
        await waitUntil(() => c.received[chan].length >= 1, 5000, () => `the message published with POST /pub/${base}/ok/news did not arrive`);
        check(c.received[chan].length === 1 && c.received[chan][0].channel === chan && deepEqual(c.received[chan][0].data, JSON.parse(body)), () => `received ${fmt(c.received[chan])}`);
        t.note(`handshake reply: ${describe(reply)}`);
    }, tok);

    test(`${T}: tokens: a handshake without a token, with an expired or badly signed or malformed one fails with 401:: and advice reconnect none; the client does not retry`, async (t) => {
        const claims = { exp: unixNow() + 60, channels: [`${base}/**`] };
        const cases = [
            ['no token', {}, /required/],
            ['expired token', { ext: { auth: { token: mintToken({ ...claims, exp: unixNow() - 10 }) } } }, /expired/],
            ['bad signature', { ext: { auth: { token: mintToken(claims, crypto.randomBytes(32).toString('hex')) } } }, /signature/],
            ['malformed token', { ext: { auth: { token: 'not-a.json-web.token' } } }, /malformed/],
        ];
        await Promise.all(
            cases.map(async ([what, props, reason]) => {
                const c = await t.client(T, { label: what.replace(/ /g, '-') });
                const heard = [];
                c.cometd.addListener('/meta/handshake', (m) => heard.push(m));
                const reply = await c.handshakeReply(props);
                check(reply.successful === false, () => `${what}: handshake callback got ${describe(reply)}`);
                await waitUntil(() => heard.length >= 1, 2000, `${what}: the /meta/handshake listener was not called`);
                const h = heard[0];
                check(h.successful === false && typeof h.error === 'string' && h.error.startsWith('401::'), () => `${what}: the handshake listener saw ${describe(h)}, expected successful=false and an error starting with 401::`);
                check(reason.test(h.error), () => `${what}: error ${fmt(h.error)} does not say ${reason}`);
                const onWire = c.wire.in.find((x) => x.m.channel === '/meta/handshake').m;
                const asked = c.wire.out.find((x) => x.m.channel === '/meta/handshake').m;
                check(onWire.id === asked.id, () => `${what}: reply id ${fmt(onWire.id)}, request id ${fmt(asked.id)}`);
                check(onWire.advice && onWire.advice.reconnect === 'none', () => `${what}: reply advice ${fmt(onWire.advice)}, expected reconnect: none`);
                await waitUntil(() => c.cometd.isDisconnected(), 3000, () => `${what}: the client did not give up (status ${c.cometd.getStatus()})`);
                await sleep(NO_RETRY_WINDOW_MS); // an absence: see NO_RETRY_WINDOW_MS
                const sent = handshakesOnWire(c.proxy);
                check(sent.length === 1, () => `${what}: the server got ${sent.length} handshakes from the client, expected 1 (no retry after reconnect: none)`);
                check(heard.length === 1, () => `${what}: the handshake listener was called ${heard.length} times`);
                t.note(`${what}: ${fmt(onWire, 300)}`);
            }),
        );
    }, tok);

    test(`${T}: tokens: a subscribe outside the token's channels fails with 403:; the client stays connected and a granted subscribe works`, async (t) => {
        const token = mintToken({ exp: unixNow() + 60, channels: [`${base}/sub/ok/*`] });
        const c = await t.client(T, { label: 'sub' });
        await c.handshake({ ext: { auth: { token } } });
        await c.connected();
        const refusedAt = [];
        for (const sub of [`/${base}/sub/no`, `/${base}/sub/ok/deeper/no`, `/${base}/sub/ok/**`, `/${base}/sub/*`, `/${base}/**`]) {
            const r = await subscribeReply(c, sub);
            check(r.successful === false && typeof r.error === 'string' && r.error.startsWith('403:'), () => `subscribe ${sub}: ${describe(r)}, expected successful=false and an error starting with 403:`);
            check(r.error === `403:${sub}:the token does not grant this channel`, () => `subscribe ${sub}: error ${fmt(r.error)}, expected "403:${sub}:the token does not grant this channel"`);
            refusedAt.push(Date.now());
            t.note(`${sub}: ${fmt(r.error)}`);
        }
        check(c.cometd.getStatus() === 'connected', () => `after the refusals the client is ${c.cometd.getStatus()}`);
        const ok = `/${base}/sub/ok/news`;
        const okStar = `/${base}/sub/ok/*`;
        await c.subscribe(ok);
        await c.subscribe(okStar);
        await nativePublish(`${base}/sub/no`, '{"to":"refused"}', t.server.port);
        await nativePublish(`${base}/sub/ok/news`, '{"to":"granted"}', t.server.port);
        await waitUntil(() => c.received[ok].length >= 1 && c.received[okStar].length >= 1, 5000, () => `granted subscriptions got ${c.received[ok].length} and ${c.received[okStar].length} messages`);
        const delivered = c.delivered().map((m) => m.channel);
        check(deepEqual(delivered, [ok]), () => `on the wire the client received messages on ${fmt(delivered)}, expected ${ok} only (once)`);
        const last = refusedAt[refusedAt.length - 1];
        check(c.wire.in.some((x) => x.t >= last && x.m.channel === '/meta/connect' && x.m.successful === true), 'no successful /meta/connect after the refusals');
        check(handshakesOnWire(c.proxy).length === 1, () => `the client handshook ${handshakesOnWire(c.proxy).length} times`);
    }, tok);

    test(`${T}: tokens: a publish inside the token's publish claim succeeds, outside it fails with 403: and reaches nobody`, async (t) => {
        const exp = unixNow() + 60;
        const s = await t.client(T, { label: 'sub' });
        const p = await t.client(T, { label: 'pub' });
        await s.handshake({ ext: { auth: { token: mintToken({ exp, channels: [`${base}/pub/**`] }) } } });
        await p.handshake({ ext: { auth: { token: mintToken({ exp, publish: [`${base}/pub/open`, `${base}/pub/many/*`] }) } } });
        const all = `/${base}/pub/**`;
        await s.subscribe(all);
        const refusal = (chan) => `403:${chan}:the token does not allow publishing to this channel`;
        const cases = [
            [p, `/${base}/pub/open`, true],
            [p, `/${base}/pub/many/x`, true],
            [p, `/${base}/pub/closed`, false],
            [p, `/${base}/pub/many/x/y`, false],
            [p, `/${base}/pub`, false],
            [s, `/${base}/pub/open`, false], // a token without a publish claim
        ];
        for (const [who, chan, allowed] of cases) {
            const r = await publishReply(who, chan, { from: who.label, to: chan });
            if (allowed) {
                check(r.successful === true, () => `${who.label}: publish to ${chan}: ${describe(r)}, expected successful`);
            } else {
                check(r.successful === false && typeof r.error === 'string' && r.error.startsWith('403:'), () => `${who.label}: publish to ${chan}: ${describe(r)}, expected successful=false and an error starting with 403:`);
                check(r.error === refusal(chan), () => `${who.label}: publish to ${chan}: error ${fmt(r.error)}, expected ${fmt(refusal(chan))}`);
            }
            t.note(`${who.label} → ${chan}: ${r.successful ? 'successful' : fmt(r.error)}`);
        }
        // The end marker, natively: what the subscriber got before it is all it will get.
        await nativePublish(`${base}/pub/end`, '{"end":true}', t.server.port);
        await waitUntil(() => s.received[all].some((m) => m.channel === `/${base}/pub/end`), 5000, () => `the end marker did not arrive; received ${fmt(s.received[all].map((m) => m.channel))}`);
        const chans = s.delivered().map((m) => m.channel);
        check(deepEqual(chans, [`/${base}/pub/open`, `/${base}/pub/many/x`, `/${base}/pub/end`]), () => `the subscriber received on the wire ${fmt(chans)}, expected the two allowed publishes and the end marker`);
        check(s.delivered().slice(0, 2).every((m) => m.data.from === 'pub' && m.data.to === m.channel), () => `data ${fmt(s.delivered())}`);
    }, tok);

    test(`${T}: tokens: near the token's end the client is told 401::token expired, handshakes again with a fresh token and gets what is published after`, async (t) => {
        const chan = `/${base}/exp/news`;
        const issued = []; // { exp, token } per handshake the client sent
        const next = () => {
            const exp = unixNow() + (issued.length === 0 ? 4 : 60);
            const token = mintToken({ exp, sub: `refresh-${issued.length + 1}`, channels: [`${base}/exp/*`] });
            issued.push({ exp, token });
            return token;
        };
        const c = await t.client(T, { label: 'expiring', extensions: [['token', tokenExtension(next)]] });
        const handshakes = []; // every handshake reply, as the listener saw it
        const subscribed = []; // { handshake: n, reply } for the subscribe made after handshake n
        const got = [];
        // The CometD client forgets its subscriptions at a handshake: subscribe in the listener,
        // after every successful one.
        c.cometd.addListener('/meta/handshake', (m) => {
            handshakes.push({ t: Date.now(), m });
            if (!m.successful) return;
            const n = handshakes.length;
            c.cometd.subscribe(chan, (msg) => got.push(msg.data), (reply) => subscribed.push({ handshake: n, reply }));
        });
        c.cometd.handshake();
        await waitUntil(() => subscribed.length >= 1, 8000, () => `no subscribe reply after the first handshake (handshakes: ${fmt(handshakes.map((h) => describe(h.m)))})`);
        check(handshakes[0].m.successful === true && subscribed[0].reply.successful === true, () => `first handshake ${describe(handshakes[0].m)}, subscribe ${describe(subscribed[0].reply)}`);
        await nativePublish(`${base}/exp/news`, '{"phase":1}', t.server.port);
        await waitUntil(() => got.some((d) => d.phase === 1), 3000, 'the message published during the first token did not arrive');

        // The 401, at the latest when the first token ends.
        const exp1 = issued[0].exp * 1000;
        const is401 = (x) => x.m.channel === '/meta/connect' && x.m.successful === false;
        const r401 = await waitUntil(() => c.wire.in.find(is401), Math.max(1000, exp1 - Date.now() + 3000), () => `no unsuccessful /meta/connect reply by 3 s after the token's exp (${new Date(exp1).toISOString()})`);
        check(r401.m.error === '401::token expired', () => `the /meta/connect was answered ${fmt(r401.m)}, expected error "401::token expired"`);
        check(r401.m.advice && r401.m.advice.reconnect === 'handshake' && r401.m.advice.interval === 0, () => `advice ${fmt(r401.m.advice)}, expected {reconnect: handshake, interval: 0}`);
        const early = exp1 - r401.t;
        check(early >= -300, () => `the 401 came ${-early} ms after the token's exp: a connection outlived its token`);
        check(early <= 2500, () => `the 401 came ${early} ms before the token's exp: more than 2.5 s early`);
        const before = c.wire.in.filter((x) => x.m.channel === '/meta/connect' && x.m.successful === true && x.t < r401.t);
        check(before.every((x) => x.t <= exp1), () => `a successful /meta/connect reply arrived after the token's exp`);
        t.note(`401 ${early} ms before exp; ${before.length} successful /meta/connect replies before it, the last ${exp1 - before[before.length - 1].t} ms before exp`);

        // The client handshakes again by itself, with the fresh token.
        await waitUntil(() => handshakes.length >= 2, 5000, () => `the client did not handshake again (status ${c.cometd.getStatus()})`);
        check(handshakes[1].m.successful === true, () => `the second handshake: ${describe(handshakes[1].m)}`);
        const sent = handshakesOnWire(c.proxy);
        check(sent.length === 2 && issued.length === 2, () => `the server got ${sent.length} handshakes, the extension minted ${issued.length} tokens, expected 2 each`);
        check(sent[1].ext && sent[1].ext.auth && sent[1].ext.auth.token === issued[1].token, () => `the second handshake carried ${fmt(sent[1].ext)}, not the fresh token`);
        check(handshakes[1].m.clientId !== handshakes[0].m.clientId, 'the second handshake got the same clientId');
        await waitUntil(() => subscribed.some((s) => s.handshake === 2), 5000, 'no subscribe reply after the second handshake');
        const sub2 = subscribed.find((s) => s.handshake === 2).reply;
        check(sub2.successful === true, () => `subscribe after the second handshake: ${describe(sub2)}`);
        await nativePublish(`${base}/exp/news`, '{"phase":2}', t.server.port);
        await waitUntil(() => got.some((d) => d.phase === 2), 3000, () => `the message published after the re-handshake did not arrive (got ${fmt(got)})`);
        // The new session lives on the fresh token, past the first one's end (over WebSocket on
        // the same connection: nothing about it ends with the first token).
        const upsBefore = requestKinds(c.proxy.events).upgrades.length;
        const wait = exp1 + 1000 - Date.now();
        if (wait > 0) await sleep(wait); // the clock is the condition: a moment after the first token's exp
        await nativePublish(`${base}/exp/news`, '{"phase":3}', t.server.port);
        await waitUntil(() => got.some((d) => d.phase === 3), 3000, () => `the message published 1 s after the first token's exp did not arrive (got ${fmt(got)})`);
        check(deepEqual(got, [{ phase: 1 }, { phase: 2 }, { phase: 3 }]), () => `received ${fmt(got)}`);
        check(c.cometd.getStatus() === 'connected', () => `the client is ${c.cometd.getStatus()}`);
        check(handshakesOnWire(c.proxy).length === 2, () => `the client handshook ${handshakesOnWire(c.proxy).length} times`);
        const ups = requestKinds(c.proxy.events).upgrades.length;
        if (T === 'websocket') check(ups === upsBefore, () => `the client opened ${ups - upsBefore} new WebSocket(s) after the first token's exp: the server closed the one it had`);
        t.note(`second handshake ${handshakes[1].t - r401.t} ms after the 401${T === 'websocket' ? `; ${ups} WebSocket upgrade(s) in all` : ''}`);
    }, tok);
}

// ---- raw HTTP protocol tests --------------------------------------------------------------------

const rch = (name) => `/t${RUN}/raw/${name}`;

// Long: started at once, judged at the end.
test('raw http: a session without /meta/connect for maxInterval expires: 402, advice reconnect=handshake', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const hs = await s.handshake();
    const replies = await s.firstConnect();
    const advised = [hs.advice, ...replies.map((m) => m.advice)].find((a) => a && Number.isFinite(a.maxInterval));
    const maxInterval = advised ? advised.maxInterval : target.maxIntervalMs;
    const interval = (hs.advice && hs.advice.interval) || 0;
    const control = await s.exchange([s.connectMessage({ advice: { timeout: 0 } })]);
    check(control.find((m) => m.channel === '/meta/connect').successful === true, () => `a /meta/connect right after: ${fmt(control)}`);
    const wait = maxInterval + interval + 2500;
    t.note(`maxInterval ${maxInterval} ms (${advised ? 'advised by the server' : 'not advised; assumed'}), waiting ${wait} ms`);
    check(wait <= 50_000, () => `maxInterval ${maxInterval} ms is too long for this run (at most 47.5 s): run the server with a shorter one, or pass --max-interval-ms`);
    await sleep(wait);
    const r = await s.exchange([s.connectMessage({ advice: { timeout: 0 } })]);
    const c = r.find((m) => m.channel === '/meta/connect');
    check(c && c.successful === false && errorCode(c) === '402', () => `/meta/connect after ${wait} ms without one: ${fmt(r)}`);
    check(c.advice && c.advice.reconnect === 'handshake', () => `advice ${fmt(c.advice)}, expected reconnect: handshake`);
}, { parallel: true, timeoutMs: 60_000 });

test('raw http: handshake reply: successful, clientId, version, supportedConnectionTypes, advice, the request id', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const r = await s.send([{ id: 'hs1', channel: '/meta/handshake', version: '1.0', minimumVersion: '1.0', supportedConnectionTypes: ['long-polling', 'callback-polling'], advice: { timeout: 60000, interval: 0 } }]);
    check(r.status === 200 && Array.isArray(r.json), () => `${r.status} ${fmt(r.body)}`);
    check(/^application\/json/.test(r.headers['content-type'] || ''), () => `Content-Type ${r.headers['content-type']}`);
    const h = r.json[0];
    check(r.json.length === 1 && h.channel === '/meta/handshake' && h.id === 'hs1', () => `reply ${fmt(r.json)}`);
    check(h.successful === true && typeof h.clientId === 'string' && h.clientId.length >= 22, () => `reply ${fmt(h)}`);
    check(h.version === '1.0' || typeof h.version === 'string', () => `version ${fmt(h.version)}`);
    check(Array.isArray(h.supportedConnectionTypes) && h.supportedConnectionTypes.includes('long-polling'), () => `supportedConnectionTypes ${fmt(h.supportedConnectionTypes)}`);
    check(h.advice && ['retry', 'handshake', 'none'].includes(h.advice.reconnect), () => `advice ${fmt(h.advice)}`);
    const other = await new RawHttpSession(port, target.path).handshake();
    check(other.clientId !== h.clientId, 'two handshakes, one clientId');
    t.note(`reply: ${fmt(h, 300)}`);
});

test('raw http: every reply carries its request id (connect, subscribe, publish, unsubscribe, a batch, disconnect)', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    await s.handshake();
    const c = rch('ids');
    const one = async (msg) => {
        const r = await s.exchange([{ clientId: s.clientId, ...msg }]);
        const rep = r.find((m) => m.channel === msg.channel && m.data === undefined);
        check(rep && rep.id === msg.id && rep.successful === true, () => `${msg.channel} id ${msg.id}: replies ${fmt(r)}`);
        return r;
    };
    await one({ id: 'c1', channel: '/meta/connect', connectionType: 'long-polling', advice: { timeout: 0 } });
    await one({ id: 's1', channel: '/meta/subscribe', subscription: c });
    await one({ id: 'p1', channel: c, data: { x: 1 } });
    await one({ id: 'u1', channel: '/meta/unsubscribe', subscription: c });
    const batch = await s.exchange([
        { id: 'bs', channel: '/meta/subscribe', subscription: c, clientId: s.clientId },
        { id: 'bp', channel: c, data: { x: 2 }, clientId: s.clientId },
        { id: 'bu', channel: '/meta/unsubscribe', subscription: c, clientId: s.clientId },
    ]);
    const ids = batch.filter((m) => m.data === undefined).map((m) => `${m.id}:${m.successful}`);
    check(deepEqual(ids, ['bs:true', 'bp:true', 'bu:true']), () => `batch replies ${fmt(batch)}`);
    await one({ id: 'd1', channel: '/meta/disconnect' });
});

test('raw http: the first /meta/connect with advice.timeout 0 is answered at once', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    await s.handshake();
    const r = await s.send([s.connectMessage({ advice: { timeout: 0 } })], { timeoutMs: 5000 });
    check(r.status === 200 && Array.isArray(r.json), () => `${r.status} ${fmt(r.body)}`);
    const c = r.json.find((m) => m.channel === '/meta/connect');
    check(c && c.successful === true, () => `reply ${fmt(r.json)}`);
    check(r.ms < 1000, () => `answered after ${r.ms} ms`);
    t.note(`first connect reply after ${r.ms} ms: ${fmt(r.json, 300)}`);
});

test('raw http: /meta/connect is held, then answered with the published message', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const p = new RawHttpSession(port, target.path);
    await s.handshake();
    await p.handshake();
    const c = rch('held');
    await s.subscribe(c);
    await s.firstConnect();
    const msg = s.connectMessage();
    const held = s.pending([msg], { timeoutMs: 10_000 });
    await sleep(800);
    check(!held.state.done, () => `/meta/connect answered after ${held.state.result && held.state.result.ms} ms with nothing to send: ${fmt(held.state.result && held.state.result.body)}`);
    await p.publish(c, { hello: 'held' });
    const r = await withTimeout(held.promise, 2000, 'answer to the held /meta/connect after a publish');
    check(r.status === 200 && Array.isArray(r.json), () => `${r.status} ${fmt(r.body)}`);
    const data = r.json.filter((m) => m.channel === c);
    const rep = r.json.find((m) => m.channel === '/meta/connect');
    check(data.length === 1 && deepEqual(data[0].data, { hello: 'held' }), () => `held connect answered with ${fmt(r.json)}`);
    check(rep && rep.id === msg.id && rep.successful === true, () => `connect reply ${fmt(rep)}`);
    t.note(`held connect answered ${r.ms} ms after it was sent: ${fmt(r.json, 400)}`);
});

// PC-54: an idle /meta/connect is answered at the timeout. CometD holds it for the timeout the
// client advises in the request if any (the JavaScript client advises 0 on its first connect and
// after a reconnect), else for its own; either is accepted, the server's only if it advertised it
// (advice.timeout) and it is at most 40 s. Started at once, judged at the end.
test('raw http: an idle /meta/connect is answered successful at the timeout (the advised 2000 ms, or the server\'s own)', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const hs = await s.handshake();
    const replies = await s.firstConnect();
    const advised = [hs.advice, ...replies.map((m) => m.advice)].find((a) => a && Number.isFinite(a.timeout));
    const serverTimeout = advised ? advised.timeout : null;
    check(serverTimeout === null || serverTimeout <= 40_000, () => `the server advises timeout ${serverTimeout} ms: too long for this run (at most 40 s)`);
    const limit = Math.max(2000, serverTimeout || 0) + 2500;
    const sent = s.connectMessage({ advice: { timeout: 2000 } });
    const r = await s.send([sent], { timeoutMs: limit });
    const c = r.json && r.json.find((m) => m.channel === '/meta/connect');
    check(r.status === 200 && c && c.successful === true && c.id === sent.id, () => `${r.status} ${fmt(r.body)}`);
    check(!r.json.some((m) => m.data !== undefined), () => `an idle connect answered with messages: ${fmt(r.json)}`);
    const atClient = r.ms >= 1500 && r.ms <= 4500;
    const atServer = serverTimeout !== null && r.ms >= serverTimeout - 500 && r.ms <= serverTimeout + 2500;
    check(atClient || atServer, () => `answered after ${r.ms} ms: neither the advised 2000 ms nor the server's ${serverTimeout === null ? '(not advertised)' : `${serverTimeout} ms`}`);
    t.note(`answered after ${r.ms} ms (${atClient ? "the client's advice.timeout" : "the server's timeout"}): ${fmt(r.json)}`);
}, { parallel: true, timeoutMs: 50_000 });

test('raw http: a second /meta/connect for the same client releases the first; only the second is held', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const p = new RawHttpSession(port, target.path);
    await s.handshake();
    await p.handshake();
    const c = rch('dup');
    await s.subscribe(c);
    await s.firstConnect();
    const first = s.pending([s.connectMessage()], { timeoutMs: 15_000 });
    await sleep(300);
    check(!first.state.done, 'the first /meta/connect was not held');
    const second = s.pending([s.connectMessage()], { timeoutMs: 15_000 });
    const r1 = await withTimeout(first.promise, 2000, 'answer to the first /meta/connect after a second one arrived');
    await sleep(700);
    check(!second.state.done, () => `the second /meta/connect was answered too (${second.state.result && second.state.result.status} ${fmt(second.state.result && second.state.result.body)}): none is held now`);
    await p.publish(c, { to: 'second' });
    const r2 = await withTimeout(second.promise, 2000, 'answer to the second /meta/connect after a publish');
    check(r2.status === 200 && r2.json.some((m) => m.channel === c && deepEqual(m.data, { to: 'second' })), () => `second connect answered ${r2.status} ${fmt(r2.body)}`);
    check(!(r1.json || []).some((m) => m.channel === c), () => `the released connect carried the message too: ${fmt(r1.body)}`);
    t.note(`released connect: HTTP ${r1.status} ${fmt(r1.body, 200)}`);
});

test('raw http: unknown clientId: 402 with advice reconnect=handshake on /meta/connect; 402 on publish and subscribe', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    s.clientId = 'unknown0' + crypto.randomBytes(16).toString('hex');
    const sent = s.connectMessage({ advice: { timeout: 0 } });
    const r = await s.exchange([sent], { timeoutMs: 5000 });
    const c = r.find((m) => m.channel === '/meta/connect');
    check(c && c.successful === false && errorCode(c) === '402', () => `connect: ${fmt(r)}`);
    check(c.advice && c.advice.reconnect === 'handshake', () => `connect advice ${fmt(c.advice)}`);
    check(c.id === sent.id, () => `reply id ${fmt(c.id)}, request id ${sent.id}`);
    const pr = await s.exchange([{ id: 'pu', channel: rch('unknown'), clientId: s.clientId, data: 1 }]);
    check(pr.some((m) => m.id === 'pu' && m.successful === false && errorCode(m) === '402'), () => `publish: ${fmt(pr)}`);
    const sr = await s.exchange([{ id: 'su', channel: '/meta/subscribe', clientId: s.clientId, subscription: rch('unknown') }]);
    check(sr.some((m) => m.id === 'su' && m.successful === false && errorCode(m) === '402'), () => `subscribe: ${fmt(sr)}`);
    t.note(`connect reply ${fmt(c)}`);
});

test('raw http: edgecomet: the unknown-client error is "402::Unknown client"', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    s.clientId = 'unknown1' + crypto.randomBytes(16).toString('hex');
    const r = await s.exchange([s.connectMessage({ advice: { timeout: 0 } }), { id: 'pe', channel: rch('unknown'), clientId: s.clientId, data: 1 }], { timeoutMs: 5000 });
    // Issue 5 writes it `402::Unknown client`; the Bayeux spec's own example puts the clientId in
    // the args part (`402:xj3sjdsjdsjad:Unknown Client ID`): the code and the message are pinned,
    // the args are free.
    for (const m of r) check(/^402:[^:]*:Unknown client$/.test(m.error || ''), () => `reply ${fmt(m)}: expected error "402::Unknown client" (args between the colons allowed)`);
}, { kind: 'edgecomet-only' });

test('raw http: bad JSON and malformed messages: 400 or unsuccessful replies, never a hang; the server keeps working', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    await s.handshake();
    await s.firstConnect();
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    const cases = [
        ['truncated JSON', '[{"channel":"/meta/handshake","version":"1.0"'],
        ['not JSON', 'not json at all'],
        ['empty body', ''],
        ['empty array', '[]', 'empty-ok'],
        ['array of non-objects', '[1,"x",null]'],
        ['channel is a number', '[{"id":"b1","channel":5}]'],
        ['trailing garbage', '[{"id":"b2","channel":"/meta/connect"}]xyz'],
        ['message without channel', JSON.stringify([{ id: 'b3', clientId: s.clientId, data: {} }])],
        ['subscribe without subscription', JSON.stringify([{ id: 'b4', channel: '/meta/subscribe', clientId: s.clientId }])],
        ['subscription is an object', JSON.stringify([{ id: 'b5', channel: '/meta/subscribe', clientId: s.clientId, subscription: { a: 1 } }])],
        ['clientId is a number', '[{"id":"b6","channel":"/meta/connect","clientId":12345,"connectionType":"long-polling"}]'],
        ['data nested 10,000 deep', `[{"id":"b7","channel":"${rch('deep')}","clientId":"${s.clientId}","data":${deep}}]`, 'any'],
    ];
    const outcomes = [];
    for (const [name, body, accept] of cases) {
        let r;
        try {
            r = await s.send(body, { timeoutMs: 5000 });
        } catch (e) {
            throw new Failure(`${name}: ${e.message}`);
        }
        const replies = Array.isArray(r.json) ? r.json : null;
        const unsuccessful = replies && replies.length > 0 && replies.every((m) => m && m.successful === false);
        // 'any': a 200 with any reply array is fine too; 'empty-ok': so is 200 [] (no message, no
        // reply; the reference answers 400).
        const ok =
            (r.status >= 400 && r.status < 500) ||
            (r.status === 200 && (accept === 'any' ? replies !== null : unsuccessful || (accept === 'empty-ok' && replies !== null && replies.length === 0)));
        outcomes.push(`${name}: ${r.status} ${fmt(r.body, 120)}`);
        check(ok, () => `${name}: answered ${r.status} ${fmt(r.body, 300)}; expected a 4xx or 200 with only unsuccessful replies`);
    }
    const fresh = new RawHttpSession(port, target.path);
    await fresh.handshake();
    await fresh.firstConnect();
    const still = await s.exchange([s.connectMessage({ advice: { timeout: 0 } })]);
    check(still.some((m) => m.channel === '/meta/connect' && m.successful === true), () => `the session that sent bad requests: ${fmt(still)}`);
    for (const o of outcomes) t.note(o);
});

test('raw http: a batch of 1000 publishes: each reply carries its id, in order; the subscriber gets all, in order', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    const p = new RawHttpSession(port, target.path);
    await s.handshake();
    await p.handshake();
    const c = rch('batch1000');
    await s.subscribe(c);
    await s.firstConnect();
    const msgs = Array.from({ length: 1000 }, (_, i) => ({ id: `q${i}`, channel: c, clientId: p.clientId, data: { seq: i } }));
    const r = await p.exchange(msgs, { timeoutMs: 10_000 });
    const ids = r.filter((m) => m.channel === c && m.data === undefined).map((m) => m.id);
    check(deepEqual(ids, msgs.map((m) => m.id)), () => `publish replies: ${diffSeq(ids, msgs.map((m) => m.id))}`);
    check(r.filter((m) => m.data === undefined).every((m) => m.successful === true), 'an unsuccessful publish reply');
    const got = [];
    const end = Date.now() + 10_000;
    while (got.length < 1000 && Date.now() < end) {
        const rr = await s.exchange([s.connectMessage({ advice: { timeout: 200 } })]);
        for (const m of rr) if (m.channel === c) got.push(m.data.seq);
    }
    const d = diffSeq(got, msgs.map((m) => m.data.seq));
    check(!d, d);
});

test('raw http: a very large batch (50,000 publishes, ~7 MB): refused with a 4xx or processed, but answered; the server keeps working', async (t) => {
    const port = (await t.proxy('raw', null)).port;
    const p = new RawHttpSession(port, target.path);
    await p.handshake();
    const c = rch('huge');
    const msgs = Array.from({ length: 50_000 }, (_, i) => ({ id: `z${i}`, channel: c, clientId: p.clientId, data: { seq: i, pad: 'xxxxxxxxxxxxxxxxxxxxxxxx' } }));
    const body = JSON.stringify(msgs);
    const r = await p.send(body, { timeoutMs: 20_000 });
    if (r.status === 200) {
        check(Array.isArray(r.json), () => `200 but not a JSON array: ${fmt(r.body)}`);
        const n = r.json.filter((m) => m.channel === c && m.successful === true).length;
        check(n === 50_000, () => `200 with ${n} successful publish replies of 50,000`);
    } else {
        check(r.status >= 400 && r.status < 500, () => `answered ${r.status} ${fmt(r.body)}`);
    }
    t.note(`${body.length} bytes: ${r.status} after ${r.ms} ms`);
    const fresh = new RawHttpSession(port, target.path);
    const t0 = Date.now();
    await fresh.handshake();
    check(Date.now() - t0 < 2000, `a handshake right after took ${Date.now() - t0} ms`);
}, { timeoutMs: 40_000 });

test('raw http: subscriptions to /meta/**, /meta/connect, /* and /** are refused', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    await s.handshake();
    for (const sub of ['/meta/**', '/meta/connect', '/*', '/**']) {
        const id = nextId('s');
        const r = await s.exchange([{ id, channel: '/meta/subscribe', clientId: s.clientId, subscription: sub }]);
        const rep = r.find((m) => m.id === id);
        check(rep && rep.successful === false && typeof rep.error === 'string', () => `subscribe ${sub}: ${fmt(r)}`);
        t.note(`${sub}: ${fmt(rep.error)}`);
    }
});

test('raw http: a wildcard not in the last segment (/a/*/b, /a/**/b) is refused', async (t) => {
    const port = (await t.proxy('raw')).port;
    const s = new RawHttpSession(port, target.path);
    await s.handshake();
    for (const sub of [`${rch('w')}/*/b`, `${rch('w')}/**/b`]) {
        const id = nextId('s');
        const r = await s.exchange([{ id, channel: '/meta/subscribe', clientId: s.clientId, subscription: sub }]);
        const rep = r.find((m) => m.id === id);
        check(rep && rep.successful === false, () => `subscribe ${sub}: ${fmt(r)}`);
    }
}, { kind: 'reference-gap', gap: 'cometd-nodejs-server 1.2.1 accepts /a/*/b as a plain channel name; the Java server and issue 5 refuse it' });

test('raw http: a handshake with no common connection type is unsuccessful', async (t) => {
    const port = (await t.proxy('raw')).port;
    const r = await post(port, target.path, JSON.stringify([{ id: 'hx', channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['carrier-pigeon'] }]));
    check(r.status === 200 && Array.isArray(r.json) && r.json[0].successful === false && r.json[0].id === 'hx', () => `${r.status} ${fmt(r.body)}`);
    t.note(fmt(r.json));
}, { kind: 'reference-gap', gap: 'cometd-nodejs-server 1.2.1 does not check supportedConnectionTypes; the Bayeux spec and the Java server answer successful:false' });

// ---- raw WebSocket protocol tests ---------------------------------------------------------------

if (opts.transports.includes('websocket')) {
    test('raw websocket: handshake, connect, subscribe, publish, unsubscribe, disconnect: every reply carries its id', async (t) => {
        const port = (await t.proxy('raw-ws')).port;
        const ws = await RawWs.open(`http://127.0.0.1:${port}${target.path}`);
        t.cleanup(() => ws.close());
        const c = rch('wsids');
        ws.send([{ id: 'wh', channel: '/meta/handshake', version: '1.0', minimumVersion: '1.0', supportedConnectionTypes: ['websocket'] }]);
        const h = await ws.reply('wh');
        check(h.successful === true && typeof h.clientId === 'string', () => `handshake ${fmt(h)}`);
        check(Array.isArray(h.supportedConnectionTypes) && h.supportedConnectionTypes.includes('websocket'), () => `supportedConnectionTypes ${fmt(h.supportedConnectionTypes)}`);
        const cid = h.clientId;
        ws.send([{ id: 'wc1', channel: '/meta/connect', connectionType: 'websocket', clientId: cid, advice: { timeout: 0 } }]);
        check((await ws.reply('wc1')).successful === true, 'first connect');
        ws.send([{ id: 'ws1', channel: '/meta/subscribe', clientId: cid, subscription: c }]);
        check((await ws.reply('ws1')).successful === true, 'subscribe');
        ws.send([{ id: 'wc2', channel: '/meta/connect', connectionType: 'websocket', clientId: cid }]);
        await sleep(200);
        ws.send([{ id: 'wp1', channel: c, clientId: cid, data: { over: 'ws' } }]);
        check((await ws.reply('wp1')).successful === true, 'publish reply');
        const m = await ws.waitFor((x) => x.channel === c && x.data !== undefined, 3000, 'the published message');
        check(deepEqual(m.data, { over: 'ws' }), () => `message ${fmt(m)}`);
        ws.send([{ id: 'wu1', channel: '/meta/unsubscribe', clientId: cid, subscription: c }]);
        check((await ws.reply('wu1')).successful === true, 'unsubscribe');
        ws.send([{ id: 'wd1', channel: '/meta/disconnect', clientId: cid }]);
        check((await ws.reply('wd1')).successful === true, 'disconnect');
        const released = await ws.reply('wc2', 2000).catch(() => null);
        t.note(`held connect wc2 ${released ? `answered: ${fmt(released)}` : 'not answered after the disconnect (the connection may simply close)'}`);
        t.note(`frames received: ${ws.frames}; messages: ${fmt(ws.received.map((r) => r.m), 800)}`);
    });

    test('raw websocket: unknown clientId: 402 with advice reconnect=handshake on /meta/connect; 402 on publish', async (t) => {
        const port = (await t.proxy('raw-ws')).port;
        const ws = await RawWs.open(`http://127.0.0.1:${port}${target.path}`);
        t.cleanup(() => ws.close());
        const bogus = 'unknown2' + crypto.randomBytes(16).toString('hex');
        ws.send([{ id: 'uc', channel: '/meta/connect', connectionType: 'websocket', clientId: bogus, advice: { timeout: 0 } }]);
        const c = await ws.reply('uc');
        check(c.successful === false && errorCode(c) === '402' && c.advice && c.advice.reconnect === 'handshake', () => `connect ${fmt(c)}`);
        ws.send([{ id: 'up', channel: rch('x'), clientId: bogus, data: 1 }]);
        const p = await ws.reply('up');
        check(p.successful === false && errorCode(p) === '402', () => `publish ${fmt(p)}`);
    });

    test('raw websocket: bad JSON: the connection is closed or the reply is unsuccessful, never a hang; a new connection works', async (t) => {
        const port = (await t.proxy('raw-ws')).port;
        const url = `http://127.0.0.1:${port}${target.path}`;
        for (const [name, text] of [['not JSON', 'not json'], ['truncated', '[{"channel":"/meta/handshake"'], ['empty array', '[]'], ['channel is a number', '[{"id":"x1","channel":5}]']]) {
            const ws = await RawWs.open(url);
            t.cleanup(() => ws.close());
            ws.send(text);
            const outcome = await Promise.race([
                ws.closedPromise.then((c) => `closed ${c.code}`),
                ws.waitFor((m) => m && m.successful === false, 3000, 'an unsuccessful reply').then((m) => `reply ${fmt(m)}`).catch(() => null),
                sleep(3100).then(() => null),
            ]);
            check(outcome, () => `${name}: no close and no unsuccessful reply within 3 s (frames: ${fmt(ws.received)})`);
            t.note(`${name}: ${outcome}`);
            ws.close();
        }
        const ws = await RawWs.open(url);
        t.cleanup(() => ws.close());
        ws.send([{ id: 'ok1', channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['websocket'] }]);
        check((await ws.reply('ok1')).successful === true, 'a handshake on a new connection failed');
    });

    test('raw websocket: a batch of 1000 publishes in one frame: replies carry each id, in order; delivered in order', async (t) => {
        const port = (await t.proxy('raw-ws')).port;
        const ws = await RawWs.open(`http://127.0.0.1:${port}${target.path}`);
        t.cleanup(() => ws.close());
        ws.send([{ id: 'bh', channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['websocket'] }]);
        const cid = (await ws.reply('bh')).clientId;
        const c = rch('wsbatch');
        ws.send([{ id: 'bc', channel: '/meta/connect', connectionType: 'websocket', clientId: cid, advice: { timeout: 0 } }]);
        await ws.reply('bc');
        ws.send([{ id: 'bs', channel: '/meta/subscribe', clientId: cid, subscription: c }]);
        check((await ws.reply('bs')).successful === true, 'subscribe');
        ws.send([{ id: 'bc2', channel: '/meta/connect', connectionType: 'websocket', clientId: cid }]);
        const msgs = Array.from({ length: 1000 }, (_, i) => ({ id: `w${i}`, channel: c, clientId: cid, data: { seq: i } }));
        ws.send(msgs);
        await ws.reply('w999', 10_000);
        await waitUntil(() => ws.received.filter((r) => r.m.channel === c && r.m.data !== undefined).length >= 1000, 10_000, () => `delivered ${ws.received.filter((r) => r.m.channel === c && r.m.data !== undefined).length} of 1000`);
        const ids = ws.received.filter((r) => r.m.channel === c && r.m.data === undefined).map((r) => r.m.id);
        check(deepEqual(ids, msgs.map((m) => m.id)), () => `publish replies: ${diffSeq(ids, msgs.map((m) => m.id))}`);
        const seqs = ws.received.filter((r) => r.m.channel === c && r.m.data !== undefined).map((r) => r.m.data.seq);
        const d = diffSeq(seqs, msgs.map((m) => m.data.seq));
        check(!d, d);
    });
}

// ---- running --------------------------------------------------------------------------------------

async function runOne(tc) {
    const t = new TestContext(tc.name, tc.tokens ? tokenTarget : target);
    const started = Date.now();
    let error = null;
    try {
        await withTimeout(tc.fn(t), tc.timeoutMs, `end of the test (time limit)`);
        t.checkTransports();
    } catch (e) {
        error = e;
    }
    const ms = Date.now() - started;
    await t.runCleanups();
    t.record();
    return { t, error, ms };
}

function report(tc, { t, error, ms }) {
    if (error) {
        // A Failure is an assertion; any other error is shown by its message (with --verbose, its
        // stack too).
        const msg = error instanceof Failure || !opts.verbose ? (error && error.message) || String(error) : (error && error.stack) || String(error);
        console.log(`not ok - ${tc.name}: ${msg.split('\n').join('\n#   ')}`);
        for (const n of t.notes) console.log(`#   ${n}`);
        const mine = t.clients.length ? clientLog.filter((l) => l.seq > t.logFrom).slice(-6) : [];
        for (const l of mine) console.log(`#   client ${l.line.replace(/\n/g, ' ')}`);
        if (t.server.log) {
            const out = t.server.log().slice(t.serverLogFrom).trim();
            if (out) console.log(`#   ${t.server.name} output: ${out.slice(-600).replace(/\n/g, '\n#   ')}`);
        }
        return false;
    }
    console.log(`ok - ${tc.name} (${ms} ms)`);
    if (opts.verbose) for (const n of t.notes) console.log(`#   ${n}`);
    return true;
}

async function main() {
    const deadline = Date.now() + RUN_DEADLINE_MS;
    const counts = { passed: 0, failed: 0, skipped: 0, edgecometOnlySkipped: 0, gapSkipped: 0, tokenSkipped: 0, edgecometOnlyRun: 0, edgecometOnlyPassed: 0, filtered: 0, restarts: 0 };
    try {
        await startTarget();
    } catch (e) {
        console.log(`not ok - start the server: ${e.message}`);
        console.log('# 0 tests run');
        return 1;
    }
    console.log(`# target: ${target.describe}`);
    console.log(`# client: cometd 9.0.0 + cometd-nodejs-client 2.0.0; transports: ${opts.transports.join(', ')}; run id ${RUN}`);

    const skipReason = (tc) => {
        if (opts.only && !opts.only.test(tc.name)) return ['filtered', 'not selected by --only'];
        if (tc.kind === 'edgecomet-only' && !IS_EDGECOMET) return ['edgecomet-only', 'edgecomet-only'];
        if (tc.kind === 'reference-gap' && !IS_EDGECOMET) return ['gap', `reference gap: ${tc.gap}`];
        if (tc.tokens && opts.mode !== 'edgecomet') return ['tokens', 'edgecomet-only, needs a second server started with --token-secret, which only --edgecomet-bin starts'];
        return null;
    };
    const runnable = tests.filter((tc) => !skipReason(tc));
    if (runnable.some((tc) => tc.tokens)) {
        try {
            await startEdgecomet(tokenTarget);
            console.log(`# token server: ${tokenTarget.describe}`);
        } catch (e) {
            tokenTarget.startError = e.message;
            console.log(`# the token server did not start: ${e.message}`);
        }
    }
    let lastFailed = false;
    let lastServer = target;
    const parallel = new Map();
    for (const tc of runnable.filter((x) => x.parallel)) parallel.set(tc, runOne(tc));

    const tally = (tc, ok) => {
        if (ok) counts.passed++;
        else counts.failed++;
        if (tc.kind === 'edgecomet-only') {
            counts.edgecometOnlyRun++;
            if (ok) counts.edgecometOnlyPassed++;
        }
    };
    for (const tc of tests) {
        const skip = skipReason(tc);
        if (skip) {
            console.log(`skip - ${tc.name} (${skip[1]})`);
            counts.skipped++;
            if (skip[0] === 'edgecomet-only') counts.edgecometOnlySkipped++;
            if (skip[0] === 'gap') counts.gapSkipped++;
            if (skip[0] === 'tokens') counts.tokenSkipped++;
            if (skip[0] === 'filtered') counts.filtered++;
            continue;
        }
        if (tc.parallel) continue;
        // A crash fails the test it happened in (and the parallel ones); the others still get a
        // server, so one crash does not hide every other result. After a failed test, the server
        // it used must still answer.
        let restartFailed = false;
        for (const srv of [target, tokenTarget]) {
            if (!(srv.proc && (serverDied(srv) || (lastFailed && lastServer === srv && !(await serverAnswers(srv)))))) continue;
            const how = srv.proc.exitCode !== null ? `status ${srv.proc.exitCode}` : srv.proc.signalCode;
            counts.restarts++;
            console.log(`# the ${srv.name} process died (${how}); restarting it for the remaining tests`);
            try {
                await startEdgecomet(srv);
            } catch (e) {
                console.log(`not ok - restart the ${srv.name}: ${e.message}`);
                counts.failed++;
                if (srv === target) restartFailed = true;
                srv.startError = e.message;
                srv.proc = null;
            }
        }
        if (restartFailed) break;
        if (tc.tokens && tokenTarget.startError) {
            console.log(`not ok - ${tc.name}: not run: the token server did not start: ${tokenTarget.startError}`);
            counts.failed++;
            continue;
        }
        if (Date.now() > deadline) {
            console.log(`not ok - ${tc.name}: not run: the run passed its ${RUN_DEADLINE_MS / 1000} s deadline`);
            counts.failed++;
            continue;
        }
        const ok = report(tc, await runOne(tc));
        tally(tc, ok);
        lastFailed = !ok;
        lastServer = tc.tokens ? tokenTarget : target;
    }
    for (const [tc, p] of parallel) {
        const left = Math.max(1000, deadline - Date.now());
        const r = await Promise.race([p, sleep(left).then(() => null)]);
        if (!r) {
            console.log(`not ok - ${tc.name}: not finished by the run deadline`);
            counts.failed++;
            continue;
        }
        tally(tc, report(tc, r));
    }
    const total = counts.passed + counts.failed + counts.skipped;
    let summary = `# ${total} tests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`;
    const parts = [];
    if (counts.edgecometOnlySkipped) parts.push(`${counts.edgecometOnlySkipped} edgecomet-only, not run against the reference server and not counted as passed`);
    if (counts.gapSkipped) parts.push(`${counts.gapSkipped} the reference server cannot do (run against edgecomet)`);
    if (counts.tokenSkipped) parts.push(`${counts.tokenSkipped} edgecomet-only needing the token server, which only --edgecomet-bin starts`);
    if (counts.filtered) parts.push(`${counts.filtered} not selected by --only`);
    if (parts.length) summary += ` (${parts.join('; ')})`;
    console.log(summary);
    if (IS_EDGECOMET) console.log(`# edgecomet-only tests run: ${counts.edgecometOnlyRun} (${counts.edgecometOnlyPassed} passed)`);
    if (counts.restarts) console.log(`# a server died and was restarted ${counts.restarts} time(s): see "process died" above`);
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
    await Promise.race([closeServers(), sleep(5000)]);
}
process.exit(exitCode);
