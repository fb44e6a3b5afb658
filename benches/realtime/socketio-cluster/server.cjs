// One socket.io node of the cluster fan-out benchmark: socket.io 4.8 with
// @socket.io/redis-adapter 8.3 (node-redis 4), so a room emit on one node
// reaches the room's sockets on every node through Redis pub/sub (one
// PUBLISH per emit). Every connection joins room "bench".
//
//   node server.cjs <redis adapter key>     (REDIS_URL, default redis://127.0.0.1:6379)
//
// Prints "listening <port>" once its Redis subscriptions are made, then
// takes commands on stdin:
//   nodes        print "nodes <n>": socket.io nodes subscribed under the key
//   one          emit one message to the room (paced runs)
//   burst <n>    emit n messages back to back, then print "sent"
//   stats        print "stats <broadcasts> <bytes>": the room emits this node
//                published to Redis and their bytes (the adapter's msgpack
//                message, as published)
//   quit         exit
// Each message is event "m" with {i, t: <send time, microseconds since the
// epoch>}, as the realtime-ws side sends.
'use strict';

const http = require('node:http');
const readline = require('node:readline');
const { Server } = require('socket.io');
const { createClient } = require('redis');
const { createAdapter } = require('@socket.io/redis-adapter');

const key = process.argv[2];
if (!key) {
  console.error('usage: node server.cjs <redis adapter key>');
  process.exit(2);
}

const nowMicros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

async function main() {
  const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) {
    c.on('error', (e) => console.error(`redis: ${e.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);

  // Counts what this node publishes for room emits (the adapter's
  // broadcast channel is "<key>#/#<room>#").
  const broadcastChannel = `${key}#/#`;
  const stats = { broadcasts: 0, bytes: 0 };
  const publish = pub.publish.bind(pub);
  pub.publish = (channel, message) => {
    if (channel.startsWith(broadcastChannel)) {
      stats.broadcasts += 1;
      stats.bytes += message.length;
    }
    return publish(channel, message);
  };

  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'],
    perMessageDeflate: false,
    pingInterval: 25000,
    pingTimeout: 60000,
    adapter: createAdapter(pub, sub, { key }),
  });
  io.on('connection', (socket) => socket.join('bench'));

  let seq = 0;
  const emit = () => io.to('bench').emit('m', { i: seq++, t: nowMicros() });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'nodes') {
      console.log(`nodes ${await io.of('/').adapter.serverCount()}`);
    } else if (cmd === 'one') {
      emit();
    } else if (cmd === 'burst') {
      for (let k = 0; k < Number(arg); k++) emit();
      console.log('sent');
    } else if (cmd === 'stats') {
      console.log(`stats ${stats.broadcasts} ${stats.bytes}`);
    } else if (cmd === 'quit') {
      process.exit(0);
    }
  });
  // Stdin closed (the bench ended or died): so does this node.
  rl.on('close', () => process.exit(0));

  // The adapter's subscriptions are queued on `sub` before this PING, so
  // its reply means they are made.
  await sub.ping();
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening ${server.address().port}`);
  });
}

main().catch((e) => {
  console.error(`socket.io cluster node: ${e.message}`);
  process.exit(1);
});
