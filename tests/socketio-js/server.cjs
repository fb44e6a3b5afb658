// A plain Node `socket.io` server (the published package, pinned by
// package-lock.json) speaking realtime-socketio's protocol: the reference
// for an application that keeps its Node realtime server and points
// realtime-socketio's client mode at it. Rooms are channels; presence is
// kept here; there is no database, so rt:hello says row_changes: false.
//
// PORT (default 0: any), TOKEN (when set, the handshake's auth.token must
// equal it), MAX_PAYLOAD_BYTES (default 262144). Prints {"port": N} once
// listening.
'use strict'
const http = require('http')
const { Server } = require('socket.io')

const MAX = Number(process.env.MAX_PAYLOAD_BYTES || 262144)
const TOKEN = process.env.TOKEN
const httpServer = http.createServer()
const io = new Server(httpServer, { maxHttpBufferSize: MAX + 65536 })

// channel -> Map(memberId -> {socket, handle, self, key, meta})
const channels = new Map()
let nextId = 1

io.use((socket, next) => {
  if (TOKEN && (socket.handshake.auth || {}).token !== TOKEN) {
    return next(new Error('unauthenticated: the access token is invalid or expired'))
  }
  next()
})

function target (channel, handle) { return handle ? { channel, handle } : { channel } }
function stateOf (room) {
  const s = {}
  for (const m of room.values()) if (m.meta) (s[m.key] ||= []).push(m.meta)
  return s
}
function fanOutDiff (channel, room, joins, leaves) {
  for (const m of room.values()) m.socket.emit('rt:presence_diff', { ...target(channel, m.handle), joins, leaves })
}
function bytes (v) { return Buffer.byteLength(JSON.stringify(v === undefined ? null : v)) }
function leave (channel, id) {
  const room = channels.get(channel)
  const m = room && room.get(id)
  if (!m) return
  room.delete(id)
  if (m.meta) fanOutDiff(channel, room, {}, { [m.key]: [m.meta] })
  if (room.size === 0) channels.delete(channel)
}

io.on('connection', (socket) => {
  const mine = new Map() // `${channel}\u0000${handle}` -> member id
  const key = (d) => `${d.channel}\u0000${d.handle || ''}`
  const reply = (ack, v) => { if (typeof ack === 'function') ack({ ok: true, ...v }) }
  const fail = (ack, code, message) => { if (typeof ack === 'function') ack({ ok: false, error: { code, message } }) }
  const member = (d) => {
    const id = mine.get(key(d || {}))
    const room = channels.get((d || {}).channel)
    return id !== undefined && room && room.has(id) ? [id, room] : null
  }
  const notJoined = (ack, d, op) => fail(ack, 'invalid_input', `join channel ${JSON.stringify((d || {}).channel)} first: ${op} needs a joined handle`)

  socket.on('rt:hello', (_d, ack) => reply(ack, { protocol: 1, max_payload_bytes: MAX, row_changes: false }))
  socket.on('rt:join', (d, ack) => {
    if (!d || typeof d.channel !== 'string' || d.channel.length === 0) return fail(ack, 'invalid_input', 'a channel name is required')
    if (member(d)) return reply(ack, { joined: true })
    const id = nextId++
    const presenceKey = d.presence_key || `${socket.id}-${id}`
    mine.set(key(d), id)
    if (!channels.has(d.channel)) channels.set(d.channel, new Map())
    const room = channels.get(d.channel)
    room.set(id, { socket, handle: d.handle, self: !!d.self, key: presenceKey, meta: null })
    reply(ack, { presence_key: presenceKey })
    socket.emit('rt:presence_state', { ...target(d.channel, d.handle), state: stateOf(room) })
  })
  socket.on('rt:leave', (d, ack) => {
    const m = member(d)
    if (m) { mine.delete(key(d)); leave(d.channel, m[0]) }
    reply(ack, {})
  })
  socket.on('rt:send', (d, ack) => {
    const m = member(d)
    if (!m) return notJoined(ack, d, 'send')
    if (bytes(d.payload) > MAX) return fail(ack, 'too_large', `the broadcast payload is larger than the limit of ${MAX} bytes`)
    const [id, room] = m
    for (const [other, o] of room) {
      if (other === id && !o.self) continue
      o.socket.emit('rt:message', { ...target(d.channel, o.handle), event: d.event, payload: d.payload })
    }
    reply(ack, {})
  })
  socket.on('rt:track', (d, ack) => {
    const m = member(d)
    if (!m) return notJoined(ack, d, 'track')
    const me = m[1].get(m[0])
    const leaves = me.meta ? { [me.key]: [me.meta] } : {}
    me.meta = { presence_ref: String(nextId++), state: d.state === undefined ? null : d.state }
    fanOutDiff(d.channel, m[1], { [me.key]: [me.meta] }, leaves)
    reply(ack, {})
  })
  socket.on('rt:untrack', (d, ack) => {
    const m = member(d)
    if (!m) return notJoined(ack, d, 'untrack')
    const me = m[1].get(m[0])
    if (me.meta) {
      const old = me.meta
      me.meta = null
      fanOutDiff(d.channel, m[1], {}, { [me.key]: [old] })
    }
    reply(ack, {})
  })
  socket.on('rt:presence', (d, ack) => {
    const m = member(d)
    if (!m) return notJoined(ack, d, 'presence')
    reply(ack, { state: stateOf(m[1]) })
  })
  socket.on('rt:subscribe_rows', (_d, ack) => fail(ack, 'unsupported', 'this server has no database change feed'))
  socket.on('rt:unsubscribe_rows', (_d, ack) => reply(ack, {}))
  socket.on('disconnect', () => {
    for (const [k, id] of mine) leave(k.split('\u0000')[0], id)
    mine.clear()
  })
})

httpServer.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: httpServer.address().port }))
})
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
