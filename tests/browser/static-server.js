'use strict';
// Tiny static file server for the browser tests: serves tests/browser/pages/ at / and the dojo,
// dojox and cometd packages at /node_modules/dojo/, /node_modules/dojox/ and /node_modules/cometd/
// (cometd 9 is ES modules: its .js files go out as application/javascript), and socket.io-client's
// browser bundles at /node_modules/socket.io-client/dist/. Nothing else. It
// listens on 127.0.0.1 only; the port it got is returned (port 0 = a free one). With { cert, key }
// (PEM file paths) it serves https (the TLS pass of run.js: pages from an https origin).
//
//   node static-server.js [PORT]      (standalone, for looking at the pages by hand)

const http = require('http');
const https = require('https');
const fs = require('fs');
const path = require('path');

const ROOTS = [
    ['/node_modules/dojo/', path.join(__dirname, 'node_modules', 'dojo')],
    ['/node_modules/dojox/', path.join(__dirname, 'node_modules', 'dojox')],
    ['/node_modules/cometd/', path.join(__dirname, 'node_modules', 'cometd')],
    ['/node_modules/socket.io-client/dist/', path.join(__dirname, 'node_modules', 'socket.io-client', 'dist')],
    ['/', path.join(__dirname, 'pages')],
];
const TYPES = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'application/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.json': 'application/json',
};

function resolve(urlPath) {
    let p;
    try {
        p = decodeURIComponent(urlPath.split('?')[0]);
    } catch {
        return null;
    }
    if (p === '/') p = '/index.html';
    for (const [prefix, dir] of ROOTS) {
        if (!p.startsWith(prefix)) continue;
        const file = path.resolve(dir, '.' + p.slice(prefix.length - 1));
        if (file !== dir && !file.startsWith(dir + path.sep)) return null;
        return file;
    }
    return null;
}

function handler(req, res) {
    if (req.url === '/favicon.ico') {
        res.writeHead(204).end();
        return;
    }
    const file = resolve(req.url);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
        return;
    }
    if (!file) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
    }
    fs.readFile(file, (err, body) => {
        if (err) {
            res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
            return;
        }
        res.writeHead(200, {
            'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
            'cache-control': 'no-store',
        });
        res.end(req.method === 'HEAD' ? undefined : body);
    });
}

function startStatic(port = 0, tls = null) {
    return new Promise((resolveP, reject) => {
        const server = tls
            ? https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, handler)
            : http.createServer(handler);
        server.keepAliveTimeout = 1000;
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolveP(server));
    });
}

module.exports = { startStatic };

if (require.main === module) {
    startStatic(Number(process.argv[2] || 0)).then((s) =>
        console.log(`static server on http://127.0.0.1:${s.address().port}/`),
    );
}
