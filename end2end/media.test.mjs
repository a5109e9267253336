// Going live in real Chromium with fake camera and microphone: one person publishes through
// Rally's media relay, another watches; the remote video plays and its bytes keep arriving.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBrowser, mode, screenshotDir, signedIn, startServer } from './support/harness.mjs';

let server;
let browser;

before(async () => {
  // Bob watches Ada's live room as a viewer: new campaigns are public here.
  server = await startServer({ RALLY_DEFAULT_VISIBILITY: 'public' });
  browser = await launchBrowser([
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ]);
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
});

const person = (name, setup) => signedIn(browser, server, name, setup);

const bytesReceived = (page) =>
  page.$eval('.live-room', (el) => Number(el.dataset.bytesReceived));

test(`one person goes live and another sees and hears them (${mode})`, async () => {
  const ada = await person('Ada');
  await ada.page.fill('#new-campaign-id', 'studio');
  await ada.page.fill('#new-campaign-title', 'Studio');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });

  await ada.page.click('.join-live');
  await ada.page.waitForSelector('.live-room[data-phase="in"]');
  await ada.page.waitForSelector('.go-live');
  await ada.page.click('.go-live');
  await ada.page.waitForSelector('.live-room[data-publishing="on"]', { timeout: 15_000 });
  await ada.page.waitForFunction(() => document.querySelector('#local-preview')?.videoWidth > 0);

  const bob = await person('Bob');
  await bob.page.goto(`${server.url}/campaigns/studio`);
  await bob.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  // Before joining, Bob is told who is live — in the room and in the list of people here.
  await bob.page.waitForSelector('.live-now:text("Ada is live.")');
  await bob.page.waitForSelector('.viewer[data-live="true"]:has-text("Ada")');
  assert.equal(await bob.page.locator('.join-live').innerText(), 'Watch');
  await ada.page.waitForSelector('.own-tile figcaption:has-text("LIVE You")');
  await bob.page.click('.join-live');
  await bob.page.waitForSelector('.live-room[data-phase="in"]');
  assert.equal(await bob.page.locator('.go-live').count(), 0, 'a viewer cannot go live');
  await bob.page.waitForSelector('.tile figcaption:text("Ada")', { timeout: 15_000 });
  await bob.page.waitForFunction(() => document.querySelector('.tile video')?.videoWidth > 0, null, {
    timeout: 20_000,
  });
  const size = await bob.page.$eval('.tile video', (v) => [v.videoWidth, v.videoHeight]);

  // inbound-rtp bytesReceived keeps growing (sampled from getStats once a second).
  await bob.page.waitForFunction(() => Number(document.querySelector('.live-room').dataset.bytesReceived) > 0);
  const first = await bytesReceived(bob.page);
  await bob.page.waitForTimeout(2500);
  const second = await bytesReceived(bob.page);
  assert.ok(second > first, `bytes received grew: ${first} -> ${second}`);
  await bob.page.waitForSelector('.live-room:not([data-quality="unknown"])');
  const quality = await bob.page.$eval('.live-room', (el) => el.dataset.quality);
  console.log(`remote video ${size[0]}x${size[1]}, ${first} -> ${second} bytes in 2.5 s, quality ${quality}`);
  await bob.page.screenshot({ path: join(screenshotDir, `live-room-${mode}.png`), fullPage: true });

  // Muting is local and immediate.
  await ada.page.click('.toggle-audio');
  await ada.page.waitForSelector('.toggle-audio:text("Unmute microphone")');
  await ada.page.waitForSelector('.own-tile .muted-mic');

  // Ada stops: Bob's tile goes away.
  await ada.page.click('.stop-live');
  await bob.page.waitForSelector('.nobody-live', { timeout: 15_000 });
  await bob.page.waitForSelector('.event:has-text("Ada stopped being live")');
  assert.match(await ada.page.locator('.events').innerText(), /Ada went live[\s\S]*Ada stopped being live|Ada stopped being live[\s\S]*Ada went live/);
  await ada.page.waitForSelector('.live-room[data-phase="in"] .go-live');

  assert.deepEqual([...ada.errors, ...bob.errors], []);
  await ada.context.close();
  await bob.context.close();
});

test(`a denied camera gets a clear message and nothing breaks (${mode})`, async () => {
  // The browser refuses access, as when the user clicks "Block".
  const carol = await person('Carol', async (page) => {
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
  });
  await carol.page.fill('#new-campaign-id', 'denied');
  await carol.page.fill('#new-campaign-title', 'Denied');
  await carol.page.click('.create-campaign button');
  await carol.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await carol.page.click('.join-live');
  await carol.page.waitForSelector('.go-live');
  await carol.page.click('.go-live');
  await carol.page.waitForSelector('.media-error:text("did not allow the camera or microphone")');
  assert.equal(
    await carol.page.$eval('.live-room', (el) => el.dataset.publishing),
    'off',
  );
  // Still in the room, free to try again.
  await carol.page.waitForSelector('.live-room[data-phase="in"] .go-live');
  assert.deepEqual(carol.errors, []);
  await carol.context.close();
});
