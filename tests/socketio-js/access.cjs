// socket.io-client against realtime-socketio's server mode: who may join a
// private channel, who gets which row changes, and a token that expires
// during a connection. Driven by crates/realtime-socketio/tests/node.rs
// (socket_io_clients_are_held_to_channel_and_row_rules).
'use strict'
const { need, next, connect, assert, eq, step } = require('./lib.cjs')

const ADMIN = process.env.TOKEN_ADMIN // alice, role admin
const PLAIN = process.env.TOKEN_PLAIN // bob, no role
const SHORT = process.env.TOKEN_SHORT // carol, expires within 4 s
const LONGER = process.env.TOKEN_LONGER // carol again, expires within 8 s

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main () {
  let alice, bob
  await step('private_channel_needs_the_role', async () => {
    alice = await connect(ADMIN)
    bob = await connect(PLAIN)
    const r = await bob.emitWithAck('rt:join', { channel: 'admin:ops' })
    eq([r.ok, r.error && r.error.code], [false, 'permission_denied'], 'bob joins admin:ops')
    assert(/private/.test(r.error.message) && /role/.test(r.error.message), `the refusal says why: ${r.error.message}`)
    assert(!/admin"/.test(r.error.message), `the refusal does not list the accepted roles: ${r.error.message}`)
    // Refused means not a member: sending there fails too.
    const s = await bob.emitWithAck('rt:send', { channel: 'admin:ops', event: 'x', payload: 1 })
    eq([s.ok, s.error && s.error.code], [false, 'invalid_input'], 'bob sends to admin:ops')
    const a = await alice.emitWithAck('rt:join', { channel: 'admin:ops' })
    assert(a.ok, `alice (admin) joins: ${JSON.stringify(a)}`)
    const p = await bob.emitWithAck('rt:join', { channel: 'lobby' })
    assert(p.ok, `a public channel: ${JSON.stringify(p)}`)
  })

  await step('rows_only_as_the_rule_allows', async () => {
    const got = { alice: [], bob: [] }
    const ra = await alice.emitWithAck('rt:subscribe_rows', { spec: { table: 'notes' } })
    const rb = await bob.emitWithAck('rt:subscribe_rows', { spec: { table: 'notes' } })
    assert(ra.ok && rb.ok, `subscribe: ${JSON.stringify([ra, rb])}`)
    const hidden = await bob.emitWithAck('rt:subscribe_rows', { spec: { table: 'notes', filter: { cmp: { column: { table: null, column: 'secret' }, op: 'eq', value: 'x' } } } })
    eq([hidden.ok, hidden.error && hidden.error.code], [false, 'permission_denied'], 'a filter on a hidden column')
    alice.on('rt:row_change', (c) => got.alice.push(c.change))
    bob.on('rt:row_change', (c) => got.bob.push(c.change))
    const aliceLast = next(alice, 'rt:row_change', (c) => c.change.key === 'n3')
    const bobLast = next(bob, 'rt:row_change', (c) => c.change.key === 'n4')
    await need('db_write') // n1 alice, n2 bob, n3 alice, n4 bob: one feed, in order
    await aliceLast
    await bobLast
    eq(got.alice.map((c) => c.key), ['n1', 'n3'], 'alice gets her rows only')
    eq(got.bob.map((c) => c.key), ['n2', 'n4'], 'bob gets his rows only')
    assert(got.alice.concat(got.bob).every((c) => !('secret' in c.new)), 'the hidden column is never sent')
    alice.close()
    bob.close()
  })

  await step('token_refresh_and_expiry', async () => {
    const carol = await connect(SHORT)
    const started = Date.now()
    const other = await carol.emitWithAck('rt:access_token', { token: PLAIN })
    eq([other.ok, other.error && other.error.code], [false, 'unauthenticated'], "another user's token")
    const bad = await carol.emitWithAck('rt:access_token', { token: 'not-a-token' })
    eq([bad.ok, bad.error && bad.error.code], [false, 'unauthenticated'], 'a bad token')
    const r = await carol.emitWithAck('rt:access_token', { token: LONGER })
    assert(r.ok, `refresh: ${JSON.stringify(r)}`)
    const expired = next(carol, 'rt:error', (e) => e.code === 'token_expired', 15000)
    const gone = new Promise((resolve) => carol.once('disconnect', resolve))
    // Past the first token's expiry the connection still works.
    await sleep(Math.max(0, 5000 - (Date.now() - started)))
    const hello = await carol.emitWithAck('rt:hello', {})
    assert(hello.ok && carol.connected, 'connected after the first token expired')
    const e = await expired
    assert(/expired/.test(e.message), `the reason: ${e.message}`)
    eq(await gone, 'io server disconnect', 'the server disconnected carol')
    assert(Date.now() - started < 12000, 'disconnected at the refreshed expiry')
  })
  console.log(JSON.stringify({ done: true }))
  process.exit(0)
}

main().catch((e) => {
  console.log(JSON.stringify({ step: 'main', ok: false, error: String(e && e.stack || e) }))
  process.exit(1)
})
