// A TCP proxy in front of the server that a test can cut, as a network failure would:
//   cut()  destroys every connection open through it (both sides) and refuses new ones (accepted,
//          then destroyed at once) until up();
//   up()   relays new connections again.
// `connections` counts the connections accepted while up, `refused` those destroyed while down.

import net from 'node:net';

export async function startProxy(targetPort) {
    const open = new Set();
    let down = false;
    const p = { port: 0, connections: 0, refused: 0, cuts: 0 };
    const server = net.createServer((client) => {
        if (down) {
            p.refused++;
            client.destroy();
            return;
        }
        p.connections++;
        const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
        const pair = { client, upstream };
        open.add(pair);
        const end = () => {
            open.delete(pair);
            client.destroy();
            upstream.destroy();
        };
        client.on('error', end);
        upstream.on('error', end);
        client.on('close', end);
        upstream.on('close', end);
        client.pipe(upstream);
        upstream.pipe(client);
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
    });
    p.port = server.address().port;
    p.cut = () => {
        down = true;
        p.cuts++;
        const n = open.size;
        for (const { client, upstream } of [...open]) {
            client.destroy();
            upstream.destroy();
        }
        open.clear();
        return n;
    };
    p.up = () => {
        down = false;
    };
    p.close = () =>
        new Promise((resolve) => {
            p.cut();
            server.close(() => resolve());
        });
    return p;
}
