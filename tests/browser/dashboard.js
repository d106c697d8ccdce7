'use strict';
// The dashboard in a real browser under load (docs/api.md#dashboard), run by
// scripts/browser-tests.sh (pass "dashboard") or alone: `node tests/browser/dashboard.js
// [--screenshot FILE]`.
//
// edgecomet (EDGECOMET_BIN) on a free port with 2 workers; two `flood` runs against it
// (FLOOD_BIN, target/release/flood): WebSocket subscribers with a publish load on 10 channels,
// and SSE subscribers, for a bounded time. Headless chromium (puppeteer-core) opens /dashboard;
// once every subscriber is connected and the charts have some history, the runner checks:
//   - the page loaded nothing but edgecomet's own /dashboard files and stream (no other host,
//     no CDN), with no console error (a CSP violation would be one);
//   - the figures it shows (read from the DOM: each figure's data-v) match /stats fetched by the
//     page right after the event it shows: the connection gauges by transport, the totals within
//     one second of their rate (the /stats read is at most a second later), memory within 10 %;
//   - its per-second rates (publishes, deliveries, bytes out) match rates computed from two /stats
//     readings over 5 seconds within 35 % (the publish load is steady; a second's count varies);
//   - a screenshot of the page is written (--screenshot FILE, else a temporary file);
//   - the README's browser snippet (EventSource, WebSocket, fetch publish) works in the page;
//   - under --processes 2 (a redis-server of its own; skipped, saying so, without one): a row per
//     process with the pids, open connections and memory of /stats's "processes".
// Output: "ok - NAME" / "not ok - NAME: DETAILS"; exit status 1 if any failed.

const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const fs = require('fs');
const { spawn } = require('child_process');
const puppeteer = require('puppeteer-core');

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.resolve(process.env.EDGECOMET_BIN || path.join(ROOT, 'target', 'release', 'edgecomet'));
const FLOOD = path.resolve(process.env.FLOOD_BIN || path.join(ROOT, 'target', 'release', 'flood'));
const CHROMIUM =
    process.env.CHROMIUM_BIN ||
    ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => fs.existsSync(p));
const PIDFILE = process.env.BROWSER_TESTS_PIDFILE || null;
const WS_CONNS = 2000;
const SSE_CONNS = 1000;
const HOLD_S = 60; // flood's --duration: long enough for the checks below and a screenshot
const RUN_DEADLINE_MS = 100_000;
// Seconds between "all connected" and the checks: history for the charts. docs/dashboard.png was
// taken with DASHBOARD_SETTLE_S=40.
const SETTLE_S = Math.min(40, Number(process.env.DASHBOARD_SETTLE_S || 12));
const argShot = process.argv.indexOf('--screenshot');
const SHOT = argShot > 0 ? path.resolve(process.argv[argShot + 1]) : path.join(os.tmpdir(), `edgecomet-dashboard-${process.pid}.png`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const pids = new Map();
function notePid(key, pid) {
    if (pid === null) pids.delete(key);
    else pids.set(key, pid);
    if (PIDFILE) fs.writeFileSync(PIDFILE, [...pids.values()].join('\n') + '\n');
}

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
        s.on('error', reject);
    });
}

function getJson(port, p) {
    return new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: p }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => {
                try {
                    resolve(JSON.parse(b));
                } catch (e) {
                    reject(new Error(`${p}: ${e.message}: ${b.slice(0, 200)}`));
                }
            });
        }).on('error', reject);
    });
}

// Starts a process; its output is kept (the tail goes into failures).
function start(key, bin, args) {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    notePid(key, -proc.pid);
    proc.out = '';
    proc.stdout.on('data', (d) => (proc.out += d));
    proc.stderr.on('data', (d) => (proc.out += d));
    proc.on('exit', () => notePid(key, null));
    return proc;
}
function stop(proc) {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
        proc.once('exit', resolve);
        try {
            process.kill(-proc.pid, 'SIGKILL');
        } catch {
            resolve();
        }
    });
}

let failed = 0;
function check(name, ok, details) {
    if (ok) console.log(`ok - ${name}`);
    else {
        failed++;
        console.log(`not ok - ${name}: ${details}`);
    }
}

async function main() {
    const port = await freePort();
    const server = start('edgecomet', BIN, ['--listen', `127.0.0.1:${port}`, '--workers', '2']);
    for (let i = 0; ; i++) {
        if (/listening on/.test(server.out)) break;
        if (i > 100 || server.exitCode !== null) throw new Error(`edgecomet did not start: ${server.out}`);
        await sleep(100);
    }
    const base = `http://127.0.0.1:${port}`;
    console.log(`# edgecomet ${BIN} on 127.0.0.1:${port}; flood ${FLOOD}: ${WS_CONNS} ws + ${SSE_CONNS} sse subscribers, ${HOLD_S} s`);

    const common = ['--rate', '2000', '--duration', String(HOLD_S), '--channels', '10', '--drain', '1'];
    const floods = [
        start('flood-ws', FLOOD, ['--url', `ws://127.0.0.1:${port}/sub/dash`, '--conns', String(WS_CONNS), '--publish-rate', '200', ...common]),
        start('flood-sse', FLOOD, ['--url', `http://127.0.0.1:${port}/sub/dashsse`, '--transport', 'sse', '--conns', String(SSE_CONNS), ...common]),
    ];

    const browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--no-default-browser-check'],
        timeout: 20_000,
    });
    notePid('chromium', -browser.process().pid);
    try {
        const page = await browser.newPage();
        await page.setViewport({ width: 1360, height: 720 });
        const requests = [];
        const problems = [];
        page.on('request', (r) => requests.push(r.url()));
        page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
        page.on('pageerror', (e) => problems.push(String(e)));
        await page.goto(`${base}/dashboard`, { waitUntil: 'load' });

        // Every subscriber connected (gauges from /stats), then some history for the charts.
        const t0 = Date.now();
        for (;;) {
            const s = await getJson(port, '/stats');
            if (s.total.conns_ws_sub >= WS_CONNS && s.total.conns_sse >= SSE_CONNS) break;
            if (Date.now() - t0 > 30_000) throw new Error(`subscribers not all connected after 30 s: ws ${s.total.conns_ws_sub}, sse ${s.total.conns_sse}; flood: ${floods.map((f) => f.out.slice(-600)).join('\n')}`);
            await sleep(250);
        }
        console.log(`# all ${WS_CONNS + SSE_CONNS} subscribers connected after ${Date.now() - t0} ms`);
        await sleep(SETTLE_S * 1000);

        // The page's figures and /stats, read in the page right after an event arrives.
        const pair = await page.evaluate(async () => {
            const last = document.getElementById('last');
            const before = last.textContent;
            await new Promise((resolve) => {
                const o = new MutationObserver(() => { o.disconnect(); resolve(); });
                o.observe(last, { childList: true, characterData: true, subtree: true });
                if (last.textContent !== before) resolve();
            });
            const dom = {};
            for (const el of document.querySelectorAll('[data-k]')) dom[el.dataset.k] = el.dataset.v === '' ? null : Number(el.dataset.v);
            const stats = await (await fetch('/stats')).json();
            return { dom, stats, status: document.getElementById('status').textContent };
        });
        const { dom, stats } = pair;
        const t = stats.total;
        check('the page is live', pair.status === 'live', `status "${pair.status}"`);

        const gauges = {
            'conns.ws': t.conns_ws_sub,
            'conns.sse': t.conns_sse,
            'conns.stream': t.conns_stream,
            'conns.poll': t.conns_poll,
            'conns.bayeux': t.conns_bayeux_poll + t.conns_bayeux_ws,
            'conns.dashboard': t.conns_dashboard,
        };
        const bad = Object.entries(gauges).filter(([k, v]) => Math.abs(dom[k] - v) > Math.max(2, v * 0.005));
        check('connections by transport match /stats', bad.length === 0,
            bad.map(([k, v]) => `${k}: page ${dom[k]}, /stats ${v}`).join('; '));
        check('the page counts the dashboard itself', dom['conns.dashboard'] >= 1, `conns.dashboard ${dom['conns.dashboard']}`);

        // Totals: /stats was read after the page's event, at most about a second later.
        const drift = [];
        for (const [k, rk] of [['messages_in', 'rate.publishes'], ['messages_out', 'rate.deliveries'], ['bytes_out', 'rate.bytes_out'], ['accepted', null], ['drops', 'rate.drops'], ['slow_consumers', 'rate.slow_consumers']]) {
            const d = t[k] - dom['total.' + k];
            const allowed = (rk ? (dom[rk] || 0) * 1.5 : 0) + 64 * 1024 * (k === 'bytes_out') + 2;
            if (d < 0 || d > allowed) drift.push(`${k}: page ${dom['total.' + k]}, /stats ${t[k]} (allowed ${Math.round(allowed)})`);
        }
        check('totals match /stats within a second', drift.length === 0, drift.join('; '));
        check('publishes and deliveries are flowing', dom['total.messages_in'] > 0 && dom['rate.deliveries'] > 0,
            `published ${dom['total.messages_in']}, deliveries/s ${dom['rate.deliveries']}`);
        const pss = stats.hub.memory_pss_bytes;
        check('memory matches /stats', Math.abs(dom['mem.pss'] - pss) <= pss * 0.1 && dom['mem.rss'] > 0 && dom['mem.pss_per_conn'] > 0,
            `page PSS ${dom['mem.pss']}, /stats ${pss}; RSS ${dom['mem.rss']}; per connection ${dom['mem.pss_per_conn']}`);
        console.log(`# page: ${dom['conns.total']} connections, ${dom['rate.publishes']} publishes/s, ${dom['rate.deliveries']} deliveries/s, ${Math.round(dom['rate.bytes_out'])} B/s out, PSS ${pss} B (${Math.round(dom['mem.pss_per_conn'])} B per connection)`);

        // Rates: the page's (averaged over 5 events) against /stats over the same 5 seconds.
        const s1 = await getJson(port, '/stats');
        const h1 = process.hrtime.bigint();
        const pageRates = { 'rate.publishes': 0, 'rate.deliveries': 0, 'rate.bytes_out': 0 };
        for (let i = 0; i < 5; i++) {
            const r = await page.evaluate(async () => {
                const last = document.getElementById('last');
                await new Promise((resolve) => {
                    const o = new MutationObserver(() => { o.disconnect(); resolve(); });
                    o.observe(last, { childList: true, characterData: true, subtree: true });
                });
                const v = (k) => Number(document.querySelector(`[data-k="${k}"]`).dataset.v);
                return { 'rate.publishes': v('rate.publishes'), 'rate.deliveries': v('rate.deliveries'), 'rate.bytes_out': v('rate.bytes_out') };
            });
            for (const k of Object.keys(pageRates)) pageRates[k] += r[k] / 5;
        }
        const s2 = await getJson(port, '/stats');
        const secs = Number(process.hrtime.bigint() - h1) / 1e9;
        const off = [];
        for (const [k, sk] of [['rate.publishes', 'messages_in'], ['rate.deliveries', 'messages_out'], ['rate.bytes_out', 'bytes_out']]) {
            const want = (s2.total[sk] - s1.total[sk]) / secs;
            if (!(Math.abs(pageRates[k] - want) <= want * 0.35)) off.push(`${k}: page ${pageRates[k].toFixed(1)}, /stats ${want.toFixed(1)}`);
        }
        check('rates match /stats over 5 s', off.length === 0, off.join('; '));

        await page.screenshot({ path: SHOT, fullPage: true });
        console.log(`# screenshot: ${SHOT}`);

        // (The runner's own fetch of /stats aside.)
        const foreign = requests.filter((u) => !u.startsWith(`${base}/dashboard`) && u !== `${base}/stats`);
        check('the page loads nothing from elsewhere', foreign.length === 0, foreign.join(', '));
        check('no console error on the page', problems.length === 0, problems.join(' | '));

        // The README's browser snippet, as if pasted into this page's console (under its CSP).
        const got = await page.evaluate(async () => {
            const seen = [];
            const es = new EventSource('/sub/readme');
            es.onmessage = (e) => seen.push('EventSource: ' + e.data);
            const ws = new WebSocket(`ws://${location.host}/sub/readme`);
            ws.onmessage = (e) => seen.push('WebSocket: ' + e.data);
            await new Promise((resolve) => {
                let n = 0;
                es.onopen = ws.onopen = () => ++n === 2 && resolve();
                setTimeout(resolve, 5000);
            });
            await fetch('/pub/readme', { method: 'POST', body: 'from the page' });
            for (let i = 0; i < 50 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
            es.close();
            ws.close();
            return seen.sort();
        });
        check("the README's browser snippet works in the dashboard page", JSON.stringify(got) === '["EventSource: from the page","WebSocket: from the page"]', JSON.stringify(got));

        await processesCheck(browser);
    } finally {
        await browser.close().catch(() => {});
        notePid('chromium', null);
        for (const f of floods) await stop(f);
        await stop(server);
    }
}

// Under --processes 2 (with a redis-server of its own): the page shows a row per process, the
// pids and open connections of /stats's "processes", and the sums.
async function processesCheck(browser) {
    const redisBin = (process.env.PATH || '').split(':').map((d) => path.join(d, 'redis-server')).find((p) => fs.existsSync(p));
    if (!redisBin) {
        console.log('ok - --processes: rows per process # SKIP no redis-server (scripts/test.sh installs it)');
        return;
    }
    const rport = await freePort();
    const port = await freePort();
    const redis = start('redis', redisBin, ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    let launcher = null;
    let flood = null;
    try {
        for (let i = 0; !/Ready to accept/.test(redis.out); i++) {
            if (i > 50) throw new Error(`redis-server did not start: ${redis.out}`);
            await sleep(100);
        }
        launcher = start('edgecomet-processes', BIN, ['--processes', '2', '--workers', '1', '--broker', `redis://127.0.0.1:${rport}`, '--listen', `127.0.0.1:${port}`]);
        for (let i = 0; !/processes listening on/.test(launcher.out); i++) {
            if (i > 100 || launcher.exitCode !== null) throw new Error(`edgecomet --processes 2 did not start: ${launcher.out}`);
            await sleep(100);
        }
        const N = 300;
        flood = start('flood-processes', FLOOD, ['--url', `ws://127.0.0.1:${port}/sub/procs`, '--conns', String(N), '--rate', '1000', '--duration', '25', '--drain', '1']);
        const page = await browser.newPage();
        await page.goto(`http://127.0.0.1:${port}/dashboard`, { waitUntil: 'load' });
        let seen = null;
        for (let i = 0; i < 60; i++) {
            seen = await page.evaluate(() => ({
                rows: [...document.querySelectorAll('#proc-rows tr')].map((tr) => ({ pid: Number(tr.dataset.pid), open: Number(tr.dataset.open), cells: [...tr.children].map((td) => td.textContent) })),
                ws: Number(document.querySelector('[data-k="conns.ws"]').dataset.v),
                procs: document.getElementById('procs').textContent,
            }));
            if (seen.rows.length === 2 && seen.ws === N) break;
            await sleep(250);
        }
        const stats = await getJson(port, '/stats');
        const p = stats.processes;
        const pidsOk = JSON.stringify(seen.rows.map((r) => r.pid).sort()) === JSON.stringify([...p.pids].sort());
        const openPage = seen.rows.reduce((a, r) => a + r.open, 0);
        const openStats = p.open_per_process.reduce((a, b) => a + b, 0);
        check('--processes 2: a row per process, the pids of /stats', seen.rows.length === 2 && pidsOk && seen.procs === '2',
            `rows ${JSON.stringify(seen.rows)}, /stats pids ${JSON.stringify(p.pids)}, shown count ${seen.procs}`);
        check('--processes 2: WebSocket connections summed over the processes', seen.ws === N && p.total.conns_ws_sub === N,
            `page ${seen.ws}, /stats processes.total ${p.total.conns_ws_sub}, flood ${N}`);
        check('--processes 2: open connections and memory per process', Math.abs(openPage - openStats) <= 2 && openPage >= N &&
            seen.rows.every((r) => /B$/.test(r.cells[2]) && /B$/.test(r.cells[3]) && /B$/.test(r.cells[4])),
            `page ${openPage} (${JSON.stringify(seen.rows)}), /stats ${openStats}`);
        await page.close();
    } finally {
        await stop(flood);
        await stop(launcher);
        await stop(redis);
    }
}

const deadline = setTimeout(() => {
    console.log(`not ok - dashboard: the run took over ${RUN_DEADLINE_MS / 1000} s`);
    for (const p of pids.values()) try { process.kill(p, 'SIGKILL'); } catch {}
    process.exit(1);
}, RUN_DEADLINE_MS);
main().then(
    () => {
        clearTimeout(deadline);
        process.exit(failed ? 1 : 0);
    },
    (e) => {
        console.log(`not ok - dashboard: ${e.stack || e}`);
        for (const p of pids.values()) try { process.kill(p, 'SIGKILL'); } catch {}
        process.exit(1);
    },
);
