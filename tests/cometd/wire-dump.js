// Prints the wire recordings written by `run.js --record DIR` as readable exchanges:
//
//   node wire-dump.js DIR [--only REGEX] [--headers] [--max-body N]
//
// One block per test and proxy; one line per HTTP request/response head (with the body after it)
// and per WebSocket frame, prefixed with the milliseconds since the proxy started, the TCP
// connection number and the direction (C>S client to server, S>C server to client). Bytes the
// proxy black-holed (run.js's ack test) are marked "(dropped)".

import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const dir = args[0];
if (!dir || dir.startsWith('--')) {
    console.error('usage: node wire-dump.js DIR [--only REGEX] [--headers] [--max-body N]');
    process.exit(2);
}
let only = null;
let headers = false;
let maxBody = 1500;
for (let i = 1; i < args.length; i++) {
    if (args[i] === '--only') only = new RegExp(args[++i]);
    else if (args[i] === '--headers') headers = true;
    else if (args[i] === '--max-body') maxBody = Number(args[++i]);
}

const cut = (s) => (s.length > maxBody ? `${s.slice(0, maxBody)}…(${s.length} chars)` : s);

for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json')).sort()) {
    const rec = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    if (only && !only.test(rec.test)) continue;
    console.log(`\n=== ${rec.test}`);
    for (const p of rec.proxies) {
        console.log(`--- proxy ${p.name}${p.transport ? ` (${p.transport})` : ''}`);
        for (const e of p.events) {
            const pre = `[${String(e.t).padStart(5)} ms] #${e.conn} ${e.dir === 'c2s' ? 'C>S' : e.dir === 's2c' ? 'S>C' : '   '}`;
            const dropped = e.dropped ? ' (dropped)' : '';
            switch (e.type) {
                case 'tcp-open':
                    console.log(`${pre} TCP open`);
                    break;
                case 'tcp-close':
                    console.log(`${pre} TCP closed (${e.why})`);
                    break;
                case 'http-request':
                case 'http-response': {
                    const lines = e.head.split('\r\n');
                    console.log(`${pre} ${lines[0]}${e.chunked ? `  [chunked: ${e.chunked.join('+')}]` : ''}${dropped}`);
                    if (headers) for (const l of lines.slice(1)) console.log(`${' '.repeat(pre.length)}   ${l}`);
                    if (e.body) console.log(`${' '.repeat(pre.length)}   ${cut(e.body)}`);
                    break;
                }
                case 'ws-text':
                    console.log(`${pre} WS text${e.fragments ? ` (${e.fragments} fragments)` : ''}${e.compressed ? ` (compressed, ${e.wireBytes} bytes on the wire${e.inflateError ? `, does not inflate: ${e.inflateError}` : ''})` : ''}${dropped}: ${e.text !== undefined ? cut(e.text) : ''}`);
                    break;
                case 'ws-close':
                    console.log(`${pre} WS close ${e.code} ${e.reason}${dropped}`);
                    break;
                default:
                    console.log(`${pre} ${e.type}${e.bytes !== undefined ? ` ${e.bytes} bytes` : ''}${e.error ? ` ${e.error}` : ''}${dropped}`);
            }
        }
    }
}
