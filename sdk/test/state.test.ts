// Table-driven tests of the pure logic: text edits, merge patch, applying changes and events,
// write effects and clashes, the edit queue, backoff, and the HTTP header parsers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyChange,
  applyEvent,
  applyTextEdit,
  backoffDelay,
  clashesWith,
  EditQueue,
  mergePatch,
  mergePatchBetween,
  nextLink,
  parseEtag,
  patchesOverlap,
  RallyError,
  textLength,
  VersionGapError,
  websocketUrl,
  writeEffect,
  type CampaignEvent,
  type CampaignState,
  type Change,
  type Write,
} from '../src/index.js';

const ada = { user_id: 'u1', display_name: 'Ada' };

function state(version = 3, extra: Partial<CampaignState> = {}): CampaignState {
  return {
    id: 'c',
    title: 'Launch',
    description: '',
    status: 'draft',
    visibility: 'private',
    features: ['chat'],
    config: {},
    members: {},
    version,
    created_at: '2026-01-01T00:00:00.000000000Z',
    created_by: ada,
    updated_at: '2026-01-01T00:00:00.000000000Z',
    updated_by: ada,
    ...extra,
  };
}

test('text edits apply in Unicode scalar values (rows from app/src/model/text.rs)', () => {
  const rows: [string, (number | string)[], string | RegExp][] = [
    ['hello', [5, ' world'], 'hello world'],
    ['hello', ['oh, ', 5], 'oh, hello'],
    ['hello', [1, -3, 1], 'ho'],
    ['héllo ✓', [1, 'e', -1, 5], 'hello ✓'],
    ['hello', [4], /5/],
    ['', [], ''],
    // An astral character is one character, though two UTF-16 units.
    ['a😀b', [1, -1, 'x', 1], 'axb'],
    ['😀😀', [1, '!', 1], '😀!😀'],
    // e + combining accent is two characters.
    ['e\u0301', [1, -1], 'e'],
    ['abc', [2], /3/],
    ['abc', [4], /3/],
    ['abc', [0, 3], /non-zero/],
    ['abc', [3, ''], /""/],
  ];
  for (const [text, edit, expected] of rows) {
    if (typeof expected === 'string') {
      assert.equal(applyTextEdit(text, edit), expected, `${JSON.stringify(text)} ${JSON.stringify(edit)}`);
    } else {
      assert.throws(() => applyTextEdit(text, edit), (e: unknown) => e instanceof RallyError && e.code === 'invalid' && expected.test(e.message));
    }
  }
  assert.equal(textLength('a😀b'), 3);
  assert.equal('a😀b'.length, 4);
});

test('merge patch follows RFC 7396 and never mutates its inputs', () => {
  const target = { title: 'Goodbye!', author: { givenName: 'John', familyName: 'Doe' }, tags: ['example', 'sample'], content: 'x' };
  const patch = { title: 'Hello!', phoneNumber: '+01-123-456-7890', author: { familyName: null }, tags: ['example'] };
  const frozen = JSON.stringify(target);
  assert.deepEqual(mergePatch(target, patch), {
    title: 'Hello!',
    author: { givenName: 'John' },
    tags: ['example'],
    content: 'x',
    phoneNumber: '+01-123-456-7890',
  });
  assert.equal(JSON.stringify(target), frozen);
  const rows: [object, object, object][] = [
    [{ a: 1 }, { a: { b: null, c: 2 } }, { a: { c: 2 } }],
    [{ a: { b: 1 } }, { a: null }, {}],
    [{}, { a: {} }, { a: {} }],
    [{ a: [1] }, { a: { x: 1 } }, { a: { x: 1 } }],
  ];
  for (const [t, p, expected] of rows) assert.deepEqual(mergePatch(t as never, p as never), expected);
  const base = { hero: { title: 'A', image: 'x.png' }, footer: 'f', old: 1 };
  const next = { hero: { title: 'B', image: 'x.png' }, footer: 'f', new: [1] };
  const between = mergePatchBetween(base, next);
  assert.deepEqual(between, { hero: { title: 'B' }, old: null, new: [1] });
  assert.deepEqual(mergePatch(base, between), next);
});

test('applyChange: every change kind, table-driven', () => {
  const s = state(3, { config: { ui: { a: 1, b: { c: 2 } } }, members: { u2: { display_name: 'Bo', role: 'editor' } } });
  const rows: [string, Change, (r: CampaignState) => void][] = [
    ['fields', { kind: 'fields', updates: { title: 'New', status: 'active' } }, (r) => {
      assert.equal(r.title, 'New');
      assert.equal(r.status, 'active');
      assert.equal(r.description, '');
    }],
    ['features', { kind: 'features', added: ['a', 'polls'], removed: ['chat'] }, (r) => assert.deepEqual(r.features, ['a', 'polls'])],
    ['config merge', { kind: 'config', section: 'ui', mode: 'merge', values: { b: { c: null, d: 3 } } }, (r) =>
      assert.deepEqual(r.config.ui, { a: 1, b: { d: 3 } })],
    ['config merge creates', { kind: 'config', section: 'new_one', mode: 'merge', values: { x: 1 } }, (r) =>
      assert.deepEqual(r.config.new_one, { x: 1 })],
    ['config replace', { kind: 'config', section: 'ui', mode: 'replace', values: { z: true } }, (r) => assert.deepEqual(r.config.ui, { z: true })],
    ['config remove', { kind: 'config', section: 'ui', mode: 'remove', values: {} }, (r) => assert.equal(r.config.ui, undefined)],
    ['text', { kind: 'text', field: 'title', edit: [6, ' 2027'], edit_id: 'e1' }, (r) => assert.equal(r.title, 'Launch 2027')],
    ['member joins', { kind: 'member', member: { user_id: 'u3', display_name: 'Cy' }, role: 'viewer' }, (r) =>
      assert.deepEqual(r.members?.u3, { display_name: 'Cy', role: 'viewer' })],
    ['member removed', { kind: 'member', member: { user_id: 'u2', display_name: 'Bo' }, role: null }, (r) => assert.equal(r.members?.u2, undefined)],
    ['handover', { kind: 'handover', from: ada, to: { user_id: 'u2', display_name: 'Bo' } }, (r) => {
      assert.deepEqual(r.handed_to, { user_id: 'u2', display_name: 'Bo' });
      assert.equal(r.members?.u2, undefined);
      assert.deepEqual(r.members?.u1, { display_name: 'Ada', role: 'owner' });
    }],
    ['invite', { kind: 'invite', terms: { id: 'i1', role: 'editor', expires_at: '2026-01-02T00:00:00.000000000Z' } } as Change, (r) => assert.deepEqual(r, s)],
    ['invite withdrawn', { kind: 'invite_withdrawn', id: 'i1' }, (r) => assert.deepEqual(r, s)],
  ];
  const before = JSON.stringify(s);
  for (const [name, change, check] of rows) {
    const result = applyChange(s, change);
    check(result);
    assert.equal(result.version, 3, name);
    assert.equal(JSON.stringify(s), before, `${name} must not mutate`);
  }
  assert.throws(() => applyChange(s, { kind: 'created', state: s }), RallyError);
  assert.throws(() => applyChange(s, { kind: 'text', field: 'title', edit: [3], edit_id: 'e' }), /6 characters|3 characters/);
});

test('applyEvent moves exactly one version and stamps who changed it', () => {
  const s = state(3);
  const event = (version: number, campaign_id = 'c'): CampaignEvent => ({
    campaign_id,
    version,
    event_id: '0187b7f1c2a3d4e5-9f3a01c2-0000002a',
    changed_by: { user_id: 'u9', display_name: 'Zed' },
    changed_at: '2026-02-02T00:00:00.000000000Z',
    change: { kind: 'fields', updates: { title: `t${version}` } },
  });
  const next = applyEvent(s, event(4));
  assert.equal(next.version, 4);
  assert.equal(next.title, 't4');
  assert.equal(next.updated_at, '2026-02-02T00:00:00.000000000Z');
  assert.deepEqual(next.updated_by, { user_id: 'u9', display_name: 'Zed' });
  for (const v of [3, 5, 10]) assert.throws(() => applyEvent(s, event(v)), VersionGapError);
  assert.throws(() => applyEvent(s, event(4, 'other')), /campaign other/);
});

test('writeEffect reduces a write to its effective change, or refuses it as the server would', () => {
  const s = state(3, { config: { ui: { a: 1 } } });
  const w = (kind: Write['kind'], request: object) => ({ kind, request: { campaign_id: 'c', ...request } }) as Write;
  const rows: [string, Write, Change | null | string][] = [
    ['title', w('update', { updates: { title: 'X', status: 'draft' } }), { kind: 'fields', updates: { title: 'X' } }],
    ['same title', w('update', { updates: { title: 'Launch' } }), null],
    ['empty update', w('update', { updates: {} }), 'invalid'],
    ['blank title', w('update', { updates: { title: '  ' } }), 'invalid'],
    ['long title', w('update', { updates: { title: 'x'.repeat(201) } }), 'too_large'],
    ['200 emoji title fits', w('update', { updates: { title: '😀'.repeat(200) } }), { kind: 'fields', updates: { title: '😀'.repeat(200) } }],
    ['control char', w('update', { updates: { title: 'a\u0007' } }), 'invalid'],
    ['cr in description', w('update', { updates: { description: 'a\r\nb' } }), 'invalid'],
    ['add', w('feature', { op: 'add', features: ['polls', 'chat'] }), { kind: 'features', added: ['polls'], removed: [] }],
    ['add present', w('feature', { op: 'add', features: ['chat'] }), null],
    ['remove', w('feature', { op: 'remove', features: ['chat', 'qa'] }), { kind: 'features', added: [], removed: ['chat'] }],
    ['set', w('feature', { op: 'set', features: ['b', 'a'] }), { kind: 'features', added: ['a', 'b'], removed: ['chat'] }],
    ['bad feature', w('feature', { op: 'add', features: ['Chat'] }), 'invalid'],
    ['too many features', w('feature', { op: 'add', features: Array.from({ length: 64 }, (_, i) => `f${i}`) }), 'too_large'],
    ['merge', w('config', { section: 'ui', values: { b: 2 }, mode: 'merge' }), { kind: 'config', section: 'ui', mode: 'merge', values: { b: 2 } }],
    ['merge no-op', w('config', { section: 'ui', values: { a: 1 } }), null],
    ['remove missing', w('config', { section: 'nope', values: {}, mode: 'remove' }), null],
    ['remove with values', w('config', { section: 'ui', values: { a: 1 }, mode: 'remove' }), 'invalid'],
    ['bad section', w('config', { section: 'UI', values: {} }), 'invalid'],
    ['section too big', w('config', { section: 'ui', values: { big: 'x'.repeat(16_400) } }), 'too_large'],
    ['8 levels fit', w('config', { section: 'ui', values: { a: { b: { c: { d: { e: { f: { g: { h: 1 } } } } } } } } }), { kind: 'config', section: 'ui', mode: 'merge', values: { a: { b: { c: { d: { e: { f: { g: { h: 1 } } } } } } } } }],
    ['9 levels', w('config', { section: 'ui', values: { a: { b: { c: { d: { e: { f: { g: { h: { i: 1 } } } } } } } } } }), 'too_large'],
  ];
  for (const [name, write, expected] of rows) {
    if (typeof expected === 'string') {
      assert.throws(() => writeEffect(write, s), (e: unknown) => e instanceof RallyError && e.code === expected, name);
    } else {
      assert.deepEqual(writeEffect(write, s), expected, name);
    }
  }
});

test('clashes follow the merging table of docs/protocol.md', () => {
  const update = (updates: object): Write => ({ kind: 'update', request: { campaign_id: 'c', updates } });
  const feature = (op: 'add' | 'remove' | 'set', features: string[]): Write => ({ kind: 'feature', request: { campaign_id: 'c', op, features } });
  const config = (values: object, mode: 'merge' | 'replace' | 'remove' = 'merge', section = 'ui'): Write => ({
    kind: 'config',
    request: { campaign_id: 'c', section, values: values as never, mode },
  });
  const rows: [string, Write, Change, boolean][] = [
    ['same field', update({ title: 'a' }), { kind: 'fields', updates: { title: 'b' } }, true],
    ['other field', update({ title: 'a' }), { kind: 'fields', updates: { status: 'active' } }, false],
    ['typed into', update({ description: 'a' }), { kind: 'text', field: 'description', edit: ['x'], edit_id: 'e' }, true],
    ['same feature', feature('add', ['polls']), { kind: 'features', added: [], removed: ['polls'] }, true],
    ['other feature', feature('add', ['polls']), { kind: 'features', added: ['qa'], removed: [] }, false],
    ['set vs any', feature('set', ['polls']), { kind: 'features', added: ['qa'], removed: [] }, true],
    ['disjoint paths', config({ hero: { title: 1 } }), { kind: 'config', section: 'ui', mode: 'merge', values: { hero: { image: 2 } } }, false],
    ['null covers all', config({ hero: { title: 1 } }), { kind: 'config', section: 'ui', mode: 'merge', values: { hero: null } }, true],
    ['other section', config({ a: 1 }), { kind: 'config', section: 'other', mode: 'replace', values: {} }, false],
    ['replace vs merge', config({ a: 1 }, 'replace'), { kind: 'config', section: 'ui', mode: 'merge', values: { z: 1 } }, true],
    ['fields vs config', config({ a: 1 }), { kind: 'fields', updates: { title: 'x' } }, false],
    ['created', update({ title: 'a' }), { kind: 'created', state: state() }, true],
  ];
  for (const [name, write, change, expected] of rows) assert.equal(clashesWith(write, change), expected, name);
  assert.equal(patchesOverlap({ a: { b: 1 } }, { a: { b: { c: 2 } } }), true);
  assert.equal(patchesOverlap({ a: {} }, { a: { b: 1 } }), true);
  assert.equal(patchesOverlap({ a: 1 }, { b: 1 }), false);
});

// The EditQueue rows mirror app/src/client/edits.rs's tests.
const add = (f: string): Write => ({ kind: 'feature', request: { campaign_id: 'c', op: 'add', features: [f] } });
const status = (s: 'active' | 'paused'): Write => ({ kind: 'update', request: { campaign_id: 'c', updates: { status: s } } });
const sent = (out: { number: number; write: Write }[]) => out.map((o) => [o.number, o.write.request.base_version]);

test('edit queue: features of different names go out at once on the same base', () => {
  const q = new EditQueue();
  const s = state(5, { features: [] });
  const all = [q.submit(add('live_chat'), s), q.submit(add('polls'), s), q.submit(add('qa'), s)].flatMap((r) => sent(r.send));
  assert.deepEqual(all, [[1, 5], [2, 5], [3, 5]]);
  assert.equal(q.overlay(s).features.length, 3);
  assert.equal(q.unsaved(), 3);
});

test('edit queue: own accepted versions advance the base, but not over a gap', () => {
  const q = new EditQueue();
  const s = state(5);
  q.submit(add('live_chat'), s);
  q.accepted(1, 6, false, s);
  assert.equal(q.base(s), 6);
  assert.deepEqual(sent(q.submit(status('active'), s).send), [[2, 6]]);
  q.accepted(2, 8, false, s);
  assert.equal(q.base(s), 6);
  q.confirmed(state(8));
  assert.equal(q.size, 0);
});

test('edit queue: a write that clashes with an unsettled one waits for it', () => {
  const q = new EditQueue();
  const s = state(5);
  assert.deepEqual(sent(q.submit(status('active'), s).send), [[1, 5]]);
  assert.deepEqual(sent(q.submit(status('paused'), s).send), [], 'same field: waits');
  assert.deepEqual(sent(q.submit(add('qa'), s).send), [[3, 5]], 'no clash: at once');
  assert.equal(q.overlay(s).status, 'paused');
  assert.deepEqual(q.accepted(1, 7, false, s), []);
  assert.deepEqual(sent(q.confirmed(state(6))), [[2, 7]]);
});

test('edit queue: a refused write is dropped, the shown state rolls back, the next goes out', () => {
  const q = new EditQueue();
  const s = state(5);
  q.submit(status('active'), s);
  q.submit(status('paused'), s);
  assert.equal(q.overlay(s).status, 'paused');
  const { write, send } = q.refused(1, s);
  assert.deepEqual(write?.request, { campaign_id: 'c', updates: { status: 'active' }, base_version: 5 });
  assert.deepEqual(sent(send), [[2, 5]]);
  assert.equal(q.overlay(s).status, 'paused');
  q.refused(2, s);
  assert.equal(q.overlay(s).status, 'draft');
  assert.equal(q.refused(99, s).write, undefined);
  assert.throws(() => q.submit({ kind: 'update', request: { campaign_id: 'c', updates: { title: 'x'.repeat(201) } } }, s), /too|200/);
  assert.equal(q.size, 0);
});

test('edit queue: an explicit base is kept', () => {
  const q = new EditQueue();
  const w: Write = { kind: 'feature', request: { campaign_id: 'c', op: 'add', features: ['qa'], base_version: 3 } };
  assert.deepEqual(sent(q.submit(w, state(5)).send), [[1, 3]]);
});

test('backoff doubles from the base to the cap, half of it random', () => {
  const rows: [number, number, number][] = [
    [1, 0, 125], [1, 1, 250], [2, 0, 250], [3, 0.5, 750], [7, 0, 7500], [7, 1, 15000], [50, 1, 15000], [50, 0, 7500],
  ];
  for (const [attempt, random, expected] of rows) assert.equal(backoffDelay(attempt, random), expected, `attempt ${attempt} random ${random}`);
  for (let attempt = 1; attempt < 40; attempt++) {
    const d = backoffDelay(attempt, Math.random());
    assert.ok(d >= 125 && d <= 15000, `bounded: ${d}`);
  }
});

test('URLs and headers', () => {
  assert.equal(websocketUrl('http://h:1'), 'ws://h:1/ws');
  assert.equal(websocketUrl('https://h/base/', 'a b'), 'wss://h/base/ws?token=a+b');
  assert.equal(websocketUrl('ws://h/ws'), 'ws://h/ws');
  assert.equal(parseEtag('"12"'), 12);
  assert.equal(parseEtag('W/"12"'), undefined);
  assert.equal(parseEtag(null), undefined);
  assert.equal(nextLink('</api/campaigns?limit=2&after=b>; rel="next"'), '/api/campaigns?limit=2&after=b');
  assert.equal(nextLink('</x>; rel="prev", </y>; rel="next"'), '/y');
  assert.equal(nextLink('</x>; rel="prev"'), undefined);
});
