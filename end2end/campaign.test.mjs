// Live campaign editing in real Chromium: two people on one campaign see each other's changes,
// a viewer cannot edit, text the server would refuse stays in the field with the reason, and a
// page that loses its connection says so and catches up when it returns.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBrowser, mode, screenshotDir, signedIn, startServer } from './support/harness.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
});

/** A fresh browser context signed in as `name`, then on `path` once it is live there. */
async function personOn(name, path, setup) {
  const person = await signedIn(browser, server, name, setup);
  if (path) {
    await person.page.goto(server.url + path);
    await person.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  }
  return person;
}

const version = (page) => page.getAttribute('article.campaign', 'data-version').then(Number);

test(`two people edit one campaign live; viewers cannot edit; refused text stays with the reason (${mode})`, async () => {
  const ada = await personOn('Ada');
  await ada.page.fill('#new-campaign-id', 'spring-launch');
  await ada.page.fill('#new-campaign-title', 'Spring launch');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForURL('**/campaigns/spring-launch');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  assert.equal(await ada.page.getAttribute('article.campaign', 'data-role'), 'owner');

  // New campaigns are members-only: to Bob it is as if there were none at this address.
  assert.equal(await ada.page.inputValue('.visibility-select'), 'private');
  const bob = await personOn('Bob');
  const hidden = await bob.page.goto(server.url + '/campaigns/spring-launch');
  assert.equal(hidden.status(), 404);
  assert.match(await bob.page.locator('.missing').innerText(), /no campaign at this address that you can see/);
  assert.equal(await bob.page.locator('.campaign-row').count(), 0);
  // Ada lets everyone see it; Bob opens it as a viewer.
  await ada.page.selectOption('.visibility-select', 'public');
  await ada.page.waitForSelector('.event:has-text("Ada made the campaign public")');
  await bob.page.goto(server.url + '/campaigns/spring-launch');
  await bob.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  assert.ok(await bob.page.locator('.visibility-select').isDisabled(), 'only the owner decides');
  assert.equal(await bob.page.getAttribute('article.campaign', 'data-role'), 'viewer');
  // Presence: both are listed on both pages.
  await ada.page.waitForFunction(() => document.querySelector('.presence-count')?.textContent === '2');
  assert.match(await bob.page.locator('.viewers').innerText(), /Ada[\s\S]*Bob/);

  // Ada's edits appear on Bob's page as she types; no Enter needed.
  await ada.page.fill('.title-input', 'Spring launch 2027');
  await bob.page.waitForSelector('.title-text:text-is("Spring launch 2027")');
  await ada.page.fill('.feature-input', 'live_chat');
  await ada.page.click('.add-feature button');
  await bob.page.waitForSelector('.chip[data-feature="live_chat"]');
  await ada.page.selectOption('.status-select', 'active');
  await bob.page.waitForFunction(() => document.querySelector('.status-select').value === 'active');
  // Settings: pasted as JSON once, then edited in the form.
  await ada.page.click('.config-mode:text("Edit as JSON")');
  await ada.page.fill('.config-input', '{"hero": {"headline": "Spring is here", "show_banner": false}}');
  await ada.page.click('.save-config');
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-headline')?.value === 'Spring is here');
  await bob.page.waitForSelector('.event:has-text("Ada changed the ui_content settings")');
  await ada.page.waitForSelector('.event:has-text("Ada changed the ui_content settings")');
  await bob.page.waitForSelector('.event:has-text("Ada edited the title")');
  assert.equal(await version(bob.page), 6);
  assert.equal(await version(ada.page), 6);
  await ada.page.click('.config-mode:text("Show as a form")');
  await ada.page.fill('#setting-hero-headline', 'Spring is really here');
  await ada.page.check('#setting-hero-show_banner');
  await ada.page.click('.save-config');
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-headline')?.value === 'Spring is really here');
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-show_banner')?.checked === true);
  assert.equal(await version(bob.page), 7);

  // Bob is a viewer: nothing on his page edits, and the page says why.
  assert.equal(await bob.page.locator('.title-input, .description-input').count(), 0);
  assert.equal(await bob.page.$eval('#setting-hero-headline', (el) => el.readOnly), true);
  assert.equal(await bob.page.locator('.new-setting').count(), 0);
  assert.equal(await ada.page.$eval('.title-input', (el) => el.readOnly), false);
  assert.equal(await bob.page.locator('.add-feature').count(), 0);
  assert.equal(await bob.page.locator('.chip-remove').count(), 0);
  assert.equal(await bob.page.locator('.save-config').count(), 0);
  assert.ok(await bob.page.locator('.status-select').isDisabled());
  assert.match(await bob.page.locator('.viewer-hint').innerText(), /can watch/i);
  assert.equal(await bob.page.locator('.remove-section').count(), 0);

  // Cleo, an editor working from a script, removes the settings while Ada is changing them: Ada's
  // page says so in plain words, and keeping hers brings the section back with what she typed.
  const cleo = await fetch(`${server.url}/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ display_name: 'Cleo' }),
  }).then((r) => r.json());
  const invite = await ada.page.request.post(`${server.url}/api/campaigns/spring-launch/invites`, {
    data: { role: 'editor' },
  });
  assert.equal(invite.status(), 201, await invite.text());
  const joined = await fetch(`${server.url}/api/invites/${(await invite.json()).token}/accept`, {
    method: 'POST',
    headers: { authorization: `Bearer ${cleo.token}` },
  });
  assert.equal(joined.status, 200, await joined.text());
  await ada.page.fill('#setting-hero-headline', 'Spring is nearly here');
  const removed = await fetch(`${server.url}/api/campaigns/spring-launch/config`, {
    method: 'POST',
    headers: { authorization: `Bearer ${cleo.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ section: 'ui_content', values: {}, mode: 'remove' }),
  });
  assert.equal(removed.status, 200, await removed.text());
  await ada.page.waitForSelector('.diverged:has-text("Cleo removed this section while you were editing it.")');
  await ada.page.click('.config .keep-mine');
  await ada.page.click('.save-config');
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-headline')?.value === 'Spring is nearly here');
  assert.equal(await ada.page.inputValue('#setting-hero-headline'), 'Spring is nearly here');

  // Ada removes the settings section (asked once more first); it goes for everyone.
  await ada.page.click('.remove-section');
  assert.match(await ada.page.locator('.confirm-remove-section').innerText(), /Remove the ui_content settings for everyone\?/);
  await ada.page.click('.confirm-remove-section .confirm');
  await bob.page.waitForSelector('.event:has-text("Ada removed the ui_content settings")');
  assert.equal(await bob.page.locator('#setting-hero-headline').count(), 0);
  assert.equal(await ada.page.locator('.section-tab').count(), 0);

  // A title the server would refuse (over 200 characters) is not sent: the field keeps it and
  // says why, in plain words, until it is fixed.
  const before = await version(ada.page);
  await ada.page.fill('.title-input', 'x'.repeat(250));
  await ada.page.waitForSelector('.title-field .notice.hold:has-text("Not saved yet")');
  assert.match(await ada.page.locator('.title-field .notice.hold').innerText(), /250 characters/);
  assert.equal(await ada.page.inputValue('.title-input'), 'x'.repeat(250), 'what she typed stays');
  assert.equal(await version(ada.page), before, 'nothing was sent');
  assert.equal(await bob.page.locator('.title-text').innerText(), 'Spring launch 2027');
  await ada.page.fill('.title-input', 'Spring launch 2028');
  await bob.page.waitForSelector('.title-text:text-is("Spring launch 2028")');
  assert.equal(await ada.page.locator('.title-field .notice.hold').count(), 0);

  await ada.page.screenshot({ path: join(screenshotDir, `campaign-owner-${mode}.png`), fullPage: true });
  await bob.page.screenshot({ path: join(screenshotDir, `campaign-viewer-${mode}.png`), fullPage: true });

  // Bob changes his name (same account): everyone sees the new one. Then he signs out.
  await bob.page.click('.user-menu summary');
  await bob.page.fill('#new-display-name', 'Robert');
  await bob.page.click('.rename button');
  await bob.page.waitForSelector('.user:text("Robert")');
  await ada.page.waitForSelector('.viewer:has-text("Robert")');
  await bob.page.waitForSelector('[data-hydrated="true"]');
  await bob.page.click('.user-menu summary');
  await bob.page.click('.sign-out');
  await bob.page.waitForSelector('.sign-in-link');
  assert.equal(await bob.page.locator('.user').count(), 0);
  await ada.page.waitForSelector('.viewer:has-text("Anonymous")');
  // Ada makes it members-only again: the signed-out page stops following it and says so.
  await ada.page.selectOption('.visibility-select', 'private');
  await bob.page.waitForSelector('.notice:has-text("You can no longer see this campaign")');
  await ada.page.waitForFunction(() => document.querySelector('.presence-count')?.textContent === '1');
  assert.deepEqual([...ada.errors, ...bob.errors], []);
  await ada.context.close();
  await bob.context.close();
});

test(`signing out in one tab ends the session in every open tab at once; the menu lists where you are signed in (${mode})`, async () => {
  const ada = await personOn('Ada');
  await ada.page.fill('#new-campaign-id', 'devices');
  await ada.page.fill('#new-campaign-title', 'Devices');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });

  // A second tab of the same browser: the same session.
  const tab = await ada.context.newPage();
  await tab.goto(server.url + '/campaigns/devices');
  await tab.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await tab.click('.user-menu summary');
  await tab.click('.show-devices');
  await tab.waitForSelector('.device');
  assert.equal(await tab.locator('.device').count(), 1);
  assert.match(await tab.locator('.device-name').innerText(), /Chrome on Linux/);
  assert.equal(await tab.locator('.device-seen').innerText(), 'This device');
  assert.equal(await tab.locator('.end-device').count(), 0, 'this device signs out with "Sign out"');
  await tab.screenshot({ path: join(screenshotDir, `devices-menu-${mode}.png`) });

  const started = Date.now();
  await tab.click('.sign-out');
  await tab.waitForSelector('.sign-in-link');
  await ada.page.waitForSelector('.connection[data-status="signed-out"]', { timeout: 2_000 });
  const took = Date.now() - started;
  console.log(`the other tab showed "Signed out" ${took} ms after the click`);
  assert.match(await ada.page.locator('.signed-out').innerText(), /You were signed out/);
  await ada.page.screenshot({ path: join(screenshotDir, `signed-out-${mode}.png`), fullPage: true });
  // Reloading, signed out: the campaign is members-only, so it is not there for a stranger.
  await ada.page.click('.signed-out .reload');
  await ada.page.waitForSelector('.sign-in-link');
  await ada.page.waitForSelector('.missing:has-text("no campaign at this address that you can see")');
  assert.deepEqual(ada.errors, []);
  await ada.context.close();
});

test(`an invited editor who loses the connection queues edits and catches up (${mode})`, async () => {
  const ada = await personOn('Ada');
  await ada.page.fill('#new-campaign-id', 'outage');
  await ada.page.fill('#new-campaign-title', 'Outage drill');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  // The owner picks what a link gives and for how long; the page that opens it says so.
  await ada.page.selectOption('.invite-role', 'viewer');
  await ada.page.selectOption('.invite-days', '1');
  assert.equal(await ada.page.locator('.invite .muted').innerText(), 'Anyone who opens the link can watch for 1 day.');
  await ada.page.click('.create-invite');
  const watchUrl = await ada.page.locator('.invite-link a').getAttribute('href');
  const peek = await ada.context.newPage();
  await peek.goto(watchUrl);
  assert.equal(await peek.locator('h1').innerText(), 'Ada invites you to watch “Outage drill”');
  await peek.close();
  await ada.page.selectOption('.invite-role', 'editor');
  await ada.page.selectOption('.invite-days', '7');
  assert.equal(await ada.page.locator('.invite-link').count(), 0, 'a new choice needs a new link');
  await ada.page.click('.create-invite');
  // The link is whole (origin included), ready to paste into a message, and copies in one click.
  const inviteUrl = await ada.page.locator('.invite-link a').getAttribute('href');
  assert.ok(inviteUrl.startsWith(`${server.url}/invite/`), inviteUrl);
  await ada.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
  await ada.page.click('.copy-invite');
  await ada.page.waitForSelector('.copy-invite:text("Copied")');
  assert.equal(await ada.page.evaluate(() => navigator.clipboard.readText()), inviteUrl);

  // Carol's WebSocket goes through the test, which can cut it and refuse reconnects.
  let cut = false;
  const sockets = [];
  const carol = await personOn('Carol', null, async (page) => {
    await page.routeWebSocket(/\/ws$/, (ws) => {
      if (cut) {
        ws.close({ code: 1011, reason: 'network down (test)' });
        return;
      }
      ws.connectToServer();
      sockets.push(ws);
    });
  });
  await carol.page.goto(inviteUrl);
  assert.equal(await carol.page.locator('h1').innerText(), 'Ada invites you to edit “Outage drill”');
  await carol.page.waitForSelector('[data-hydrated="true"]');
  await carol.page.click('.accept-invite');
  await carol.page.waitForURL('**/campaigns/outage');
  await carol.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  assert.equal(await carol.page.getAttribute('article.campaign', 'data-role'), 'editor');
  await carol.page.waitForSelector('.connection[data-status="connected"]');
  // Ada sees her join, in the activity and among the members, and in the list of links.
  await ada.page.waitForSelector('.event:has-text("Carol accepted an invite as an editor")');
  await ada.page.waitForSelector('.member[data-role="editor"]:has-text("Carol")');
  await ada.page.waitForSelector('.invite-item:has-text("Joined: Carol")');
  assert.deepEqual(
    await ada.page.locator('.invite-item .invite-summary').allInnerTexts(),
    ['Can edit · used once · works until ' + new Date(Date.now() + 7 * 86400e3).toISOString().slice(0, 10),
     'Can watch · used 0 times · works until ' + new Date(Date.now() + 86400e3).toISOString().slice(0, 10)],
  );

  cut = true;
  for (const ws of sockets) await ws.close({ code: 1006, reason: 'cut' }).catch(() => {});
  await carol.page.waitForSelector('.connection[data-status="reconnecting"]', { timeout: 10_000 });

  // Offline, Carol's edit stays in the field and waits to be sent.
  await carol.page.fill('.description-input', 'Written while offline');
  await carol.page.waitForSelector('.connection .queued:has-text("1 change waiting")');
  assert.equal(await carol.page.inputValue('.description-input'), 'Written while offline');

  // Meanwhile Ada changes the title three times.
  for (const [i, title] of ['First change', 'Second change', 'Third change'].entries()) {
    await ada.page.fill('.title-input', title);
    await ada.page.waitForFunction((v) => document.querySelector('article.campaign').dataset.version === String(v), 5 + i);
  }
  assert.notEqual(await carol.page.inputValue('.title-input'), 'Third change');

  cut = false;
  await carol.page.waitForSelector('.connection[data-status="connected"]', { timeout: 20_000 });
  await carol.page.waitForFunction(() => document.querySelector('.title-input').value === 'Third change');
  // Her queued edit went out after reconnecting and reached Ada.
  await ada.page.waitForFunction(() => document.querySelector('.description-input').value === 'Written while offline');
  await carol.page.waitForFunction(() => !document.querySelector('.connection .queued'));
  await carol.page.waitForFunction(
    () => document.querySelector('article.campaign').dataset.version === '8',
  );
  assert.equal(await version(ada.page), 8, 'two links, the join, three titles, the description');
  // Caught up by replaying the missed events, not by reloading the latest version.
  assert.match(await carol.page.locator('.events').innerText(), /Ada edited the title/);
  assert.equal(await carol.page.locator('.notice:has-text("away too long")').count(), 0);
  assert.equal(await carol.page.inputValue('.description-input'), 'Written while offline');
  await carol.page.screenshot({ path: join(screenshotDir, `campaign-reconnected-${mode}.png`), fullPage: true });
  // Ada hands the campaign over to Carol (asked once more first) and stays an owner; only the
  // owner is offered the handover. Carol hands it back.
  await carol.page.waitForSelector('.panel.members .member');
  assert.equal(await carol.page.locator('.hand-over').count(), 0, 'only the owner hands it over');
  await ada.page.click('.member:has-text("Carol") .hand-over');
  assert.match(await ada.page.locator('.confirm-hand-over').innerText(), /Make Carol the owner\? You stay an owner\./);
  await ada.page.locator('.members').screenshot({ path: join(screenshotDir, `campaign-hand-over-${mode}.png`) });
  await ada.page.click('.confirm-hand-over .confirm');
  await ada.page.waitForSelector('.event:has-text("Ada handed the campaign over to Carol")');
  await carol.page.waitForSelector('article.campaign[data-role="owner"]');
  await carol.page.waitForSelector('.member[data-owner="true"]:has-text("Carol")');
  await carol.page.waitForSelector('.member[data-role="owner"]:has-text("Ada") .hand-over');
  assert.equal(await ada.page.locator('.hand-over').count(), 0, 'Ada no longer owns it');
  assert.equal(await ada.page.getAttribute('article.campaign', 'data-role'), 'owner');
  await carol.page.click('.member:has-text("Ada") .hand-over');
  await carol.page.click('.confirm-hand-over .confirm');
  await ada.page.waitForSelector('.member[data-owner="true"]:has-text("Ada")');
  await ada.page.waitForSelector('.event:has-text("Carol handed the campaign over to Ada")');
  // Ada makes Carol a viewer (her page stops offering edits), then removes her: the campaign is
  // members-only, so Carol's page stops following it and says so.
  await ada.page.selectOption('.member:has-text("Carol") .member-role', 'viewer');
  await carol.page.waitForSelector('article.campaign[data-role="viewer"]');
  assert.equal(await carol.page.locator('.title-input').count(), 0);
  await ada.page.click('.member:has-text("Carol") .remove-member');
  await ada.page.waitForSelector('.event:has-text("Ada removed Carol")');
  await carol.page.waitForSelector('.notice:has-text("You can no longer see this campaign")');
  await ada.page.screenshot({ path: join(screenshotDir, `campaign-members-${mode}.png`), fullPage: true });
  assert.deepEqual([...ada.errors, ...carol.errors], []);
  await ada.context.close();
  await carol.context.close();
});

test(`a link for one person lets one person in, and a withdrawn link lets nobody in (${mode})`, async () => {
  const ada = await personOn('Ada');
  await ada.page.fill('#new-campaign-id', 'oneseat');
  await ada.page.fill('#new-campaign-title', 'One seat');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await ada.page.selectOption('.invite-uses', '1');
  assert.equal(await ada.page.locator('.invite .muted').first().innerText(), 'One person who opens the link can edit for 7 days.');
  await ada.page.click('.create-invite');
  const once = await ada.page.locator('.invite-link a').getAttribute('href');
  await ada.page.waitForSelector('.event:has-text("Ada made an invite link to join as an editor (one person)")');

  const bob = await personOn('Bob');
  await bob.page.goto(once);
  assert.match(await bob.page.locator('.invite-page .muted').innerText(), /Only one more person can use it\./);
  await bob.page.waitForSelector('[data-hydrated="true"]');
  await bob.page.click('.accept-invite');
  await bob.page.waitForURL('**/campaigns/oneseat');
  // The start page lists it among Bob's campaigns, saying what he may do there.
  await bob.page.goto(server.url + '/');
  assert.match(
    await bob.page.locator('.your-campaigns [data-campaign="oneseat"]').innerText(),
    /One seat[\s\S]*by Ada · you edit/,
  );
  await ada.page.waitForSelector('.invite-item[data-status="used_up"]:has-text("Joined: Bob")');
  assert.equal(await ada.page.locator('.invite-item[data-status="used_up"] .withdraw-invite').count(), 0);

  const cy = await personOn('Cy');
  await cy.page.goto(once);
  assert.equal(await cy.page.locator('h1').innerText(), 'This invite link does not work');
  assert.match(await cy.page.locator('.invite-page .error').innerText(), /used as many times as it allows/);

  // A link anyone could use, withdrawn: it stops working at once and the list says so.
  await ada.page.selectOption('.invite-uses', '0');
  await ada.page.click('.create-invite');
  const open = await ada.page.locator('.invite-link a').getAttribute('href');
  await ada.page.waitForSelector('.invite-item[data-status="open"]');
  await ada.page.click('.invite-item[data-status="open"] .withdraw-invite');
  await ada.page.waitForSelector('.invite-item[data-status="withdrawn"]');
  await ada.page.waitForSelector('.event:has-text("Ada withdrew an invite link")');
  await cy.page.goto(open);
  assert.match(await cy.page.locator('.invite-page .error').innerText(), /withdrawn by an owner/);
  await ada.page.setViewportSize({ width: 390, height: 844 });
  await ada.page.locator('.invite').screenshot({ path: join(screenshotDir, `campaign-invite-links-390-${mode}.png`) });
  const overflow = await ada.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the invite panel fits 390 px (overflow ${overflow})`);
  assert.deepEqual([...ada.errors, ...bob.errors], []);
  for (const person of [ada, bob, cy]) await person.context.close();
});

test(`whoever's change was kept is told when someone else's was refused (${mode})`, async () => {
  const ada = await personOn('Ada');
  await ada.page.fill('#new-campaign-id', 'decided');
  await ada.page.fill('#new-campaign-title', 'Decided');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await ada.page.click('.create-invite');
  const link = await ada.page.locator('.invite-link a').getAttribute('href');
  const bob = await personOn('Bob');
  await bob.page.goto(link);
  await bob.page.waitForSelector('[data-hydrated="true"]');
  await bob.page.click('.accept-invite');
  await bob.page.waitForURL('**/campaigns/decided');
  await ada.page.selectOption('.status-select', 'active');
  await ada.page.waitForFunction(() => document.querySelector('article.campaign').dataset.version === '4');
  // Bob's script (any client of the protocol) sets the status from the version before Ada's change.
  const code = await bob.page.evaluate(async () => {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
    await new Promise((resolve) => ws.addEventListener('open', resolve, { once: true }));
    const reply = new Promise((resolve) => ws.addEventListener('message', (m) => {
      const frame = JSON.parse(m.data);
      if (frame.request_id === 'late') resolve(frame);
    }));
    ws.send(JSON.stringify({
      type: 'campaign:update:v1:requested', request_id: 'late',
      payload: { campaign_id: 'decided', updates: { status: 'paused' }, base_version: 3 },
    }));
    const frame = await reply;
    ws.close();
    return frame.payload.code;
  });
  assert.equal(code, 'conflict');
  await ada.page.waitForSelector('.notice:has-text("Bob tried to change the status too, but yours came first and stands.")');
  assert.equal(await ada.page.inputValue('.status-select'), 'active');
  assert.deepEqual([...ada.errors, ...bob.errors], []);
  for (const person of [ada, bob]) await person.context.close();
});
