// Runs the reference server alone, to poke at it with curl or a browser:
//   node tests/socketio/serve-reference.js [PROFILE] [PORT]
// PROFILE: conformance (default), main, tokens (secret from $TOKEN_SECRET), recovery.
import { startReferenceServer } from './lib/reference-server.js';

const [name = 'conformance', port = '0'] = process.argv.slice(2);
const profiles = {
    conformance: { conformance: true },
    main: { namespaces: ['/chat', '/admin'], clientPublish: true },
    tokens: { tokenSecret: process.env.TOKEN_SECRET || 'x'.repeat(32), clientPublish: true },
    recovery: { recoveryMs: 2000 },
};
if (!profiles[name]) {
    console.error(`unknown profile ${name}: ${Object.keys(profiles).join(', ')}`);
    process.exit(2);
}
const ref = await startReferenceServer(profiles[name], { port: Number(port), log: (s) => console.log(s) });
console.log(`reference (${name}): listening on 127.0.0.1:${ref.port}`);
