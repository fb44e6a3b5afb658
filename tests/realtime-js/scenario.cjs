// Drives a TrustStream realtime-ws hub with the published @supabase/realtime-js
// client. Run by crates/realtime-ws/tests/realtime_js.rs, which starts the hub
// and passes:
//   HUB_URL      ws://127.0.0.1:<port>/realtime/v1  (the client appends /websocket)
//   TOKEN        a valid HS256 access token (1 h)
// A token that expires in a few seconds is asked for when a step needs it
// ({"need": "short_token"}; the answer line is the token), so a slow machine
// cannot let it expire before the step starts.
// The script asserts and prints one JSON line per step ({"step", "ok"}). When it
// needs the Rust side to act it prints {"need": "..."} and waits for a line on
// stdin. Any failure prints {"step", "ok": false, "error"} and exits 1.
'use strict';

const assert = require('node:assert/strict');
const readline = require('node:readline');
const WebSocket = require('ws');
const { RealtimeClient } = require('@supabase/realtime-js');

const HUB_URL = process.env.HUB_URL;
const TOKEN = process.env.TOKEN;

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => {
  const w = waiting.shift();
  if (w) w(l);
});
function need(what) {
  return new Promise((resolve) => {
    waiting.push(resolve);
    console.log(JSON.stringify({ need: what }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function client(opts = {}) {
  return new RealtimeClient(HUB_URL, {
    params: { apikey: opts.apikey ?? TOKEN },
    transport: WebSocket,
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 1000,
    reconnectAfterMs: () => 200,
    vsn: opts.vsn,
  });
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    const statuses = [];
    channel.subscribe((status, err) => {
      statuses.push(status);
      channel.statuses = statuses;
      if (status === 'SUBSCRIBED') resolve(statuses);
      else if (status !== 'CLOSED' && statuses.length === 1) {
        reject(new Error(`subscribe: ${status} ${err ? err.message : ''}`));
      }
    });
  });
}

const steps = [];
async function step(name, f) {
  try {
    const detail = await f();
    console.log(JSON.stringify({ step: name, ok: true, detail: detail ?? null }));
    steps.push(name);
  } catch (e) {
    console.log(JSON.stringify({ step: name, ok: false, error: String(e && e.stack ? e.stack : e) }));
    process.exit(1);
  }
}

async function main() {
  // a speaks vsn 2.0.0 (the default: JSON arrays, binary broadcasts), b 1.0.0.
  const a = client();
  const b = client({ vsn: '1.0.0' });
  const heartbeats = [];
  a.onHeartbeat((status) => heartbeats.push(status));

  let roomA, roomB;
  const gotA = [];
  const gotB = [];
  await step('connect_and_join', async () => {
    roomA = a.channel('room', { config: { broadcast: { self: true, ack: true } } });
    roomB = b.channel('room');
    roomA.on('broadcast', { event: '*' }, (m) => gotA.push(m));
    roomB.on('broadcast', { event: '*' }, (m) => gotB.push(m));
    await subscribe(roomA);
    await subscribe(roomB);
    assert.equal(roomA.state, 'joined');
    assert.equal(roomB.state, 'joined');
  });

  await step('broadcast_self_and_ack', async () => {
    const res = await roomA.send({ type: 'broadcast', event: 'hello', payload: { from: 'a', n: 1 } });
    assert.equal(res, 'ok', 'ack resolves ok');
    await waitFor('b receives a', () => gotB.length === 1);
    await waitFor('a receives its own (self)', () => gotA.length === 1);
    assert.deepEqual(gotB[0].payload, { from: 'a', n: 1 });
    assert.equal(gotB[0].event, 'hello');
    assert.deepEqual(gotA[0].payload, { from: 'a', n: 1 });
  });

  await step('broadcast_without_self', async () => {
    const res = await roomB.send({ type: 'broadcast', event: 'hello', payload: { from: 'b' } });
    assert.equal(res, 'ok');
    await waitFor('a receives b', () => gotA.length === 2);
    assert.deepEqual(gotA[1].payload, { from: 'b' });
    await sleep(300);
    assert.equal(gotB.length, 1, 'b must not receive its own broadcast (self: false)');
  });

  await step('binary_broadcast', async () => {
    // Two vsn 2.0.0 clients (a and c): an ArrayBuffer payload travels as a
    // kind 3 frame with encoding 0 and arrives as a kind 4 frame, an
    // ArrayBuffer again. b (vsn 1.0.0, JSON text frames only) does not get it.
    const c = client();
    const binA = a.channel('bin', { config: { broadcast: { ack: true } } });
    const binB = b.channel('bin');
    const binC = c.channel('bin');
    const gotBinB = [];
    const gotBinC = [];
    binB.on('broadcast', { event: '*' }, (m) => gotBinB.push(m));
    binC.on('broadcast', { event: '*' }, (m) => gotBinC.push(m));
    await subscribe(binA);
    await subscribe(binB);
    await subscribe(binC);
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const res = await binA.send({ type: 'broadcast', event: 'bin', payload: bytes.buffer });
    assert.equal(res, 'ok', 'ack resolves ok');
    await waitFor('c receives the bytes', () => gotBinC.length === 1);
    const got = gotBinC[0];
    assert.equal(got.event, 'bin');
    assert.ok(got.payload instanceof ArrayBuffer, `payload is ${Object.prototype.toString.call(got.payload)}`);
    assert.deepEqual(Array.from(new Uint8Array(got.payload)), Array.from(bytes));
    // A JSON broadcast after it is the first one b gets.
    assert.equal(await binA.send({ type: 'broadcast', event: 'after', payload: { n: 1 } }), 'ok');
    await waitFor('b receives the JSON broadcast', () => gotBinB.length === 1);
    await waitFor('c receives the JSON broadcast', () => gotBinC.length === 2);
    assert.equal(gotBinB[0].event, 'after');
    assert.deepEqual(gotBinC[1].payload, { n: 1 });
    await binA.unsubscribe();
    await binB.unsubscribe();
    c.disconnect();
    return { bytes: got.payload.byteLength };
  });

  await step('ack_error_on_oversized_payload', async () => {
    const big = 'x'.repeat(300 * 1024);
    const res = await roomA.send({ type: 'broadcast', event: 'big', payload: { big } });
    assert.notEqual(res, 'ok', 'an over-limit payload is not acknowledged');
    return res;
  });

  await step('presence_sync_join_leave', async () => {
    const lobbyA = a.channel('lobby', { config: { presence: { key: 'alice' } } });
    const lobbyB = b.channel('lobby', { config: { presence: { key: 'bob' } } });
    const joins = [];
    const leaves = [];
    let syncs = 0;
    lobbyB.on('presence', { event: 'sync' }, () => syncs++);
    lobbyB.on('presence', { event: 'join' }, ({ key, newPresences }) => joins.push([key, newPresences]));
    lobbyB.on('presence', { event: 'leave' }, ({ key, leftPresences }) => leaves.push([key, leftPresences]));
    lobbyA.on('presence', { event: 'sync' }, () => {});
    await subscribe(lobbyA);
    await subscribe(lobbyB);
    assert.equal(await lobbyA.track({ name: 'Alice', cursor: 3 }), 'ok');
    await waitFor('bob sees alice join', () => joins.some(([k]) => k === 'alice'));
    const state = lobbyB.presenceState();
    assert.equal(state.alice[0].name, 'Alice');
    assert.ok(state.alice[0].presence_ref, 'phx_ref is renamed presence_ref');
    assert.equal(await lobbyB.track({ name: 'Bob' }), 'ok');
    await waitFor('alice sees bob', () => lobbyA.presenceState().bob !== undefined);
    assert.equal(await lobbyA.untrack(), 'ok');
    await waitFor('bob sees alice leave', () => leaves.some(([k]) => k === 'alice'));
    assert.equal(lobbyB.presenceState().alice, undefined);
    assert.ok(syncs >= 2, `sync events: ${syncs}`);
    await lobbyA.unsubscribe();
    await lobbyB.unsubscribe();
  });

  await step('postgres_changes', async () => {
    const all = [];
    const filtered = [];
    const db = b
      .channel('db')
      .on('postgres_changes', { event: '*', schema: 'public', table: 'agents' }, (p) => all.push(p))
      .on(
        'postgres_changes',
        { event: 'UPDATE', schema: 'public', table: 'agents', filter: 'id=eq.a1' },
        (p) => filtered.push(p),
      );
    await subscribe(db);
    await need('db_writes');
    // The Rust side writes a1 (insert, update, delete) around b2's three changes.
    await waitFor('six changes', () => all.length === 6);
    const others = all.filter((p) => (p.new.id ?? p.old.id) === 'b2');
    assert.deepEqual(others.map((p) => p.eventType), ['INSERT', 'UPDATE', 'DELETE']);
    all.splice(0, all.length, ...all.filter((p) => (p.new.id ?? p.old.id) === 'a1'));
    assert.deepEqual(all.map((p) => p.eventType), ['INSERT', 'UPDATE', 'DELETE']);
    assert.equal(all[0].table, 'agents');
    assert.equal(all[0].schema, 'public');
    assert.deepEqual(all[0].new, { id: 'a1', status: 'idle', score: 1 });
    assert.deepEqual(all[0].old, {});
    assert.deepEqual(all[1].new, { id: 'a1', status: 'active', score: 2 });
    assert.deepEqual(all[1].old, { id: 'a1', status: 'idle', score: 1 });
    assert.deepEqual(all[2].new, {});
    assert.deepEqual(all[2].old, { id: 'a1', status: 'active', score: 2 });
    assert.ok(all[0].commit_timestamp);
    await waitFor('the filtered update', () => filtered.length === 1);
    await sleep(200);
    assert.equal(filtered.length, 1, 'the UPDATE id=eq.a1 binding gets only the update of a1');
    assert.equal(filtered[0].new.status, 'active');
    await db.unsubscribe();
  });

  await step('postgres_changes_refused_off_publication', async () => {
    // Only published tables can be bound: no table (every table), and the
    // auth provider's users table, are refused with the hub's reason.
    const refused = async (name, binding) => {
      const ch = b.channel(name).on('postgres_changes', binding, () => {});
      const err = await new Promise((resolve) => {
        ch.subscribe((status, e) => {
          if (status === 'CHANNEL_ERROR') resolve(e);
        });
      });
      await b.removeChannel(ch);
      return String(err && err.message);
    };
    const all = await refused('db-all', { event: '*', schema: 'public' });
    assert.match(all, /must name a published table/);
    const users = await refused('db-users', { event: '*', schema: 'public', table: 'auth_users' });
    assert.match(users, /never published/);
    const other = await refused('db-other', { event: '*', schema: 'public', table: 'payments' });
    assert.match(other, /not published/);
    return { all, users, other };
  });

  await step('heartbeats_answered', async () => {
    await waitFor('two answered heartbeats', () => heartbeats.filter((s) => s === 'ok').length >= 2, 5000);
    assert.ok(!heartbeats.includes('timeout'), `statuses: ${heartbeats}`);
    return heartbeats.slice(0, 6);
  });

  await step('join_refused_with_bad_token', async () => {
    const c = client();
    await c.setAuth('not-a-valid-jwt');
    const ch = c.channel('secure');
    const err = await new Promise((resolve) => {
      ch.subscribe((status, e) => {
        if (status === 'CHANNEL_ERROR') resolve(e);
      });
    });
    assert.match(String(err && err.message), /access token/);
    c.disconnect();
  });

  await step('token_expiry_closes_channel', async () => {
    const c = client();
    await c.setAuth(await need('short_token'));
    const ch = c.channel('expiring');
    const systems = [];
    ch.on('system', {}, (m) => systems.push(m));
    await subscribe(ch);
    await waitFor('the channel to close at token expiry', () => ch.state === 'closed', 10000);
    assert.ok(ch.statuses.includes('CLOSED'), `statuses: ${ch.statuses}`);
    assert.ok(systems.some((m) => m.status === 'error' && /expired/.test(m.message)), JSON.stringify(systems));
    c.disconnect();
  });

  await step('token_refresh_keeps_channel', async () => {
    const c = client();
    await c.setAuth(await need('short_token'));
    const ch = c.channel('refreshed');
    await subscribe(ch);
    await c.setAuth(TOKEN); // pushes access_token to joined channels
    await sleep(4500); // past the short token's expiry
    assert.equal(ch.state, 'joined');
    c.disconnect();
  });

  await step('reconnect_after_hub_restart', async () => {
    await need('restart');
    await waitFor('a and b to rejoin', () => roomA.state === 'joined' && roomB.state === 'joined' && a.isConnected() && b.isConnected(), 15000);
    const before = gotB.length;
    // Rejoined: broadcasts flow again.
    const res = await roomA.send({ type: 'broadcast', event: 'again', payload: { n: 3 } });
    assert.equal(res, 'ok');
    await waitFor('b receives after restart', () => gotB.length === before + 1, 5000);
    assert.equal(gotB[before].event, 'again');
  });

  a.disconnect();
  b.disconnect();
  console.log(JSON.stringify({ done: true, steps }));
  process.exit(0);
}

main().catch((e) => {
  console.log(JSON.stringify({ step: 'main', ok: false, error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});
