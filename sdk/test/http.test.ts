// The HTTP client against a real Rally server, with API keys: one a person makes over HTTP, one
// the operator makes with `rally keys create` before the server starts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { RallyError, RallyHttp } from '../src/index.js';
import { campaignId, RALLY_BIN, signIn, startServer, type RallyServer } from './support.js';

let server: RallyServer;
let operatorKey: string;
let person: RallyHttp;
const ids: string[] = [];

before(async () => {
  server = await startServer({
    prepare: (dataDir) => {
      const out = execFileSync(RALLY_BIN, ['--data-dir', dataDir, 'keys', 'create', '--name', 'Ops', '--access', 'write', '--all-campaigns'], { encoding: 'utf8' });
      operatorKey = out.split('\n')[0]!.trim();
    },
  });
  const { token } = await signIn(server.url, 'Ada');
  person = new RallyHttp({ baseUrl: server.url, token });
  const prefix = campaignId('h');
  for (const [n, status] of [[1, 'draft'], [2, 'active'], [3, 'active'], [4, 'draft'], [5, 'active']] as const) {
    const id = `${prefix}-${n}`;
    const created = await person.createCampaign({ campaign_id: id, title: `Campaign ${n}`, status, visibility: 'private' });
    assert.equal(created.role, 'owner');
    assert.equal(created.etag, 1);
    ids.push(id);
  }
});

after(async () => {
  await server?.stop();
});

test('a key lists what it reaches, page by page through the Link header', async () => {
  const { key, token } = await person.createKey({ name: 'CMS', access: 'write', campaigns: ids.slice(0, 4) });
  assert.match(token, /^rk_[0-9a-f]{12}_[0-9a-f]{64}$/);
  assert.equal(key.name, 'CMS');
  const cms = new RallyHttp({ baseUrl: server.url, token });
  const pages: string[][] = [];
  for await (const page of cms.pages({ limit: 3 })) pages.push(page.map((c) => c.id));
  assert.deepEqual(pages, [ids.slice(0, 3), ids.slice(3, 4)]);
  assert.deepEqual((await cms.listCampaigns({ limit: 1 })).map((c) => c.id), ids.slice(0, 4));
  assert.deepEqual((await cms.listCampaigns({ status: 'active' })).map((c) => c.id), [ids[1], ids[2]]);
  assert.deepEqual((await cms.listCampaigns({ after: ids[1] })).map((c) => c.id), ids.slice(2, 4));
  const first = await cms.listPage({ limit: 2, visibility: 'private' });
  assert.deepEqual(first.campaigns.map((c) => c.id), ids.slice(0, 2));
  assert.ok(first.next?.startsWith('/api/campaigns?'), first.next);
  // The operator's key reaches every campaign.
  const ops = new RallyHttp({ baseUrl: server.url, token: operatorKey });
  assert.deepEqual((await ops.listCampaigns({ limit: 2 })).map((c) => c.id), ids);
  // Keys are listed to the person who made them, never with a token.
  const listed = await person.listKeys({ campaign: ids[0] });
  assert.deepEqual(listed.map((k) => k.id), [key.id]);
  // A campaign the key does not name: 403 forbidden, as a typed error.
  await assert.rejects(cms.getCampaign(ids[4]!), (e: unknown) => e instanceof RallyError && e.code === 'forbidden' && e.status === 403);
  // Keys are for systems: the key may not make keys.
  await assert.rejects(cms.createKey({ name: 'x', access: 'read', campaigns: [ids[0]!] }), (e: unknown) => e instanceof RallyError && e.code === 'forbidden');
});

test('get answers 304 for the current version and 200 after a change', async () => {
  const { token } = await person.createKey({ name: 'Reader', access: 'read', campaigns: [ids[0]!] });
  const reader = new RallyHttp({ baseUrl: server.url, token });
  const got = await reader.getCampaign(ids[0]!);
  assert.ok(!got.notModified);
  assert.equal(got.role, 'viewer');
  assert.equal(got.etag, got.campaign.version);
  const again = await reader.getCampaign(ids[0]!, { ifNoneMatch: got.campaign.version });
  assert.deepEqual(again, { notModified: true, etag: got.campaign.version });
  await person.updateCampaign(ids[0]!, { updates: { description: 'changed' } });
  const changed = await reader.getCampaign(ids[0]!, { ifNoneMatch: got.campaign.version });
  assert.ok(!changed.notModified);
  assert.equal(changed.campaign.description, 'changed');
  assert.equal(changed.etag, got.campaign.version + 1);
  // A read key may not write.
  await assert.rejects(reader.updateCampaign(ids[0]!, { updates: { title: 'no' } }), (e: unknown) => e instanceof RallyError && e.code === 'forbidden' && e.status === 403);
});

test('a named write with If-Match applies once however often it is sent', async () => {
  const { token } = await person.createKey({ name: 'Scheduler', access: 'write', campaigns: [ids[1]!] });
  const cms = new RallyHttp({ baseUrl: server.url, token });
  const id = ids[1]!;
  const start = await cms.getCampaign(id);
  assert.ok(!start.notModified);
  const v = start.campaign.version;
  const options = { ifMatch: v, idempotencyKey: 'launch-2027-01' };
  const first = await cms.updateCampaign(id, { updates: { status: 'paused' } }, options);
  assert.deepEqual([first.version, first.unchanged, first.etag], [v + 1, false, v + 1]);
  // Someone else changes the campaign; the retry still lands nowhere new.
  await person.changeConfig(id, { section: 'ui_content', values: { headline: 'Hi' } });
  const retry = await cms.updateCampaign(id, { updates: { status: 'paused' } }, options);
  assert.deepEqual([retry.version, retry.unchanged, retry.etag], [v + 1, true, v + 1]);
  const now = await cms.getCampaign(id);
  assert.ok(!now.notModified);
  assert.equal(now.campaign.version, v + 2, 'the write applied once');
  assert.equal(now.campaign.status, 'paused');
  assert.equal(now.campaign.updated_by.display_name, 'Ada');
  // The same key with another body: invalid.
  await assert.rejects(cms.updateCampaign(id, { updates: { status: 'ended' } }, options), (e: unknown) => e instanceof RallyError && e.code === 'invalid' && e.status === 400);
  // A stale If-Match on a field changed since: 409 conflict.
  await assert.rejects(
    cms.changeConfig(id, { section: 'ui_content', values: { headline: 'Mine' } }, { ifMatch: v }),
    (e: unknown) => e instanceof RallyError && e.code === 'conflict' && e.status === 409,
  );
  // Features over HTTP, and no base at all with If-Match: *.
  const features = await cms.changeFeatures(id, { op: 'add', features: ['polls'] }, { ifMatch: '*' });
  assert.equal(features.version, v + 3);
});

test('history: pages of the log, a past version, a diff, and a revert that lands as a new version', async () => {
  const id = ids[2]!;
  const start = await person.getCampaign(id);
  assert.ok(!start.notModified);
  const v = start.campaign.version;
  await person.changeConfig(id, { section: 'ui_content', values: { headline: 'Good' } });
  await person.changeConfig(id, { section: 'ui_content', values: { headline: 'Oops' } });
  const page = await person.history(id, { limit: 2, field: 'config' });
  assert.deepEqual(page.entries.map((e) => e.version), [v + 2, v + 1]);
  assert.equal(page.entries[0]!.summary, 'changed the ui_content settings');
  const good = await person.version(id, v + 1);
  assert.equal((good.config.ui_content as { headline: string }).headline, 'Good');
  const diff = await person.diff(id, v + 1, v + 2);
  assert.deepEqual(diff.fields.map((f) => f.field), ['config.ui_content']);
  const reverted = await person.revert(id, { to_version: v + 1, fields: ['config.ui_content'] }, { ifMatch: v + 2 });
  assert.equal(reverted.version, v + 3);
  const now = await person.getCampaign(id);
  assert.ok(!now.notModified);
  assert.deepEqual(now.campaign.config, good.config);
  const [last] = (await person.history(id, { limit: 1 })).entries;
  assert.equal(last!.change.kind, 'revert');
  await assert.rejects(person.version(id, 10_000), (e: unknown) => e instanceof RallyError && e.code === 'not_found' && e.status === 404);
});

test('errors carry the server\'s code, message and status', async () => {
  await assert.rejects(person.getCampaign('does-not-exist'), (e: unknown) => e instanceof RallyError && e.code === 'not_found' && e.status === 404 && /does-not-exist/.test(e.message));
  await assert.rejects(person.createCampaign({ campaign_id: ids[0]!, title: 'dup' }), (e: unknown) => e instanceof RallyError && e.code === 'conflict');
  const anonymous = new RallyHttp({ baseUrl: server.url });
  await assert.rejects(anonymous.updateCampaign(ids[0]!, { updates: { title: 'x' } }), (e: unknown) => e instanceof RallyError && e.code === 'unauthorized' && e.status === 401);
  const bad = new RallyHttp({ baseUrl: server.url, token: 'rk_000000000000_' + '0'.repeat(64) });
  await assert.rejects(bad.listCampaigns(), (e: unknown) => e instanceof RallyError && e.code === 'unauthorized');
});
