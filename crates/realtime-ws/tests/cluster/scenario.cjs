// Drives a cluster of realtime-ws hubs with the published
// @supabase/realtime-js client. Run by crates/realtime-ws/tests/cluster.rs
// (NODE_PATH points at tests/realtime-js/node_modules), which starts the hub
// processes and passes:
//   NODES     comma-separated hub URLs ws://127.0.0.1:<port>/realtime/v1
//   SCENARIO  "basic" (broadcast, presence, postgres_changes across nodes)
//             or "observe" (watch 100 members of another node join, then
//             leave when that node is killed)
//   TOPIC     the channel name; PG=1 when postgres_changes are to be checked
// One JSON line per step ({"step", "ok"}); {"need": "..."} asks the Rust side
// to act and waits for a line on stdin. A failure prints ok:false and exits 1.
'use strict';

const assert = require('node:assert/strict');
const readline = require('node:readline');
const WebSocket = require('ws');
const { RealtimeClient } = require('@supabase/realtime-js');

const NODES = process.env.NODES.split(',');
const TOPIC = process.env.TOPIC;
const PG = process.env.PG === '1';

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
async function waitFor(what, pred, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(10);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function client(url) {
  return new RealtimeClient(url, {
    params: { apikey: 'anon' },
    transport: WebSocket,
    heartbeatIntervalMs: 5000,
    reconnectAfterMs: () => 200,
  });
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
        reject(new Error(`subscribe: ${status} ${err ? err.message : ''}`));
      }
    });
  });
}

async function step(name, f) {
  try {
    const detail = await f();
    console.log(JSON.stringify({ step: name, ok: true, detail: detail ?? null }));
  } catch (e) {
    console.log(JSON.stringify({ step: name, ok: false, error: String(e && e.stack ? e.stack : e) }));
    process.exit(1);
  }
}

// One client per node, each joined to TOPIC with presence and broadcasts.
async function joinAll(keyOf, opts = {}) {
  const members = [];
  for (let i = 0; i < NODES.length; i++) {
    const c = client(NODES[i]);
    const m = { name: keyOf(i), client: c, got: [], changes: [], leaves: [], joins: [] };
    const ch = c.channel(TOPIC, {
      config: { broadcast: { self: false, ack: true }, presence: { key: m.name } },
    });
    ch.on('broadcast', { event: 'hello' }, (msg) => m.got.push(msg.payload));
    ch.on('presence', { event: 'join' }, ({ key }) => m.joins.push(key));
    ch.on('presence', { event: 'leave' }, ({ key, leftPresences }) => {
      for (let n = 0; n < leftPresences.length; n++) m.leaves.push(key);
    });
    if (opts.pg) {
      ch.on('postgres_changes', { event: '*', schema: 'public', table: 'rt_agents' }, (p) => m.changes.push(p));
    }
    m.channel = ch;
    await subscribe(ch);
    members.push(m);
  }
  return members;
}

const keys = (ch) => Object.keys(ch.presenceState()).sort();

async function basic() {
  let ms;
  await step('join_three_nodes', async () => {
    ms = await joinAll((i) => `client-${i}`, { pg: PG });
  });
  await step('presence_join_across_nodes', async () => {
    for (const m of ms) await m.channel.track({ name: m.name });
    const all = ms.map((m) => m.name).sort();
    for (const m of ms) {
      await waitFor(`${m.name} to see every node's member`, () => keys(m.channel).length === all.length);
      assert.deepEqual(keys(m.channel), all);
    }
  });
  await step('broadcast_across_nodes_once_in_order', async () => {
    const N = 50;
    for (let n = 0; n < N; n++) {
      const r = await ms[0].channel.send({ type: 'broadcast', event: 'hello', payload: { from: 0, n } });
      assert.equal(r, 'ok');
    }
    for (const m of ms.slice(1)) {
      await waitFor(`${m.name} to get ${N} broadcasts`, () => m.got.length >= N);
    }
    // Anything duplicated or echoed would arrive by now.
    await sleep(500);
    assert.equal(ms[0].got.length, 0, 'self: false, so the sender gets nothing (not even through the broker)');
    for (const m of ms.slice(1)) {
      assert.deepEqual(m.got.map((p) => p.n), [...Array(N).keys()], `${m.name}: each once, in order`);
    }
    // And the other way round: node 2 to nodes 0 and 1.
    await ms[2].channel.send({ type: 'broadcast', event: 'hello', payload: { from: 2, n: 0 } });
    await waitFor('node 0 to hear node 2', () => ms[0].got.length === 1);
    await waitFor('node 1 to hear node 2', () => ms[1].got.length === N + 1);
  });
  if (PG) {
    await step('postgres_changes_once_on_every_node', async () => {
      await need('db_write');
      for (const m of ms) {
        await waitFor(`${m.name} to get the insert`, () => m.changes.length >= 1);
      }
      await sleep(500);
      for (const m of ms) {
        assert.equal(m.changes.length, 1, `${m.name}: exactly one change`);
        assert.equal(m.changes[0].eventType, 'INSERT');
        assert.equal(m.changes[0].new.id, 'a1');
      }
    });
  }
  await step('presence_leave_across_nodes', async () => {
    const gone = ms[2];
    await gone.channel.untrack();
    for (const m of ms.slice(0, 2)) {
      await waitFor(`${m.name} to see ${gone.name} leave`, () => m.leaves.includes(gone.name));
      assert.deepEqual(keys(m.channel), ms.slice(0, 2).map((x) => x.name).sort());
    }
    // A whole client going away (socket closed) leaves as well.
    await ms[1].client.removeAllChannels();
    ms[1].client.disconnect();
    await waitFor('client-0 to see client-1 leave', () => ms[0].leaves.includes('client-1'));
    assert.deepEqual(keys(ms[0].channel), ['client-0']);
  });
  console.log(JSON.stringify({ done: true }));
  process.exit(0);
}

// Observers on every node of NODES watch MEMBERS members (tracked on
// another node) join, then leave once that node is killed.
async function observe() {
  const want = Number(process.env.MEMBERS);
  let ms;
  await step('observers_see_the_members', async () => {
    ms = await joinAll((i) => `observer-${i}`);
    for (const m of ms) {
      await waitFor(`${m.name} to see ${want} members`, () => keys(m.channel).length === want, 20000);
    }
    return { members: want };
  });
  await step('leaves_after_the_kill', async () => {
    await need('kill');
    const start = Date.now();
    for (const m of ms) {
      await waitFor(`${m.name} to get ${want} leaves`, () => m.leaves.length >= want, 15000);
    }
    const elapsed = Date.now() - start;
    for (const m of ms) {
      assert.equal(new Set(m.leaves).size, want, `${m.name}: one leave per member`);
      assert.deepEqual(keys(m.channel), []);
    }
    return { elapsed_ms: elapsed };
  });
  console.log(JSON.stringify({ done: true }));
  process.exit(0);
}

(SCENARIO_MAIN => SCENARIO_MAIN())(process.env.SCENARIO === 'observe' ? observe : basic).catch((e) => {
  console.log(JSON.stringify({ step: 'script', ok: false, error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});
