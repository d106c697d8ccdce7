// Runs the reference Bayeux server of run.js --reference on its own, to poke at it by hand (curl,
// a browser page, run.js --url) and see what the official implementation answers:
//
//   node serve-reference.js [PORT]      (default: a free port; 127.0.0.1 only)
//
// Prints "listening on 127.0.0.1:PORT" and the Bayeux URL; stops on SIGINT/SIGTERM.
// Configuration and what is added to cometd-nodejs-server: lib/reference-server.js.

import { startReferenceServer, REFERENCE_OPTIONS } from './lib/reference-server.js';

const port = Number(process.argv[2] || 0);
const ref = await startReferenceServer({ path: '/cometd', port, log: (s) => console.error(`reference: ${s}`) });
console.error(`listening on 127.0.0.1:${ref.port}`);
console.log(`${ref.url}  (timeout ${REFERENCE_OPTIONS.timeout} ms, maxInterval ${REFERENCE_OPTIONS.maxInterval} ms)`);
const stop = () => ref.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
