'use strict';
// TLS for the browser tests' second pass (run.js --tls):
//
//   makeTestPki(dir)  a test CA and a certificate for localhost and 127.0.0.1 signed by it, made
//                     with the openssl CLI at test time (nothing private is committed), plus a
//                     second CA that nobody trusts and a certificate of its own (the negative
//                     control: chromium must refuse it);
//   makeNssDb(home, ca)  $HOME/.pki/nssdb for chromium with the test CA trusted for TLS servers
//                     (certutil -t "C,,"), so chromium verifies edgecomet's chain and name the
//                     way it would a public CA's: no --ignore-certificate-errors of any kind;
//   KeyLog / tls13Decoder  let proxy.js record what goes through it although the browser talks
//                     TLS end to end with edgecomet: chromium writes its TLS 1.3 traffic secrets
//                     to --ssl-key-log-file (NSS key log format), and the decoder turns the
//                     records of one direction of one connection back into the plaintext HTTP and
//                     WebSocket bytes for the recorder. The proxy relays the ciphertext untouched.

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { execFileSync } = require('child_process');

function run(cmd, args, cwd) {
    try {
        return execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
        throw new Error(`${cmd} ${args.join(' ')}: ${e.code === 'ENOENT' ? 'not installed' : (e.stderr || e.message).toString().trim()}`);
    }
}

// One CA and one server certificate (P-256, 2 days) in dir; returns their paths.
function caAndCert(dir, prefix, caName) {
    const f = (n) => path.join(dir, `${prefix}${n}`);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', `/CN=${caName}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    run('openssl', ['req', ...ec, '-keyout', f('key.pem'), '-out', f('server.csr'), '-subj', '/CN=localhost']);
    fs.writeFileSync(f('ext.cnf'), [
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        '',
    ].join('\n'));
    run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
        '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-days', '2', '-extfile', f('ext.cnf'), '-out', f('cert.pem')]);
    fs.rmSync(f('ca.key')); // nothing more is signed with it
    return { ca: f('ca.pem'), cert: f('cert.pem'), key: f('key.pem') };
}

function makeTestPki(dir) {
    return {
        ...caAndCert(dir, '', 'edgecomet browser-test CA'),
        untrusted: caAndCert(dir, 'untrusted-', 'edgecomet browser-test untrusted CA'),
    };
}

// The NSS database chromium reads on Linux ($HOME/.pki/nssdb), with `ca` trusted to issue TLS
// server certificates ("C,,": a CA for servers, nothing for mail or code signing).
function makeNssDb(home, ca) {
    const db = path.join(home, '.pki', 'nssdb');
    fs.mkdirSync(db, { recursive: true });
    run('certutil', ['-N', '-d', `sql:${db}`, '--empty-password']);
    run('certutil', ['-A', '-d', `sql:${db}`, '-t', 'C,,', '-n', 'edgecomet-browser-test-ca', '-i', ca]);
    return db;
}

// ---- decrypting TLS 1.3 with chromium's key log ------------------------------------------------

// The NSS key log chromium writes (--ssl-key-log-file): "LABEL <client random hex> <secret hex>"
// per line. Read again whenever a secret is missing (chromium appends from a thread of its own,
// a moment after it derived the secret).
class KeyLog {
    constructor(file) {
        this.file = file;
        this.secrets = new Map(); // `${label} ${random}` -> Buffer
        this.size = 0;
    }

    get(label, random) {
        const k = `${label} ${random}`;
        if (!this.secrets.has(k)) this.reload();
        return this.secrets.get(k) || null;
    }

    reload() {
        let text;
        try {
            text = fs.readFileSync(this.file, 'latin1');
        } catch {
            return;
        }
        if (text.length === this.size) return;
        this.size = text.length;
        for (const line of text.split('\n')) {
            const m = /^([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]+)$/i.exec(line.trim());
            if (m) this.secrets.set(`${m[1]} ${m[2].toLowerCase()}`, Buffer.from(m[3], 'hex'));
        }
    }
}

// TLS 1.3 cipher suites: AEAD, key length, hash of the key schedule.
const SUITES = {
    0x1301: { aead: 'aes-128-gcm', keyLen: 16, hash: 'sha256' },
    0x1302: { aead: 'aes-256-gcm', keyLen: 32, hash: 'sha384' },
    0x1303: { aead: 'chacha20-poly1305', keyLen: 32, hash: 'sha256' },
};

// HKDF-Expand-Label(secret, label, "", length) of RFC 8446 section 7.1; length <= the hash's.
function expandLabel(hash, secret, label, length) {
    const full = Buffer.from(`tls13 ${label}`, 'latin1');
    const info = Buffer.concat([Buffer.from([length >> 8, length & 0xff, full.length]), full, Buffer.from([0])]);
    return crypto.createHmac(hash, secret).update(Buffer.concat([info, Buffer.from([1])])).digest().subarray(0, length);
}

function trafficKeys(suite, secret) {
    return { key: expandLabel(suite.hash, secret, 'key', suite.keyLen), iv: expandLabel(suite.hash, secret, 'iv', 12), seq: 0n };
}

// One record's plaintext (TLSInnerPlaintext with its content type), or null if it does not
// authenticate with these keys.
function open(suite, keys, header, body) {
    if (body.length < 17) return null;
    const nonce = Buffer.from(keys.iv);
    const seq = Buffer.alloc(8);
    seq.writeBigUInt64BE(keys.seq);
    for (let i = 0; i < 8; i++) nonce[4 + i] ^= seq[i];
    try {
        const d = crypto.createDecipheriv(suite.aead, keys.key, nonce, { authTagLength: 16 });
        d.setAAD(header);
        d.setAuthTag(body.subarray(body.length - 16));
        const plain = Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]);
        let end = plain.length;
        while (end > 0 && plain[end - 1] === 0) end--;
        if (end === 0) return null;
        return { type: plain[end - 1], data: plain.subarray(0, end - 1) };
    } catch {
        return null;
    }
}

// Per connection, what both directions share: the ClientHello's random (the key log's key) and
// the cipher suite from the ServerHello.
const newTlsConn = () => ({ random: null, suite: null });

// Decodes one direction ('client' or 'server') of one connection. feed(chunk, at) takes the bytes
// as they went through the proxy; onPlain(data, at) gets the application data, in order, with the
// time its record was seen. Records whose secrets chromium has not logged yet wait (pending()),
// and are decoded by a later feed or retry(). A record that cannot be decoded stops the decoder
// and is reported with onError (the recorder's fault, not the server's).
function tls13Decoder(side, conn, keylog, onPlain, onError) {
    const labels = side === 'client'
        ? ['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'CLIENT_TRAFFIC_SECRET_0']
        : ['SERVER_HANDSHAKE_TRAFFIC_SECRET', 'SERVER_TRAFFIC_SECRET_0'];
    let buf = Buffer.alloc(0);
    const queue = []; // { header, body, at } not decoded yet
    const phases = [null, null]; // handshake, application traffic keys
    let phase = 0;
    let dead = false;
    const fail = (msg) => {
        dead = true;
        queue.length = 0;
        onError(`${side}: ${msg}`);
    };
    const keysFor = (i) => {
        if (!phases[i] && conn.random && conn.suite) {
            const s = keylog.get(labels[i], conn.random);
            if (s) phases[i] = trafficKeys(conn.suite, s);
        }
        return phases[i];
    };
    // Decodes queued records while their keys are known.
    const drain = () => {
        while (!dead && queue.length) {
            const { header, body, at } = queue[0];
            const type = header[0];
            if (type === 22) {
                // ClientHello / ServerHello (and HelloRetryRequest), the only records in the clear.
                if (side === 'client' && body[0] === 1) conn.random = body.subarray(6, 38).toString('hex');
                if (side === 'server' && body[0] === 2) {
                    const code = body.readUInt16BE(39 + body[38]);
                    if (!SUITES[code]) return fail(`cipher suite 0x${code.toString(16)} is not TLS 1.3`);
                    conn.suite = SUITES[code];
                }
                queue.shift();
                continue;
            }
            if (type === 20 || type === 21) {
                queue.shift(); // ChangeCipherSpec (compatibility), an alert in the clear
                continue;
            }
            if (type !== 23) return fail(`record type ${type}`);
            if (!conn.suite || !conn.random) return; // the other direction has not got there yet
            let plain = null;
            const cur = keysFor(phase);
            if (!cur) return; // not logged yet
            plain = open(conn.suite, cur, header, body);
            if (plain) {
                cur.seq++;
            } else if (phase === 0) {
                const next = keysFor(1);
                if (!next) return; // may be the first application record: wait for its secret
                plain = open(conn.suite, next, header, body);
                if (!plain) return fail(`a record (${body.length} bytes) decrypts with neither secret`);
                phase = 1;
                next.seq++;
            } else {
                return fail(`a record (${body.length} bytes) does not decrypt (a KeyUpdate?)`);
            }
            queue.shift();
            if (plain.type === 23) onPlain(plain.data, at);
            else if (plain.type === 22 && phase === 1 && plain.data[0] === 24) return fail('KeyUpdate: not followed');
            // handshake messages (Finished, NewSessionTicket) and alerts carry no HTTP
        }
    };
    return {
        feed(chunk, at = Date.now()) {
            if (dead) return;
            buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
            while (buf.length >= 5) {
                const len = buf.readUInt16BE(3);
                if (buf.length < 5 + len) break;
                queue.push({ header: Buffer.from(buf.subarray(0, 5)), body: Buffer.from(buf.subarray(5, 5 + len)), at });
                buf = buf.subarray(5 + len);
            }
            drain();
        },
        retry: drain,
        pending: () => (dead ? 0 : queue.length),
        // Application traffic reached: anything still waiting may be HTTP.
        inApplicationPhase: () => phase === 1,
    };
}

module.exports = { makeTestPki, makeNssDb, KeyLog, tls13Decoder, newTlsConn };
