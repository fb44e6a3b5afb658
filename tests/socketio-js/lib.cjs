// Helpers of the socket.io-client scenarios (scenario.cjs, access.cjs):
// one JSON line per step on stdout, {need: ...} requests to the Rust side
// answered by {"done": need} on stdin.
'use strict'
const { io } = require('socket.io-client')
const readline = require('readline')

const waiting = new Map()
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line)
  const resolve = waiting.get(msg.done)
  if (resolve) { waiting.delete(msg.done); resolve(msg) }
})
function need (what, extra = {}) {
  return new Promise((resolve) => {
    waiting.set(what, resolve)
    console.log(JSON.stringify({ need: what, ...extra }))
  })
}

function withTimeout (promise, what, ms = 5000) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) })
  ]).finally(() => clearTimeout(timer))
}

// The next `event` whose payload `pred` accepts.
function next (socket, event, pred = () => true, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const h = (data) => { if (pred(data)) { socket.off(event, h); resolve(data) } }
    socket.on(event, h)
  }), event, ms)
}

function connect (token) {
  const socket = io(process.env.SERVER_URL, { auth: token === undefined ? {} : { token }, transports: ['websocket'], reconnection: false, forceNew: true })
  return withTimeout(new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket))
    socket.once('connect_error', (e) => { socket.close(); reject(e) })
  }), 'connect')
}

async function refused (token) {
  try {
    const s = await connect(token)
    s.close()
  } catch (e) {
    return e.message
  }
  throw new Error('the server accepted a client it should refuse')
}

function assert (cond, msg) { if (!cond) throw new Error(msg) }
function eq (a, b, msg) { assert(JSON.stringify(a) === JSON.stringify(b), `${msg}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`) }

async function step (name, f) {
  try {
    await f()
    console.log(JSON.stringify({ step: name, ok: true }))
  } catch (e) {
    console.log(JSON.stringify({ step: name, ok: false, error: String(e && e.stack || e) }))
    process.exit(1)
  }
}

module.exports = { need, withTimeout, next, connect, refused, assert, eq, step }
