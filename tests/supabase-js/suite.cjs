// Drives `truststream serve` with the published @supabase/supabase-js client,
// exactly as an application would: auth, REST, storage and realtime. Run by
// crates/runtime/tests/supabase_js.rs, which starts the server and passes:
//   SUPABASE_URL               http://127.0.0.1:<port>
//   SUPABASE_ANON_KEY          the anon key
//   SUPABASE_SERVICE_ROLE_KEY  the service-role key
//   DB_KIND                    sqlite | postgres (for messages only)
//   BUCKET                     the bucket to create and use (default `files`)
// The server is configured with the table `todos` (id uuid, user_id text,
// title text, done boolean, created_at timestamp), signed-in users owning
// their rows (owner column `user_id`), `articles` (tags/meta json, body
// text; anon may read) for the JSON and text-search operators, the
// bucket's objects under
// `<user id>/` owned by that user, and `todos` published to realtime.
//
// Each step prints one JSON line {"step", "ok": true} or
// {"step", "ok": false, "error"}; the first failure exits 1 (later steps
// depend on earlier ones). The client is the authority: every check is what
// the same code gets from a real Supabase project.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { createClient } = require('@supabase/supabase-js');

const URL_ = need('SUPABASE_URL');
const ANON = need('SUPABASE_ANON_KEY');
const SERVICE = need('SUPABASE_SERVICE_ROLE_KEY');
const DB_KIND = process.env.DB_KIND || 'sqlite';
const BUCKET = process.env.BUCKET || 'files';
const STEP_TIMEOUT_MS = 15000;
// SUITE_KEEP_GOING=1 (diagnosis only): report every failing step instead of
// stopping at the first; later steps may then fail for an earlier one's sake.
const KEEP_GOING = process.env.SUITE_KEEP_GOING === '1';
let failures = 0;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.log(JSON.stringify({ step: 'env', ok: false, error: `${name} is not set` }));
    process.exit(1);
  }
  return v;
}

function client(key) {
  return createClient(URL_, key, {
    realtime: { transport: WebSocket, heartbeatIntervalMs: 5000 },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(what, promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function describe(err) {
  if (!err) return String(err);
  if (err instanceof Error && err.stack) {
    const extra = {};
    for (const k of ['code', 'status', 'statusCode', 'details', 'hint', 'name']) {
      if (err[k] !== undefined) extra[k] = err[k];
    }
    return `${err.stack}${Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : ''}`;
  }
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

/** The data of a supabase-js result, failing with its error. */
function ok(what, res) {
  if (res.error) {
    throw new Error(`${what}: unexpected error ${describe(res.error)}`);
  }
  return res.data;
}

/** A supabase-js result that must be an error; returns it. */
function refused(what, res) {
  if (!res.error) {
    throw new Error(`${what}: expected an error, got data ${JSON.stringify(res.data)}`);
  }
  return res.error;
}

const passed = [];
async function step(name, f) {
  try {
    const detail = await withTimeout(name, Promise.resolve().then(f), STEP_TIMEOUT_MS);
    console.log(JSON.stringify({ step: name, ok: true, detail: detail ?? null }));
    passed.push(name);
  } catch (e) {
    console.log(JSON.stringify({ step: name, ok: false, db: DB_KIND, error: describe(e) }));
    failures += 1;
    if (!KEEP_GOING) process.exit(1);
  }
}

function subscribe(channel, what) {
  return withTimeout(
    `${what}: subscribe`,
    new Promise((resolve, reject) => {
      channel.subscribe((status, err) => {
        if (status === 'SUBSCRIBED') resolve();
        else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT' || status === 'CLOSED') {
          reject(new Error(`${what}: subscribe ${status} ${err ? describe(err) : ''}`));
        }
      });
    }),
    8000,
  );
}

async function main() {
  const rand = crypto.randomBytes(6).toString('hex');
  const password = `Pw-${rand}-Correct-horse-9`;
  const emailA = `user-a-${rand}@example.com`;
  const emailB = `user-b-${rand}@example.com`;

  const a = client(ANON);
  const b = client(ANON);
  const anon = client(ANON);
  const service = client(SERVICE);
  let userA;
  let userB;

  // ---------------------------------------------------------------- auth
  await step('auth_sign_up', async () => {
    const ra = ok('signUp A', await a.auth.signUp({ email: emailA, password, options: { data: { name: 'A' } } }));
    assert.ok(ra.user, 'signUp A returns the user');
    assert.equal(ra.user.email, emailA);
    assert.match(ra.user.id, /^[0-9a-f-]{36}$/, 'user ids are UUIDs');
    assert.equal(ra.user.user_metadata.name, 'A', 'signUp keeps options.data as user_metadata');
    const rb = ok('signUp B', await b.auth.signUp({ email: emailB, password }));
    assert.ok(rb.user && rb.user.id !== ra.user.id, 'B is another user');
    const again = await anon.auth.signUp({ email: emailA, password });
    // GoTrue: a taken, confirmed email is an error (422 user_already_exists)
    // when autoconfirm is on.
    const e = refused('signUp with a taken email', again);
    assert.equal(e.code, 'user_already_exists', `code ${e.code}`);
  });

  await step('auth_sign_up_validation', async () => {
    // GoTrue: passwords shorter than 6 characters are weak (422 weak_password).
    const weak = refused('signUp with a 3-character password', await anon.auth.signUp({ email: `weak-${rand}@example.com`, password: 'abc' }));
    assert.equal(weak.code, 'weak_password', `code ${weak.code} (${weak.message})`);
    refused('signUp with an invalid email', await anon.auth.signUp({ email: 'not-an-email', password }));
    // Neither made a user: signing in as the weak one fails.
    const si = refused('signIn of the refused signUp', await anon.auth.signInWithPassword({ email: `weak-${rand}@example.com`, password: 'abc' }));
    assert.equal(si.code, 'invalid_credentials', `code ${si.code}`);
  });

  await step('auth_sign_in_with_password', async () => {
    const wrong = refused('wrong password', await a.auth.signInWithPassword({ email: emailA, password: 'nope-nope-nope' }));
    assert.equal(wrong.code, 'invalid_credentials', `code ${wrong.code} (${wrong.message})`);
    assert.equal(wrong.status, 400);
    const ra = ok('signIn A', await a.auth.signInWithPassword({ email: emailA, password }));
    assert.ok(ra.session && ra.session.access_token && ra.session.refresh_token, 'a session');
    assert.equal(ra.session.token_type, 'bearer');
    assert.ok(ra.session.expires_in > 0 && ra.session.expires_at > Date.now() / 1000, 'expiry');
    assert.equal(ra.user.email, emailA);
    userA = ra.user;
    const rb = ok('signIn B', await b.auth.signInWithPassword({ email: emailB, password }));
    userB = rb.user;
    const { data } = await a.auth.getSession();
    assert.equal(data.session.user.id, userA.id, 'getSession holds the signed-in user');
  });

  await step('auth_refresh_session', async () => {
    const before = (await a.auth.getSession()).data.session;
    const r = ok('refreshSession', await a.auth.refreshSession());
    assert.ok(r.session && r.session.access_token, 'a refreshed session');
    assert.notEqual(r.session.refresh_token, before.refresh_token, 'refresh tokens rotate');
    assert.equal(r.user.id, userA.id);
    // A used refresh token cannot be used again (outside GoTrue's reuse
    // interval, 10 s by default, it revokes the family; inside it returns
    // the current session: either way not an error-free new family).
    const reuse = await anon.auth.refreshSession({ refresh_token: 'not-a-refresh-token' });
    refused('refreshSession with a made-up token', reuse);
  });

  await step('auth_get_user', async () => {
    const r = ok('getUser', await a.auth.getUser());
    assert.equal(r.user.id, userA.id);
    assert.equal(r.user.email, emailA);
    assert.equal(r.user.aud, 'authenticated');
    assert.equal(r.user.role, 'authenticated');
    const bad = await anon.auth.getUser('not-a-jwt');
    refused('getUser with a bad token', bad);
  });

  await step('auth_update_user', async () => {
    const r = ok('updateUser', await a.auth.updateUser({ data: { nick: 'ay', n: 2 } }));
    assert.equal(r.user.user_metadata.nick, 'ay');
    assert.equal(r.user.user_metadata.n, 2);
    assert.equal(r.user.user_metadata.name, 'A', 'user_metadata is merged, not replaced');
    const g = ok('getUser after update', await a.auth.getUser());
    assert.equal(g.user.user_metadata.nick, 'ay');
  });

  await step('auth_update_password', async () => {
    const newPassword = `${password}-new`;
    const u = ok('updateUser password', await a.auth.updateUser({ password: newPassword }));
    assert.equal(u.user.id, userA.id);
    const probe = client(ANON);
    const old = refused('signIn with the old password', await probe.auth.signInWithPassword({ email: emailA, password }));
    assert.equal(old.code, 'invalid_credentials', `code ${old.code}`);
    ok('signIn with the new password', await probe.auth.signInWithPassword({ email: emailA, password: newPassword }));
    ok('updateUser password back', await a.auth.updateUser({ password }));
    ok('signIn with the first password again', await probe.auth.signInWithPassword({ email: emailA, password }));
  });

  let revokedAccess;
  await step('auth_sign_out', async () => {
    // scope 'others': A's other sessions end, this one stays (GoTrue: 204).
    const other = client(ANON);
    const o = ok('signIn A in a second client', await other.auth.signInWithPassword({ email: emailA, password }));
    const ro = await a.auth.signOut({ scope: 'others' });
    assert.equal(ro.error, null, `signOut others: ${describe(ro.error)}`);
    assert.ok((await a.auth.getSession()).data.session, 'signOut others keeps this session');
    ok('getUser after signOut others', await a.auth.getUser());
    ok('refreshSession after signOut others', await a.auth.refreshSession());
    refused('refresh of the other session after signOut others', await anon.auth.refreshSession({ refresh_token: o.session.refresh_token }));
    const oe = refused('getUser with the other session\'s access token', await anon.auth.getUser(o.session.access_token));
    assert.equal(oe.name, 'AuthSessionMissingError', `${oe.name} code ${oe.code} status ${oe.status} (${oe.message}): the server should answer 403 session_not_found`);
    ok('getUser B after A signs out others', await b.auth.getUser());
    const refresh = (await a.auth.getSession()).data.session.refresh_token;
    revokedAccess = (await a.auth.getSession()).data.session.access_token;
    const r = await a.auth.signOut();
    assert.equal(r.error, null, `signOut: ${describe(r.error)}`);
    assert.equal((await a.auth.getSession()).data.session, null, 'no session after signOut');
    // signOut (scope global) revokes the user's refresh tokens.
    refused('refresh with a signed-out refresh token', await anon.auth.refreshSession({ refresh_token: refresh }));
    // Sign in again for what follows.
    const again = ok('signIn A again', await a.auth.signInWithPassword({ email: emailA, password }));
    userA = again.user;
  });

  await step('auth_signed_out_session_revoked', async () => {
    // GoTrue checks the access token's session_id on /user: the signed-out
    // session is gone (403 session_not_found) though the JWT is unexpired,
    // which auth-js turns into AuthSessionMissingError (and so clears its
    // session); any other error (403 bad_jwt) it keeps as an AuthApiError.
    const r = await anon.auth.getUser(revokedAccess);
    const e = refused('getUser with a signed-out access token', r);
    assert.equal(e.name, 'AuthSessionMissingError', `${e.name} code ${e.code} status ${e.status} (${e.message}): the server should answer 403 session_not_found`);
  });

  // ---------------------------------------------------------------- rest
  const rows = {};
  await step('rest_insert_select', async () => {
    const data = ok(
      'insert',
      await a
        .from('todos')
        .insert([
          { user_id: userA.id, title: 'alpha', done: false },
          { user_id: userA.id, title: 'beta', done: false },
          { user_id: userA.id, title: 'gamma', done: true },
          { user_id: userA.id, title: 'delta', done: null },
        ])
        .select(),
    );
    assert.equal(data.length, 4, 'insert().select() returns the inserted rows');
    for (const r of data) {
      assert.match(String(r.id), /^[0-9a-f-]{36}$/, 'id defaulted to a random uuid');
      assert.equal(r.user_id, userA.id);
      assert.ok(r.created_at, 'created_at defaulted');
      rows[r.title] = r;
    }
    assert.equal(rows.alpha.done, false);
    assert.equal(rows.gamma.done, true);
    assert.equal(rows.delta.done, null);
    // No .select(): Prefer return=minimal, no body. One object: the column
    // left out takes its default.
    const minimal = await a.from('todos').insert({ user_id: userA.id, title: 'epsilon' });
    assert.equal(minimal.error, null, `insert without select: ${describe(minimal.error)}`);
    assert.equal(minimal.data, null);
    assert.equal(minimal.status, 201);
    const eps = ok('epsilon', await a.from('todos').select('done').eq('title', 'epsilon'));
    assert.deepEqual(eps, [{ done: false }], 'a column left out of one object takes its default');
  });

  await step('rest_filters', async () => {
    const titles = (d) => d.map((r) => r.title).sort();
    assert.deepEqual(titles(ok('eq', await a.from('todos').select('*').eq('title', 'alpha'))), ['alpha']);
    assert.deepEqual(titles(ok('gt', await a.from('todos').select('title').gt('title', 'delta'))), ['epsilon', 'gamma']);
    assert.deepEqual(titles(ok('in', await a.from('todos').select('id,title').in('title', ['alpha', 'beta', 'zeta']))), ['alpha', 'beta']);
    assert.deepEqual(titles(ok('like', await a.from('todos').select().like('title', '%lta'))), ['delta']);
    assert.deepEqual(titles(ok('is null', await a.from('todos').select().is('done', null))), ['delta']);
    assert.deepEqual(titles(ok('is true', await a.from('todos').select().is('done', true))), ['gamma']);
    assert.deepEqual(
      titles(ok('or', await a.from('todos').select().or('title.eq.alpha,done.eq.true'))),
      ['alpha', 'gamma'],
    );
    assert.deepEqual(
      titles(ok('neq + ilike', await a.from('todos').select().neq('title', 'beta').ilike('title', '%A%'))),
      ['alpha', 'delta', 'gamma'],
    );
    const cols = ok('select columns', await a.from('todos').select('title,done').eq('title', 'gamma'));
    assert.deepEqual(cols, [{ title: 'gamma', done: true }], 'only the selected columns');
  });

  await step('rest_more_filters', async () => {
    const titles = (d) => d.map((r) => r.title).sort();
    assert.deepEqual(titles(ok('not is null', await a.from('todos').select('title').not('done', 'is', null))), ['alpha', 'beta', 'epsilon', 'gamma']);
    assert.deepEqual(titles(ok('match', await a.from('todos').select('title').match({ title: 'alpha', done: false }))), ['alpha']);
    assert.deepEqual(titles(ok('filter in', await a.from('todos').select('title').filter('title', 'in', '(alpha,beta)'))), ['alpha', 'beta']);
    assert.deepEqual(titles(ok('gte lte', await a.from('todos').select('title').gte('title', 'beta').lte('title', 'epsilon'))), ['beta', 'delta', 'epsilon']);
    assert.deepEqual(titles(ok('not in', await a.from('todos').select('title').not('title', 'in', '(alpha,beta,gamma)'))), ['delta', 'epsilon']);
    assert.deepEqual(
      titles(ok('or with and', await a.from('todos').select('title').or('title.eq.alpha,and(done.eq.true,title.like.g*)'))),
      ['alpha', 'gamma'],
    );
    const nf = ok('order nullsFirst', await a.from('todos').select('title').order('done', { ascending: true, nullsFirst: true }).order('title'));
    assert.deepEqual(nf.map((r) => r.title), ['delta', 'alpha', 'beta', 'epsilon', 'gamma']);
    const nl = ok('order desc (nulls first by default)', await a.from('todos').select('title').order('done', { ascending: false }).order('title'));
    assert.deepEqual(nl.map((r) => r.title), ['delta', 'gamma', 'alpha', 'beta', 'epsilon']);
  });

  await step('rest_errors', async () => {
    // A missing table is 404 PGRST205 (42P01 before PostgREST 13) for a
    // caller that may see tables; a user may instead be refused outright.
    const t = await service.from('no_such_table').select();
    refused('unknown table', t);
    assert.equal(t.status, 404, `status ${t.status}`);
    assert.ok(['PGRST205', '42P01'].includes(t.error.code), `code ${t.error.code}`);
    const tu = await a.from('no_such_table').select();
    refused('unknown table as a user', tu);
    assert.ok([401, 403, 404].includes(tu.status), `status ${tu.status}`);
    const c = await a.from('todos').select('no_such_column');
    refused('unknown column in select', c);
    assert.equal(c.status, 400, `status ${c.status}`);
    assert.equal(c.error.code, '42703');
    const f = await a.from('todos').select().eq('no_such_column', 1);
    refused('unknown column in a filter', f);
    assert.equal(f.status, 400, `status ${f.status}`);
    const op = await a.from('todos').select().filter('title', 'bogus', 'x');
    refused('unknown operator', op);
    assert.equal(op.status, 400, `status ${op.status}`);
    assert.equal(op.error.code, 'PGRST100');
    const ins = await a.from('todos').insert({ user_id: userA.id, title: 'x', no_such_column: 1 });
    refused('insert with an unknown column', ins);
    assert.equal(ins.status, 400, `status ${ins.status}`);
    assert.ok(['PGRST204', '42703'].includes(ins.error.code), `code ${ins.error.code}`);
    const badUuid = await a.from('todos').select().eq('id', 'not-a-uuid');
    refused('a malformed uuid', badUuid);
    assert.equal(badUuid.status, 400, `status ${badUuid.status}`);
    assert.equal(badUuid.error.code, '22P02');
  });

  await step('rest_order_range_count', async () => {
    const desc = ok('order desc', await a.from('todos').select('title').order('title', { ascending: false }));
    assert.deepEqual(desc.map((r) => r.title), ['gamma', 'epsilon', 'delta', 'beta', 'alpha']);
    const page = await a.from('todos').select('title', { count: 'exact' }).order('title').range(1, 2);
    ok('range with count', page);
    assert.deepEqual(page.data.map((r) => r.title), ['beta', 'delta'], 'range(1, 2)');
    assert.equal(page.count, 5, 'count: exact counts every visible row');
    assert.equal(page.status, 206, 'a partial page with a known count is 206');
    const head = await a.from('todos').select('*', { count: 'exact', head: true }).eq('done', false);
    ok('head count', head);
    assert.equal(head.count, 3, 'head: true returns the count only (alpha, beta, epsilon)');
    assert.equal(head.data, null);
    const limited = ok('limit', await a.from('todos').select('title').order('title').limit(2));
    assert.deepEqual(limited.map((r) => r.title), ['alpha', 'beta']);
  });

  await step('rest_single_maybe_single', async () => {
    const one = ok('single', await a.from('todos').select('*').eq('title', 'alpha').single());
    assert.ok(!Array.isArray(one), 'single() returns an object');
    assert.equal(one.id, rows.alpha.id);
    const none = await a.from('todos').select('*').eq('title', 'no-such-title').maybeSingle();
    assert.equal(none.error, null, `maybeSingle on no rows is no error: ${describe(none.error)}`);
    assert.equal(none.data, null);
    const many = await a.from('todos').select('*').single();
    const e = refused('single() on many rows', many);
    assert.equal(e.code, 'PGRST116', `code ${e.code}`);
    assert.equal(many.status, 406);
  });

  await step('rest_update_upsert_delete', async () => {
    const upd = ok('update', await a.from('todos').update({ done: true }).eq('title', 'beta').select());
    assert.equal(upd.length, 1);
    assert.equal(upd[0].done, true);
    assert.equal(upd[0].id, rows.beta.id);

    const up1 = ok(
      'upsert existing',
      await a.from('todos').upsert({ id: rows.alpha.id, user_id: userA.id, title: 'alpha2', done: true }).select(),
    );
    assert.equal(up1.length, 1);
    assert.equal(up1[0].title, 'alpha2');
    const newId = crypto.randomUUID();
    const up2 = ok('upsert new', await a.from('todos').upsert({ id: newId, user_id: userA.id, title: 'zeta' }).select());
    assert.equal(up2[0].id, newId);
    assert.equal(up2[0].done, false, 'defaults apply to an upserted new row');

    const del = ok('delete', await a.from('todos').delete().eq('title', 'gamma').select());
    assert.equal(del.length, 1, 'delete().select() returns the deleted row');
    const gone = ok('after delete', await a.from('todos').select('id').eq('title', 'gamma'));
    assert.equal(gone.length, 0, 'the row is gone');
    const minimal = await a.from('todos').delete().eq('title', 'epsilon');
    assert.equal(minimal.error, null, `delete without select: ${describe(minimal.error)}`);
    assert.equal(minimal.status, 204);
    const { count } = await a.from('todos').select('*', { count: 'exact', head: true });
    assert.equal(count, 4, 'alpha2, beta, delta, zeta remain');
  });

  await step('rest_upsert_ignore_duplicates', async () => {
    const r = ok(
      'upsert ignoreDuplicates',
      await a.from('todos').upsert({ id: rows.beta.id, user_id: userA.id, title: 'beta-ignored' }, { ignoreDuplicates: true }).select(),
    );
    assert.deepEqual(r, [], 'an ignored duplicate returns no row');
    const beta = ok('beta unchanged', await a.from('todos').select('title').eq('id', rows.beta.id).single());
    assert.equal(beta.title, 'beta');
  });

  await step('rest_bulk_insert_missing_columns', async () => {
    // An array insert sends ?columns= (the union of the keys): a key missing
    // from one object is NULL (PostgREST), unless defaultToNull: false
    // (Prefer: missing=default) asks for the column's default.
    const nulls = ok(
      'bulk insert, defaultToNull (default)',
      await a
        .from('todos')
        .insert([{ user_id: userA.id, title: 'iota' }, { user_id: userA.id, title: 'kappa', done: true }])
        .select('title,done'),
    );
    assert.deepEqual(
      nulls.sort((x, y) => x.title.localeCompare(y.title)),
      [{ title: 'iota', done: null }, { title: 'kappa', done: true }],
    );
    const defaults = ok(
      'bulk insert, defaultToNull: false',
      await a
        .from('todos')
        .insert([{ user_id: userA.id, title: 'lambda' }, { user_id: userA.id, title: 'mu', done: true }], { defaultToNull: false })
        .select('title,done'),
    );
    assert.deepEqual(
      defaults.sort((x, y) => x.title.localeCompare(y.title)),
      [{ title: 'lambda', done: false }, { title: 'mu', done: true }],
    );
    const del = ok('cleanup', await a.from('todos').delete().in('title', ['iota', 'kappa', 'lambda', 'mu']).select('id'));
    assert.equal(del.length, 4);
  });

  await step('rest_extras', async () => {
    const one = ok('created_at', await a.from('todos').select('created_at').eq('title', 'beta').single());
    assert.ok(!Number.isNaN(Date.parse(one.created_at)), `created_at parses as a date: ${one.created_at}`);
    const upd = await a.from('todos').update({ done: true }, { count: 'exact' }).in('title', ['beta', 'delta']);
    assert.equal(upd.error, null, `update with count: ${describe(upd.error)}`);
    assert.equal(upd.count, 2, 'count: exact on an update counts the updated rows');
    const csv = await a.from('todos').select('title,done').eq('title', 'beta').csv();
    assert.equal(csv.error, null, `csv: ${describe(csv.error)}`);
    // PostgREST writes each row's text form: a boolean is `t` (accept `true`).
    const lines = String(csv.data).trim().split('\n');
    assert.equal(lines[0], 'title,done', `csv header: ${csv.data}`);
    assert.ok(['beta,t', 'beta,true'].includes(lines[1]) && lines.length === 2, `csv rows: ${csv.data}`);
    const rpc = await a.rpc('no_such_function', { x: 1 });
    refused('an unknown function', rpc);
    assert.equal(rpc.status, 404, `rpc status ${rpc.status}`);
  });

  await step('rest_other_user_isolated', async () => {
    const seen = ok('B select', await b.from('todos').select('*'));
    assert.equal(seen.length, 0, `B sees none of A's rows (got ${JSON.stringify(seen)})`);
    const byId = ok('B select by id', await b.from('todos').select('*').eq('id', rows.beta.id));
    assert.equal(byId.length, 0);
    const upd = ok('B update of A row', await b.from('todos').update({ title: 'hacked' }).eq('id', rows.beta.id).select());
    assert.equal(upd.length, 0, 'B updates none of A rows');
    const del = ok('B delete of A row', await b.from('todos').delete().eq('id', rows.beta.id).select());
    assert.equal(del.length, 0, 'B deletes none of A rows');
    const still = ok('A still has beta', await a.from('todos').select('title').eq('id', rows.beta.id).single());
    assert.equal(still.title, 'beta');
    // A row claiming to be A's, inserted by B: RLS violation (42501, 403).
    const forged = await b.from('todos').insert({ user_id: userA.id, title: 'forged' }).select();
    refused("B inserting a row owned by A", forged);
    assert.equal(forged.status, 403, `status ${forged.status}`);
    const mine = ok('B insert own', await b.from('todos').insert({ user_id: userB.id, title: 'b-own' }).select());
    assert.equal(mine.length, 1);
    const aView = ok('A select', await a.from('todos').select('title'));
    assert.ok(!aView.some((r) => r.title === 'b-own' || r.title === 'forged'), "A does not see B's rows");
  });

  await step('rest_anon_refused', async () => {
    const r = await anon.from('todos').select('*');
    assert.ok(r.error, `anon select must be refused, got status ${r.status} data ${JSON.stringify(r.data)}`);
    assert.ok(r.data === null || (Array.isArray(r.data) && r.data.length === 0), 'no rows leak');
    assert.ok([401, 403].includes(r.status), `status ${r.status}`);
    const ins = await anon.from('todos').insert({ user_id: userA.id, title: 'anon' }).select();
    refused('anon insert', ins);
    const noKey = await fetch(`${URL_}/rest/v1/todos?select=*`);
    assert.equal(noKey.status, 401, 'no apikey: 401');
    // The service role sees every row.
    const all = ok('service select', await service.from('todos').select('title,user_id'));
    assert.ok(all.some((r) => r.user_id === userA.id) && all.some((r) => r.user_id === userB.id), 'service role sees all');
  });

  await step('rest_embedded_resources', async () => {
    // The application's data, written by its backend (service role).
    const people = ok('seed users', await service.from('users')
      .insert([{ name: `ada-${rand}` }, { name: `bob-${rand}` }]).select('id, name'));
    const ada = people.find((u) => u.name === `ada-${rand}`);
    const bob = people.find((u) => u.name === `bob-${rand}`);
    const posts = ok('seed posts', await service.from('posts').insert([
      { author_id: ada.id, title: `hello-${rand}` },
      { author_id: bob.id, title: `second-${rand}` },
      { author_id: null, title: `orphan-${rand}` },
    ]).select('id, title'));
    const byTitle = (t) => posts.find((p) => p.title === `${t}-${rand}`);
    const hello = byTitle('hello');
    const ids = posts.map((p) => p.id);
    // Comments written by each user (the owner rule: their own only).
    ok('A comments', await a.from('comments').insert([
      { post_id: hello.id, user_id: userA.id, body: 'nice' },
      { post_id: hello.id, user_id: userA.id, body: 'again' },
    ]).select());
    ok('B comments', await b.from('comments')
      .insert({ post_id: hello.id, user_id: userB.id, body: 'from b' }).select());

    // As an application reads a feed: many-to-one and one-to-many.
    const feed = ok('A feed', await a.from('posts')
      .select('id, author:users(name), comments(*)').in('id', ids).order('id'));
    assert.deepEqual(feed.map((p) => p.author && p.author.name), [ada.name, bob.name, null]);
    const helloComments = feed.find((p) => p.id === hello.id).comments;
    assert.deepEqual(helloComments.map((c) => c.body).sort(), ['again', 'nice'],
      `A sees only A's comments embedded (got ${JSON.stringify(helloComments)})`);
    assert.deepEqual(Object.keys(helloComments[0]).sort(), ['body', 'id', 'post_id', 'user_id']);
    assert.deepEqual(feed.find((p) => p.id !== hello.id).comments, []);

    // !inner with a filter on an embedded column; order and limit per parent.
    const inner = ok('inner', await a.from('posts').select('title, comments!inner(body)')
      .in('id', ids).eq('comments.body', 'again'));
    assert.deepEqual(inner, [{ title: hello.title, comments: [{ body: 'again' }] }]);
    const top = ok('referenced order/limit', await a.from('posts').select('title, comments(body)')
      .eq('id', hello.id)
      .order('body', { referencedTable: 'comments', ascending: false })
      .limit(1, { referencedTable: 'comments' }));
    assert.deepEqual(top, [{ title: hello.title, comments: [{ body: 'nice' }] }]);
    const nested = ok('nested', await service.from('comments')
      .select('body, post:posts(title, author:users(name))').eq('post_id', hello.id).order('body'));
    assert.deepEqual(nested.map((c) => [c.body, c.post.title, c.post.author.name]), [
      ['again', hello.title, ada.name], ['from b', hello.title, ada.name], ['nice', hello.title, ada.name],
    ]);
    // single() with an embed, as anon (users and posts are public).
    const one = ok('single', await anon.from('posts').select('title, author:users(name)')
      .eq('id', hello.id).single());
    assert.deepEqual(one, { title: hello.title, author: { name: ada.name } });
    // Anon may not read comments, embedded or not.
    const denied = await anon.from('posts').select('id, comments(body)').eq('id', hello.id);
    refused('anon embedding comments', denied);
    assert.equal(denied.status, 401, `status ${denied.status}`);
    const unknown = await a.from('posts').select('id, nope(*)');
    assert.equal(refused('unknown relationship', unknown).code, 'PGRST200');
  });

  await step('rest_json_and_text_search', async () => {
    // The application's data, written by its backend (service role).
    const rows = ok('seed articles', await service.from('articles').insert([
      { tags: ['rust', 'db'], meta: { lang: 'en', v: 1 }, body: `The lazy dog sleeps ${rand}` },
      { tags: ['js', 'db'], meta: { lang: 'de' }, body: `Cats are jumping ${rand}` },
      { tags: ['go'], meta: {}, body: `a quick fox ${rand}` },
    ]).select('id').order('id'));
    const all = rows.map((r) => r.id);
    // Which of the three rows (0, 1, 2) a filtered read returns.
    const which = async (what, build, client_ = anon) => {
      const data = ok(what, await build(client_.from('articles').select('id').in('id', all)).order('id'));
      return data.map((r) => all.indexOf(r.id));
    };
    assert.deepEqual(await which('contains', (q) => q.contains('tags', ['db'])), [0, 1]);
    assert.deepEqual(await which('contains two', (q) => q.contains('tags', ['db', 'rust'])), [0]);
    assert.deepEqual(await which('contains object', (q) => q.contains('meta', { lang: 'en' })), [0]);
    assert.deepEqual(
      await which('containedBy', (q) => q.containedBy('tags', ['js', 'db', 'go'])), [1, 2]);
    assert.deepEqual(await which('overlaps', (q) => q.overlaps('tags', ['go', 'rust'])), [0, 2]);
    assert.deepEqual(await which('not cs', (q) => q.not('tags', 'cs', '{db}')), [2]);
    assert.deepEqual(await which('or cs', (q) => q.or('tags.cs.{go},meta.cs.{"lang":"de"}')), [1, 2]);
    const wrongType = await anon.from('articles').select('id').contains('body', ['x']);
    assert.equal(wrongType.status, 400);
    assert.equal(refused('cs on a text column', wrongType).code, '42883');

    const hostile = await anon.from('articles').select('id')
      .textSearch('body', 'x', { config: "english');drop table articles;--" });
    assert.equal(hostile.status, 400);
    assert.equal(refused('hostile text-search config', hostile).code, 'PGRST100');
    if (DB_KIND === 'postgres') {
      assert.deepEqual(
        await which('textSearch', (q) => q.textSearch('body', 'jumping & cat', { config: 'english' })), [1]);
      assert.deepEqual(await which('phrase', (q) =>
        q.textSearch('body', 'lazy dog', { type: 'phrase', config: 'english' })), [0]);
      assert.deepEqual(await which('websearch', (q) =>
        q.textSearch('body', 'fox or sleeping', { type: 'websearch', config: 'english' })), [0, 2]);
      assert.deepEqual(await which('plain', (q) =>
        q.textSearch('body', 'quick fox', { type: 'plain' })), [2]);
    } else {
      // No text search on this database: PostgREST's shape, naming it.
      const res = await anon.from('articles').select('id')
        .textSearch('body', 'lazy', { type: 'plain', config: 'english' });
      assert.equal(res.status, 400);
      const err = refused('textSearch without text search', res);
      assert.equal(err.code, '0A000');
      assert.match(err.message, /plfts/);
    }
    assert.equal(ok('intact', await service.from('articles').select('id').in('id', all)).length, 3);
  });

  // ------------------------------------------------------------- storage
  const text = Buffer.from(`hello from ${DB_KIND} ${rand}\n`);
  const path = () => `${userA.id}/hello.txt`;
  const moved = () => `${userA.id}/moved.txt`;
  const bytesOf = async (blob) => Buffer.from(await blob.arrayBuffer());

  await step('storage_create_bucket', async () => {
    const anonTry = await anon.storage.createBucket(`${BUCKET}-anon`, { public: false });
    refused('anon createBucket', anonTry);
    const r = ok('service createBucket', await service.storage.createBucket(BUCKET, { public: false }));
    assert.equal(r.name, BUCKET);
    const info = ok('getBucket', await service.storage.getBucket(BUCKET));
    assert.equal(info.id, BUCKET);
    assert.equal(info.public, false);
  });

  await step('storage_upload_download', async () => {
    const up = ok('upload', await a.storage.from(BUCKET).upload(path(), text, { contentType: 'text/plain' }));
    assert.equal(up.path, path());
    assert.equal(up.fullPath, `${BUCKET}/${path()}`);
    const again = await a.storage.from(BUCKET).upload(path(), text, { contentType: 'text/plain' });
    refused('upload over an existing object without upsert', again);
    const down = ok('download', await a.storage.from(BUCKET).download(path()));
    assert.deepEqual(await bytesOf(down), text, 'downloaded bytes equal the uploaded ones');
    const missing = await a.storage.from(BUCKET).download(`${userA.id}/nope.txt`);
    refused('download of a missing object', missing);
  });

  await step('storage_list', async () => {
    const list = ok('list', await a.storage.from(BUCKET).list(userA.id));
    const names = list.map((o) => o.name);
    assert.deepEqual(names, ['hello.txt'], `list of the folder: ${JSON.stringify(list)}`);
    assert.equal(list[0].metadata.size, text.length, 'metadata.size');
    assert.equal(list[0].metadata.mimetype, 'text/plain', 'metadata.mimetype');
  });

  await step('storage_list_folders_and_search', async () => {
    const root = ok('service list of the root', await service.storage.from(BUCKET).list(''));
    const folder = root.find((o) => o.name === userA.id);
    assert.ok(folder, `the root lists the folder ${userA.id}: ${JSON.stringify(root)}`);
    assert.equal(folder.id, null, 'a folder entry has id null');
    const found = ok('list with search', await a.storage.from(BUCKET).list(userA.id, { search: 'hel' }));
    assert.deepEqual(found.map((o) => o.name), ['hello.txt']);
    const none = ok('list with a search that matches nothing', await a.storage.from(BUCKET).list(userA.id, { search: 'zzz' }));
    assert.deepEqual(none, []);
  });

  await step('storage_signed_url', async () => {
    const s = ok('createSignedUrl', await a.storage.from(BUCKET).createSignedUrl(path(), 60));
    assert.ok(s.signedUrl.startsWith(`${URL_}/storage/v1/object/sign/${BUCKET}/`), s.signedUrl);
    const res = await fetch(s.signedUrl);
    assert.equal(res.status, 200, `GET signed URL: ${res.status}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), text, 'signed URL bytes');
    const tampered = await fetch(s.signedUrl.replace(/token=([^&]*)/, (_, t) => `token=${t.slice(0, -2)}xx`));
    assert.ok(tampered.status >= 400 && tampered.status < 500, `tampered token: ${tampered.status}`);
  });

  await step('storage_more_object_ops', async () => {
    const f = a.storage.from(BUCKET);
    const second = `${userA.id}/second.txt`;
    const copy = `${userA.id}/copy.txt`;
    const signedUp = `${userA.id}/signed-upload.txt`;
    const v1 = Buffer.from('version one');
    const v2 = Buffer.from('version two, longer');
    const v3 = Buffer.from('version three');
    ok('upload', await f.upload(second, v1, { contentType: 'text/plain' }));
    ok('upload with upsert', await f.upload(second, v2, { contentType: 'text/plain', upsert: true }));
    assert.deepEqual(await bytesOf(ok('download after upsert', await f.download(second))), v2);
    ok('update', await f.update(second, v3, { contentType: 'text/plain' }));
    assert.deepEqual(await bytesOf(ok('download after update', await f.download(second))), v3);
    assert.equal((await f.exists(second)).data, true, 'exists');
    const missing = await f.exists(`${userA.id}/missing.txt`);
    assert.equal(missing.data, false, 'exists of a missing object is false (not thrown)');
    const info = ok('info', await f.info(second));
    assert.equal(info.size, v3.length, `info: ${JSON.stringify(info)}`);
    ok('copy', await f.copy(second, copy));
    assert.deepEqual(await bytesOf(ok('download the copy', await f.download(copy))), v3);
    const urls = ok('createSignedUrls', await f.createSignedUrls([second, copy], 60));
    assert.equal(urls.length, 2);
    for (const u of urls) {
      assert.equal(u.error, null, `signed ${u.path}: ${u.error}`);
      const res = await fetch(u.signedUrl);
      assert.equal(res.status, 200, `GET ${u.path}: ${res.status}`);
    }
    const up = ok('createSignedUploadUrl', await f.createSignedUploadUrl(signedUp));
    assert.ok(up.token && up.signedUrl, JSON.stringify(up));
    ok('uploadToSignedUrl', await f.uploadToSignedUrl(signedUp, up.token, v1, { contentType: 'text/plain' }));
    assert.deepEqual(await bytesOf(ok('download the signed upload', await f.download(signedUp))), v1);
    const removed = ok('remove three', await f.remove([second, copy, signedUp]));
    assert.equal(removed.length, 3);
  });

  await step('storage_public_bucket', async () => {
    const pub = `${BUCKET}-pub`;
    ok('create a public bucket', await service.storage.createBucket(pub, { public: true }));
    const body = Buffer.from(`public ${rand}`);
    ok('service upload', await service.storage.from(pub).upload('docs/pub.txt', body, { contentType: 'text/plain' }));
    const { data } = anon.storage.from(pub).getPublicUrl('docs/pub.txt');
    assert.equal(data.publicUrl, `${URL_}/storage/v1/object/public/${pub}/docs/pub.txt`);
    const res = await fetch(data.publicUrl);
    assert.equal(res.status, 200, `GET public URL: ${res.status}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    assert.deepEqual(await bytesOf(ok('anon download from a public bucket', await anon.storage.from(pub).download('docs/pub.txt'))), body);
    refused('A uploading into a public bucket without a policy', await a.storage.from(pub).upload(`${userA.id}/x.txt`, body));
    refused('anon uploading into a public bucket', await anon.storage.from(pub).upload('docs/anon.txt', body));
    const buckets = ok('listBuckets', await service.storage.listBuckets());
    assert.ok(buckets.some((x) => x.id === pub && x.public === true), 'the public bucket is listed');
    refused('deleting a non-empty bucket', await service.storage.deleteBucket(pub));
    ok('emptyBucket', await service.storage.emptyBucket(pub));
    ok('deleteBucket', await service.storage.deleteBucket(pub));
  });

  await step('storage_bucket_limits', async () => {
    const lim = `${BUCKET}-lim`;
    ok('create a limited bucket', await service.storage.createBucket(lim, { public: false, fileSizeLimit: 10, allowedMimeTypes: ['image/png'] }));
    const info = ok('getBucket', await service.storage.getBucket(lim));
    assert.equal(info.file_size_limit, 10, JSON.stringify(info));
    assert.deepEqual(info.allowed_mime_types, ['image/png']);
    refused('an upload over file_size_limit', await service.storage.from(lim).upload('big.png', Buffer.alloc(11), { contentType: 'image/png' }));
    refused('an upload of a MIME type not allowed', await service.storage.from(lim).upload('a.txt', Buffer.from('x'), { contentType: 'text/plain' }));
    ok('an allowed upload', await service.storage.from(lim).upload('ok.png', Buffer.alloc(5), { contentType: 'image/png' }));
    ok('emptyBucket', await service.storage.emptyBucket(lim));
    ok('deleteBucket', await service.storage.deleteBucket(lim));
  });

  await step('storage_other_user_refused', async () => {
    refused("B downloading A's object", await b.storage.from(BUCKET).download(path()));
    refused("B uploading into A's folder", await b.storage.from(BUCKET).upload(`${userA.id}/evil.txt`, Buffer.from('x')));
    refused("B signing A's object", await b.storage.from(BUCKET).createSignedUrl(path(), 60));
    refused("anon downloading A's object", await anon.storage.from(BUCKET).download(path()));
    const bl = await b.storage.from(BUCKET).list(userA.id);
    assert.ok(bl.error || bl.data.length === 0, `B lists none of A's objects: ${JSON.stringify(bl.data)}`);
  });

  await step('storage_move_remove', async () => {
    ok('move', await a.storage.from(BUCKET).move(path(), moved()));
    refused('download of the moved-away key', await a.storage.from(BUCKET).download(path()));
    const down = ok('download moved', await a.storage.from(BUCKET).download(moved()));
    assert.deepEqual(await bytesOf(down), text);
    const removed = ok('remove', await a.storage.from(BUCKET).remove([moved()]));
    assert.equal(removed.length, 1, `remove returns the removed objects: ${JSON.stringify(removed)}`);
    refused('download after remove', await a.storage.from(BUCKET).download(moved()));
    const list = ok('list after remove', await a.storage.from(BUCKET).list(userA.id));
    assert.equal(list.length, 0);
  });

  // ------------------------------------------------------------ realtime
  await step('realtime_broadcast_self', async () => {
    const ch = a.channel(`room-${rand}`, { config: { broadcast: { self: true, ack: true } } });
    const got = [];
    ch.on('broadcast', { event: 'ping' }, (m) => got.push(m));
    await subscribe(ch, 'broadcast');
    const status = await ch.send({ type: 'broadcast', event: 'ping', payload: { n: 1 } });
    assert.equal(status, 'ok', `send acknowledged: ${status}`);
    await waitFor('the broadcast to come back (self: true)', () => got.length > 0);
    assert.deepEqual(got[0].payload, { n: 1 });
    await a.removeChannel(ch);
  });

  await step('realtime_presence', async () => {
    const key = `a-${rand}`;
    const ch = a.channel(`presence-${rand}`, { config: { presence: { key } } });
    let synced = 0;
    ch.on('presence', { event: 'sync' }, () => {
      synced += 1;
    });
    await subscribe(ch, 'presence');
    const t = await ch.track({ who: 'A' });
    assert.equal(t, 'ok', `track: ${t}`);
    await waitFor('presence sync with the tracked key', () => synced > 0 && ch.presenceState()[key]);
    assert.equal(ch.presenceState()[key][0].who, 'A');
    await a.removeChannel(ch);
  });

  await step('realtime_postgres_changes', async () => {
    const got = [];
    const ch = a
      .channel(`db-${rand}`)
      .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => got.push(p));
    await subscribe(ch, 'postgres_changes');
    // B's row is B's: A's subscription must not receive it.
    ok('B insert', await b.from('todos').insert({ user_id: userB.id, title: `b-rt-${rand}` }));
    const title = `rt-${rand}`;
    ok('A insert', await a.from('todos').insert({ user_id: userA.id, title }));
    await waitFor('the INSERT of A row to arrive', () => got.some((p) => p.new && p.new.title === title), 5000);
    const p = got.find((x) => x.new.title === title);
    assert.equal(p.eventType, 'INSERT');
    assert.equal(p.table, 'todos');
    assert.equal(p.new.user_id, userA.id);
    assert.ok(!got.some((x) => x.new && x.new.user_id === userB.id), "A received B's row");
    await a.removeChannel(ch);
  });

  await step('realtime_postgres_changes_update_delete', async () => {
    const row = ok('insert', await a.from('todos').insert({ user_id: userA.id, title: `ud-${rand}` }).select().single());
    const got = [];
    const ch = a
      .channel(`db-ud-${rand}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'todos', filter: `id=eq.${row.id}` }, (p) => got.push(p));
    await subscribe(ch, 'postgres_changes update/delete');
    ok('update', await a.from('todos').update({ title: `ud2-${rand}` }).eq('id', row.id));
    await waitFor('the UPDATE to arrive', () => got.some((p) => p.eventType === 'UPDATE'), 5000);
    const u = got.find((p) => p.eventType === 'UPDATE');
    assert.equal(u.new.title, `ud2-${rand}`);
    assert.equal(u.new.id, row.id);
    ok('delete', await a.from('todos').delete().eq('id', row.id));
    await waitFor('the DELETE to arrive', () => got.some((p) => p.eventType === 'DELETE'), 5000);
    const d = got.find((p) => p.eventType === 'DELETE');
    assert.equal(d.old.id, row.id, 'a DELETE carries the primary key of the old row');
    assert.deepEqual(d.new, {});
    await a.removeChannel(ch);
  });

  await step('realtime_unpublished_table_refused', async () => {
    const ch = a
      .channel(`db-unpub-${rand}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'not_published' }, () => {});
    let failed = null;
    try {
      await subscribe(ch, 'postgres_changes on an unpublished table');
    } catch (e) {
      failed = e;
    }
    assert.ok(failed && /CHANNEL_ERROR/.test(failed.message), `the join is refused: ${failed && failed.message}`);
    await a.removeChannel(ch);
  });

  await step('realtime_token_refresh', async () => {
    const got = [];
    const ch = a
      .channel(`db-refresh-${rand}`)
      .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => got.push(p));
    await subscribe(ch, 'postgres_changes before a token refresh');
    // refreshSession fires TOKEN_REFRESHED: supabase-js sends the new access
    // token to every channel (access_token); the channel stays joined.
    ok('refreshSession', await a.auth.refreshSession());
    await sleep(300);
    assert.equal(ch.state, 'joined', `channel state ${ch.state}`);
    const title = `after-refresh-${rand}`;
    ok('insert', await a.from('todos').insert({ user_id: userA.id, title }));
    await waitFor('the INSERT after the refresh', () => got.some((p) => p.new.title === title), 5000);
    await a.removeChannel(ch);
  });

  // ------------------------------------------------------------- cleanup
  await step('storage_delete_bucket', async () => {
    refused('A deleting the bucket', await a.storage.deleteBucket(BUCKET));
    ok('emptyBucket', await service.storage.emptyBucket(BUCKET));
    ok('deleteBucket', await service.storage.deleteBucket(BUCKET));
  });

  for (const c of [a, b, anon, service]) await c.removeAllChannels();
  if (failures > 0) process.exit(1);
  console.log(JSON.stringify({ done: true, steps: passed }));
  process.exit(0);
}

main().catch((e) => {
  console.log(JSON.stringify({ step: 'main', ok: false, error: describe(e) }));
  process.exit(1);
});
