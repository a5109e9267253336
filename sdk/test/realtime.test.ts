// The realtime client against a real Rally server: following, optimistic writes, refusals, and a
// gap-free resume after the network is cut (through a TCP relay the test controls).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect, RallyError, RallyHttp, type CampaignEvent, type ConnectionStatus, type WebSocketConstructor } from '../src/index.js';
import { campaignId, eventually, signIn, sleep, startLink, startServer, type RallyServer } from './support.js';

const WS = WebSocket as unknown as WebSocketConstructor;
let server: RallyServer;
let ada: { token: string; userId: string };
let bo: { token: string; userId: string };
let adaHttp: RallyHttp;
const clients: { close(): void }[] = [];

before(async () => {
  server = await startServer();
  ada = await signIn(server.url, 'Ada');
  bo = await signIn(server.url, 'Bo');
  adaHttp = new RallyHttp({ baseUrl: server.url, token: ada.token });
});

after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
});

function client(token: string, url = server.url, backoff = { baseMs: 50, maxMs: 400 }) {
  const c = connect({ url, token, WebSocket: WS, backoff });
  clients.push(c);
  return c;
}

async function newCampaign(title = 'Spring launch') {
  const id = campaignId();
  await adaHttp.createCampaign({ campaign_id: id, title, visibility: 'public' });
  return id;
}

test('a subscriber sees another client\'s write', async () => {
  const id = await newCampaign();
  const watcher = client(bo.token).campaign(id);
  const writer = client(ada.token).campaign(id);
  const initial = await watcher.ready;
  assert.equal(initial.title, 'Spring launch');
  assert.equal(watcher.role, 'viewer');
  await writer.ready;
  assert.equal(writer.role, 'owner');
  const seen: string[] = [];
  const stop = watcher.subscribe((state) => state && seen.push(state.title));
  await writer.update({ title: 'Spring launch 2027' });
  await eventually(() => watcher.state?.title === 'Spring launch 2027', 'the watcher to see the title');
  assert.equal(watcher.state?.version, 2);
  assert.deepEqual(seen, ['Spring launch', 'Spring launch 2027']);
  stop();
  await writer.mergeConfig('ui_content', { headline: 'Hello', hero: { color: 'red' } });
  await eventually(() => (watcher.state?.config.ui_content as { headline?: string } | undefined)?.headline === 'Hello', 'the headline');
  assert.deepEqual(watcher.state?.config, writer.state?.config);
});

test('a write shows at once, then is confirmed by its ack and its event', async () => {
  const id = await newCampaign();
  const campaign = client(ada.token).campaign(id);
  await campaign.ready;
  const sent = campaign.update({ title: 'Optimistic', status: 'active' });
  // Applied locally before any answer: the shown state changed, the confirmed one did not.
  assert.equal(campaign.state?.title, 'Optimistic');
  assert.equal(campaign.state?.status, 'active');
  assert.equal(campaign.confirmed?.title, 'Spring launch');
  assert.equal(campaign.unsaved, 1);
  const features = campaign.addFeatures(['polls', 'qa']);
  assert.deepEqual(campaign.state?.features, ['polls', 'qa']);
  const ack = await sent;
  assert.equal(ack.unchanged, false);
  assert.equal(ack.version, 2);
  assert.equal((await features).version, 3);
  await eventually(() => campaign.confirmed?.version === 3, 'the events of both writes');
  assert.equal(campaign.confirmed?.title, 'Optimistic');
  assert.deepEqual(campaign.confirmed?.features, ['polls', 'qa']);
  assert.equal(campaign.unsaved, 0);
  assert.deepEqual(campaign.state, campaign.confirmed);
  // What the server holds is what the client shows.
  const got = await adaHttp.getCampaign(id);
  assert.ok(!got.notModified);
  assert.deepEqual(got.campaign, campaign.state);
});

test('a refused write rolls back and rejects with the server\'s code', async () => {
  const id = await newCampaign();
  // A viewer writing: forbidden.
  const viewer = client(bo.token).campaign(id);
  await viewer.ready;
  const shown: string[] = [];
  viewer.subscribe((state) => state && shown.push(state.title));
  const refused = viewer.update({ title: 'Not yours' });
  assert.equal(viewer.state?.title, 'Not yours');
  await assert.rejects(refused, (error: unknown) => error instanceof RallyError && error.code === 'forbidden');
  assert.equal(viewer.state?.title, 'Spring launch');
  assert.deepEqual(shown, ['Spring launch', 'Not yours', 'Spring launch']);
  assert.equal(viewer.unsaved, 0);

  // A stale base_version on a field someone else changed: conflict; the other pending write stays shown.
  const owner = client(ada.token).campaign(id);
  const base = (await owner.ready).version;
  await adaHttp.updateCampaign(id, { updates: { title: 'Changed over HTTP' } });
  await eventually(() => owner.confirmed?.title === 'Changed over HTTP', 'the HTTP change');
  const kept = owner.mergeConfig('ui_content', { headline: 'kept' });
  const stale = owner.update({ title: 'Based on old' }, { baseVersion: base });
  assert.equal(owner.state?.title, 'Based on old');
  const error = await stale.then(
    () => assert.fail('a stale write must be refused'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof RallyError);
  assert.equal(error.code, 'conflict');
  assert.match(error.message, /title/);
  assert.equal(owner.state?.title, 'Changed over HTTP');
  await kept;
  assert.deepEqual(owner.state?.config.ui_content, { headline: 'kept' });
});

test('after the network is cut the client resumes gap-free and sends what was written meanwhile', async () => {
  const link = await startLink(server.url);
  try {
    const id = await newCampaign();
    const c = client(ada.token, link.url, { baseMs: 50, maxMs: 300 });
    const statuses: ConnectionStatus[] = [];
    c.onStatus((s) => statuses.push(s));
    const campaign = c.campaign(id);
    const versions: number[] = [];
    campaign.onEvent((event: CampaignEvent) => versions.push(event.version));
    const resets: string[] = [];
    campaign.resets.on((r) => resets.push(r.reason));
    await campaign.ready;
    await campaign.update({ title: 'before the cut' });
    await eventually(() => campaign.confirmed?.version === 2, 'version 2');

    link.cut();
    await eventually(() => c.status === 'reconnecting', 'the client to notice the cut');
    // Others change the campaign meanwhile, over HTTP straight to the server.
    for (let i = 1; i <= 5; i++) await adaHttp.updateCampaign(id, { updates: { description: `change ${i}` } });
    await adaHttp.changeFeatures(id, { op: 'add', features: ['polls'] });
    await adaHttp.changeConfig(id, { section: 'ui_content', values: { headline: 'while away' } });
    // A write made while disconnected shows at once and is sent after reconnecting.
    const offline = campaign.mergeConfig('ui_content', { subline: 'queued offline' });
    assert.equal((campaign.state?.config.ui_content as { subline?: string }).subline, 'queued offline');
    await sleep(300); // a few refused reconnect attempts
    assert.equal(c.status === 'live', false);

    link.restore();
    const ack = await offline;
    assert.equal(ack.version, 10);
    const server_ = await adaHttp.getCampaign(id);
    assert.ok(!server_.notModified);
    await eventually(() => campaign.confirmed?.version === server_.campaign.version, 'the client to catch up');
    assert.equal(server_.campaign.version, 10);
    assert.deepEqual(campaign.confirmed, server_.campaign);
    assert.deepEqual(campaign.state, server_.campaign);
    // Every version once, in order: 2 before the cut, 3..9 replayed, 10 the queued write.
    assert.deepEqual(versions, [2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(resets, ['initial'], 'resumed from events, not a new snapshot');
    assert.ok(statuses.includes('reconnecting'));
    assert.equal(c.status, 'live');
    assert.ok(link.accepted >= 2, 'reconnected through the relay');
  } finally {
    await link.close();
  }
});

test('a campaign that does not exist fails to subscribe with not_found', async () => {
  const campaign = client(ada.token).campaign(campaignId('missing'));
  await assert.rejects(campaign.ready, (e: unknown) => e instanceof RallyError && e.code === 'not_found');
  assert.equal(campaign.ended?.code, 'not_found');
  await assert.rejects(campaign.update({ title: 'x' }), (e: unknown) => e instanceof RallyError && e.code === 'not_found');
});

test('ping and closing', async () => {
  const c = client(ada.token);
  const time = await c.ping();
  assert.match(time, /^\d{4}-\d\d-\d\dT/);
  c.close();
  assert.equal(c.status, 'closed');
  assert.equal(c.closeReason, 'closed_by_client');
  await assert.rejects(c.ping(), (e: unknown) => e instanceof RallyError && e.code === 'unavailable');
});
