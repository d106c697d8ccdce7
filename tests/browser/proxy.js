'use strict';
// A TCP proxy between the browser and edgecomet that the runner can cut: cut() destroys every
// connection open through it at that moment (both sides), as a network failure would, and says
// how many there were. It also records the head of every HTTP request that goes through it (the
// request line and headers, as the browser sent them), so a test can check what a reconnecting
// client asked for (Last-Event-ID, ?cursor=).

const net = require('net');

const REQ_AT_START = /^[A-Z]+ \/\S* HTTP\/1\.[01]\r\n/;
const REQ_ANYWHERE = /[A-Z]+ \/\S* HTTP\/1\.[01]\r\n/;

function startProxy(targetPort, targetHost = '127.0.0.1') {
    const conns = new Set();
    const heads = [];
    let accepted = 0;
    let downUntil = 0;
    const server = net.createServer((client) => {
        const id = ++accepted;
        if (Date.now() < downUntil) {
            // "Network down": refuse by resetting at once.
            client.on('error', () => {});
            client.resetAndDestroy();
            return;
        }
        const upstream = net.connect(targetPort, targetHost);
        const pair = { client, upstream };
        conns.add(pair);
        let pending = '';
        client.on('data', (chunk) => {
            // Record request heads: from a request line to the blank line. Whatever is not a
            // head (a small body, masked WebSocket frames) is skipped up to the next request
            // line; a simple scan is enough for what the tests check.
            pending += chunk.toString('latin1');
            for (;;) {
                if (REQ_AT_START.test(pending)) {
                    const end = pending.indexOf('\r\n\r\n');
                    if (end < 0) {
                        if (pending.length > 65536) pending = '';
                        break;
                    }
                    heads.push({ at: Date.now(), conn: id, head: pending.slice(0, end) });
                    pending = pending.slice(end + 4);
                    continue;
                }
                const next = pending.search(REQ_ANYWHERE);
                if (next < 0) {
                    pending = pending.slice(-256); // a request line may be split across reads
                    break;
                }
                pending = pending.slice(next);
            }
        });
        client.pipe(upstream);
        upstream.pipe(client);
        const done = () => {
            conns.delete(pair);
            client.destroy();
            upstream.destroy();
        };
        client.on('error', done);
        upstream.on('error', done);
        client.on('close', done);
        upstream.on('close', done);
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => {
            resolve({
                port: server.address().port,
                heads,
                accepted: () => accepted,
                open: () => conns.size,
                // Reset both sides of every open connection; returns how many were open. With
                // downMs, connections made in the next downMs milliseconds are reset too (an
                // outage rather than one lost connection: Chrome silently retries a request
                // whose reused keep-alive connection fails before the answer, once, on a new
                // connection; that one fails too and the page sees the error).
                cut(downMs = 0) {
                    downUntil = Date.now() + downMs;
                    const n = conns.size;
                    for (const { client, upstream } of [...conns]) {
                        client.resetAndDestroy();
                        upstream.resetAndDestroy();
                    }
                    conns.clear();
                    return n;
                },
                close() {
                    for (const { client, upstream } of conns) {
                        client.destroy();
                        upstream.destroy();
                    }
                    server.close();
                },
            });
        });
    });
}

module.exports = { startProxy };
