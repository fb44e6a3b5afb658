// socket.io-client (the published package, pinned by package-lock.json)
// against realtime-socketio's server mode. Driven by
// crates/realtime-socketio/tests/node.rs: it prints one JSON line per step
// ({step, ok}) and asks the Rust side for what only it can do
// ({need: ...}), waiting for {"done": need} on stdin.
'use strict'
const { need, next, connect, refused, assert, eq, step } = require('./lib.cjs')

const TOKEN_A = process.env.TOKEN_A
const TOKEN_B = process.env.TOKEN_B
const CH = 'document:42'

async function main () {
  await step('bad_token_refused', async () => {
    const m = await refused('not-a-token')
    assert(m.startsWith('unauthenticated'), `connect_error message: ${m}`)
    const none = await refused(undefined)
    assert(none.startsWith('unauthenticated'), `connect_error without a token: ${none}`)
  })

  let alice, bob
  await step('connect_with_auth', async () => {
    alice = await connect(TOKEN_A)
    bob = await connect(TOKEN_B)
    const hello = await alice.emitWithAck('rt:hello', {})
    eq([hello.ok, hello.protocol, hello.row_changes], [true, 1, true], 'rt:hello')
  })

  await step('join_and_presence_sync', async () => {
    const state = next(alice, 'rt:presence_state', (d) => d.channel === CH)
    const r = await alice.emitWithAck('rt:join', { channel: CH, presence_key: 'alice' })
    eq([r.ok, r.presence_key], [true, 'alice'], 'alice joins')
    eq((await state).state, {}, 'the state alice syncs on join')
    const r2 = await bob.emitWithAck('rt:join', { channel: CH, presence_key: 'bob' })
    assert(r2.ok, 'bob joins')
  })

  await step('presence_join_diff', async () => {
    const diff = next(bob, 'rt:presence_diff', (d) => d.joins.alice)
    const r = await alice.emitWithAck('rt:track', { channel: CH, state: { cursor: 1 } })
    assert(r.ok, 'track')
    const d = await diff
    eq(d.joins.alice.map((m) => m.state), [{ cursor: 1 }], 'bob sees alice join')
    const st = await bob.emitWithAck('rt:presence', { channel: CH })
    eq(Object.keys(st.state), ['alice'], 'presence state on request')
  })

  await step('emit_receive_with_ack', async () => {
    const got = next(alice, 'rt:message', (m) => m.event === 'edit')
    let bobOwn = false
    const own = (m) => { if (m.event === 'edit') bobOwn = true }
    bob.on('rt:message', own)
    const r = await bob.emitWithAck('rt:send', { channel: CH, event: 'edit', payload: { changes: ['x'], by: 'bob' } })
    assert(r.ok, `send acknowledged: ${JSON.stringify(r)}`)
    const m = await got
    eq(m, { channel: CH, event: 'edit', payload: { changes: ['x'], by: 'bob' } }, 'the broadcast alice gets')
    await new Promise((resolve) => setTimeout(resolve, 200))
    bob.off('rt:message', own)
    assert(!bobOwn, 'the sender got its own broadcast without self: true')
  })

  await step('errors_are_acknowledged', async () => {
    const r = await bob.emitWithAck('rt:send', { channel: 'elsewhere', event: 'x', payload: 1 })
    eq([r.ok, r.error && r.error.code], [false, 'invalid_input'], 'send without joining')
    const big = 'x'.repeat(270000)
    const r2 = await bob.emitWithAck('rt:send', { channel: CH, event: 'big', payload: big })
    eq([r2.ok, r2.error && r2.error.code], [false, 'too_large'], 'an over-limit payload')
    const r3 = await bob.emitWithAck('rt:subscribe_rows', { spec: { table: 'secrets' } })
    eq([r3.ok, r3.error && r3.error.code], [false, 'permission_denied'], 'an unpublished table')
  })

  await step('server_process_is_a_member', async () => {
    const msg = next(alice, 'rt:message', (m) => m.event === 'notice')
    const diff = next(alice, 'rt:presence_diff', (d) => d.joins.server)
    await need('rust_member')
    eq((await msg).payload, { from: 'rust' }, 'an in-process broadcast')
    eq((await diff).joins.server.map((m) => m.state), [{ role: 'server' }], 'in-process presence')
    const echo = next(alice, 'rt:message', (m) => m.event === 'echoed')
    await need('rust_echo')
    eq((await echo).payload, { from: 'alice', seen: true }, 'the in-process handle answered')
  })

  await step('row_changes', async () => {
    const r = await bob.emitWithAck('rt:subscribe_rows', { spec: { table: 'agents', key: 'a1' } })
    assert(r.ok && typeof r.id === 'number', `subscribe: ${JSON.stringify(r)}`)
    const change = next(bob, 'rt:row_change', (c) => c.id === r.id)
    await need('db_write')
    const c = (await change).change
    eq([c.table, c.kind, c.key, c.new.status], ['agents', 'INSERT', 'a1', 'active'], 'the row change')
  })

  await step('disconnect_cleanup', async () => {
    const left = next(bob, 'rt:presence_diff', (d) => d.leaves.alice)
    alice.close()
    eq((await left).leaves.alice.map((m) => m.state), [{ cursor: 1 }], 'bob sees alice leave')
    await need('check_cleanup')
    bob.close()
  })
  console.log(JSON.stringify({ done: true }))
  process.exit(0)
}

main().catch((e) => {
  console.log(JSON.stringify({ step: 'main', ok: false, error: String(e && e.stack || e) }))
  process.exit(1)
})
