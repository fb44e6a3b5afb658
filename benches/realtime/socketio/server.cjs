// The socket.io peer of the fan-out benchmark: every connection joins room
// "bench"; commands on stdin drive it:
//   burst <n>   emit n messages to the room back to back
//   one <i>     emit one message (paced runs)
//   rss         print the process's resident set size in bytes
// Each message is {t: <send time in microseconds since the epoch>, i, pad}.
// Prints "listening <port>" once ready.
'use strict';

const http = require('node:http');
const readline = require('node:readline');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 0);
const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  pingInterval: 25000,
  pingTimeout: 60000,
  maxHttpBufferSize: 1e6,
});
io.on('connection', (socket) => socket.join('bench'));

const nowMicros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const pad = 'x'.repeat(64);
let seq = 0;
function emit() {
  io.to('bench').emit('m', { t: nowMicros(), i: seq++, pad });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'burst') {
    for (let k = 0; k < Number(arg); k++) emit();
    console.log('sent');
  } else if (cmd === 'one') {
    emit();
  } else if (cmd === 'rss') {
    console.log(`rss ${process.memoryUsage().rss}`);
  } else if (cmd === 'quit') {
    process.exit(0);
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
