// Pure campaign logic, with no I/O: how a change moves a state from version N-1 to N, what a write
// makes of a state (the optimistic overlay), and when a write clashes with a landed change. Each
// function mirrors its Rust counterpart in app/src/model (campaign.rs `apply_event`,
// `apply_change`, `merge_patch`; text.rs `TextEdit::apply`; write.rs `Write::effect`,
// `Write::clashes_with`), so the SDK shows exactly the state the server holds at each version.
// States are never mutated: every function returns a new value.
import { RallyError } from './errors.js';
import type {
  CampaignEvent,
  CampaignState,
  Change,
  ConfigChange,
  FeatureChange,
  FieldUpdates,
  TextEdit,
  TextField,
  UpdateFields,
} from './generated.js';

export type JsonObject = { [key: string]: unknown };

/** A write to an existing campaign, as the SDK sends it (the request payload and its kind). */
export type Write =
  | { kind: 'update'; request: UpdateFields }
  | { kind: 'feature'; request: FeatureChange }
  | { kind: 'config'; request: ConfigChange };

/** Limits a write is checked against before it is shown (app/src/model/limits.rs). */
export const Limits = {
  titleMaxChars: 200,
  descriptionMaxChars: 10_000,
  featuresMax: 64,
  configSectionsMax: 32,
  configSectionMaxBytes: 16 * 1024,
  configMaxDepth: 8,
} as const;

const FEATURE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const SECTION = /^[a-z][a-z0-9_]{0,31}$/;
// Rust's char::is_control: the Unicode category Cc.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const CONTROL_BUT_TEXT = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

// ---------------------------------------------------------------------------------------------
// Text edits
// ---------------------------------------------------------------------------------------------

/**
 * Length of a text in Rally's characters: Unicode scalar values (code points), not UTF-16 units.
 * "✓" is 1, "😀" is 1 (two UTF-16 units), "é" written as e + combining accent is 2.
 */
export function textLength(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * Apply a text edit (ot.js format: n > 0 keeps n characters, a string inserts it, n < 0 deletes
 * -n) to `text`. The kept and deleted counts must cover the whole text, or it throws `invalid`.
 */
export function applyTextEdit(text: string, edit: TextEdit): string {
  const chars = Array.from(text);
  let at = 0;
  let out = '';
  for (const step of edit) {
    if (typeof step === 'string') {
      if (step === '') throw new RallyError('invalid', 'a text edit must not insert ""');
      out += step;
    } else if (Number.isInteger(step) && step > 0) {
      if (at + step > chars.length) throw lengthMismatch(edit, chars.length);
      out += chars.slice(at, at + step).join('');
      at += step;
    } else if (Number.isInteger(step) && step < 0) {
      if (at - step > chars.length) throw lengthMismatch(edit, chars.length);
      at -= step;
    } else {
      throw new RallyError('invalid', `a text edit step must be a non-zero integer or a string, not ${String(step)}`);
    }
  }
  if (at !== chars.length) throw lengthMismatch(edit, chars.length);
  return out;
}

function lengthMismatch(edit: TextEdit, found: number): RallyError {
  const expected = edit.reduce<number>((n, s) => (typeof s === 'number' ? n + Math.abs(s) : n), 0);
  return new RallyError('invalid', `the edit is for a text of ${expected} characters; this one has ${found}`);
}

// ---------------------------------------------------------------------------------------------
// JSON Merge Patch (RFC 7396)
// ---------------------------------------------------------------------------------------------

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** RFC 7396: `patch` merged into `target` (neither is changed; the result shares nothing mutable). */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else if (isObject(value)) {
      const slot = out[key];
      out[key] = mergePatch(isObject(slot) ? slot : {}, value);
    } else {
      out[key] = structuredClone(value);
    }
  }
  return out;
}

/** The smallest merge patch that turns `base` into `target` (what Rally's config editor sends). */
export function mergePatchBetween(base: JsonObject, target: JsonObject): JsonObject {
  const patch: JsonObject = {};
  for (const key of Object.keys(base)) if (!(key in target)) patch[key] = null;
  for (const [key, value] of Object.entries(target)) {
    const before = base[key];
    if (key in base && jsonEqual(before, value)) continue;
    patch[key] = isObject(before) && isObject(value) ? mergePatchBetween(before, value) : structuredClone(value);
  }
  return patch;
}

/** Deep equality of JSON values (object key order does not matter). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Applying changes and events
// ---------------------------------------------------------------------------------------------

/**
 * `state` with `change` made to the fields it touches; version and last-change stamps stay (the
 * optimistic overlay uses this). A `created` change cannot apply to an existing state.
 */
export function applyChange(state: CampaignState, change: Change): CampaignState {
  switch (change.kind) {
    case 'created':
      throw new RallyError('invalid', 'a creation event can only start a campaign');
    case 'fields': {
      const u = change.updates;
      const next = { ...state };
      if (u.title != null) next.title = u.title;
      if (u.description != null) next.description = u.description;
      if (u.status != null) next.status = u.status;
      if (u.visibility != null) next.visibility = u.visibility;
      return next;
    }
    case 'features': {
      const set = new Set(state.features);
      for (const f of change.removed) set.delete(f);
      for (const f of change.added) set.add(f);
      return { ...state, features: sortStrings([...set]) };
    }
    case 'config': {
      const config = { ...state.config };
      if (change.mode === 'remove') delete config[change.section];
      else if (change.mode === 'replace') config[change.section] = structuredClone(change.values) as JsonObject;
      else config[change.section] = mergePatch(config[change.section] ?? {}, change.values as JsonObject);
      return { ...state, config: sortKeys(config) };
    }
    case 'text': {
      const field: TextField = change.field;
      return { ...state, [field]: applyTextEdit(state[field], change.edit) };
    }
    case 'member': {
      const members = { ...(state.members ?? {}) };
      if (change.role != null) {
        members[change.member.user_id] = { display_name: change.member.display_name, role: change.role };
      } else {
        delete members[change.member.user_id];
      }
      return { ...state, members: sortKeys(members) };
    }
    case 'handover': {
      const members = { ...(state.members ?? {}) };
      delete members[change.to.user_id];
      members[change.from.user_id] = { display_name: change.from.display_name, role: 'owner' };
      return { ...state, members: sortKeys(members), handed_to: { ...change.to } };
    }
    case 'invite':
    case 'invite_withdrawn':
      return state;
    case 'revert': {
      // Content put back as it was at `to_version`: each present field gets its whole value.
      const r = change.restored;
      const next = { ...state };
      if (r.title != null) next.title = r.title;
      if (r.description != null) next.description = r.description;
      if (r.status != null) next.status = r.status;
      if (r.features != null) next.features = sortStrings([...r.features]);
      if (r.config != null) {
        const config = { ...state.config };
        for (const [section, values] of Object.entries(r.config)) {
          if (values == null) delete config[section];
          else config[section] = structuredClone(values) as JsonObject;
        }
        next.config = sortKeys(config);
      }
      return next;
    }
    default: {
      // A change kind newer than this SDK: nothing it can apply.
      const kind = (change as { kind?: unknown }).kind;
      throw new RallyError('invalid', `unknown change kind ${String(kind)}`);
    }
  }
}

/** The thrown error of {@link applyEvent} when the event is not the next version: resubscribe. */
export class VersionGapError extends RallyError {
  constructor(
    readonly stateVersion: number,
    readonly eventVersion: number,
  ) {
    super('invalid', `event version ${eventVersion} does not follow state version ${stateVersion}`);
    this.name = 'VersionGapError';
  }
}

/**
 * Move `state` to the event's version. Throws, changing nothing, unless the event is for this
 * campaign and exactly the next version ({@link VersionGapError}).
 */
export function applyEvent(state: CampaignState, event: CampaignEvent): CampaignState {
  if (event.campaign_id !== state.id) {
    throw new RallyError('invalid', `event for campaign ${event.campaign_id} applied to campaign ${state.id}`);
  }
  if (event.version !== state.version + 1) throw new VersionGapError(state.version, event.version);
  const next = applyChange(state, event.change);
  return { ...next, version: event.version, updated_at: event.changed_at, updated_by: event.changed_by };
}

function sortStrings(values: string[]): string[] {
  // Rust orders strings by bytes; feature names are ASCII, so code-unit order is the same.
  return values.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function sortKeys<T>(map: { [k: string]: T }): { [k: string]: T } {
  return Object.fromEntries(sortStrings(Object.keys(map)).map((k) => [k, map[k] as T]));
}

// ---------------------------------------------------------------------------------------------
// Writes: their effect on a state, and clashes
// ---------------------------------------------------------------------------------------------

function invalid(message: string): RallyError {
  return new RallyError('invalid', message);
}
function tooLarge(message: string): RallyError {
  return new RallyError('too_large', message);
}

function checkTitle(title: string): void {
  if (title.trim() === '') throw invalid('title must not be empty');
  const n = textLength(title);
  if (n > Limits.titleMaxChars) throw tooLarge(`title is ${n} characters; at most ${Limits.titleMaxChars} are allowed`);
  if (CONTROL.test(title)) throw invalid('title must not contain control characters');
}

function checkDescription(description: string): void {
  const n = textLength(description);
  if (n > Limits.descriptionMaxChars) {
    throw tooLarge(`description is ${n} characters; at most ${Limits.descriptionMaxChars} are allowed`);
  }
  if (description.includes('\r')) throw invalid('description line breaks must be \\n alone (no \\r)');
  if (CONTROL_BUT_TEXT.test(description)) {
    throw invalid('description must not contain control characters other than line breaks and tabs');
  }
}

function jsonDepth(value: unknown): number {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(jsonDepth));
  if (isObject(value)) return 1 + Math.max(0, ...Object.values(value).map(jsonDepth));
  return 0;
}

function checkSection(section: string, values: JsonObject): void {
  if (!SECTION.test(section)) throw invalid(`invalid section name ${JSON.stringify(section)}`);
  const depth = jsonDepth(values);
  if (depth > Limits.configMaxDepth) {
    throw tooLarge(`config section ${section} is nested ${depth} deep; at most ${Limits.configMaxDepth} levels are allowed`);
  }
  const bytes = new TextEncoder().encode(JSON.stringify(values)).length;
  if (bytes > Limits.configSectionMaxBytes) {
    throw tooLarge(`config section ${section} is ${bytes} bytes; at most ${Limits.configSectionMaxBytes} are allowed`);
  }
}

/**
 * What `write` makes of `state`: the change the server would record, `null` when the state
 * already has what the write asks for. Throws the `invalid`/`too_large` error the server would
 * answer for a write that breaks a limit. Permission and staleness are the server's questions.
 */
export function writeEffect(write: Write, state: CampaignState): Change | null {
  switch (write.kind) {
    case 'update': {
      const u = write.request.updates;
      if (u.title == null && u.description == null && u.status == null && u.visibility == null) {
        throw invalid('updates must set at least one of title, description, status, visibility');
      }
      if (u.title != null) checkTitle(u.title);
      if (u.description != null) checkDescription(u.description);
      const effective: FieldUpdates = {};
      if (u.title != null && u.title !== state.title) effective.title = u.title;
      if (u.description != null && u.description !== state.description) effective.description = u.description;
      if (u.status != null && u.status !== state.status) effective.status = u.status;
      if (u.visibility != null && u.visibility !== state.visibility) effective.visibility = u.visibility;
      return Object.keys(effective).length > 0 ? { kind: 'fields', updates: effective } : null;
    }
    case 'feature': {
      const { op, features } = write.request;
      for (const f of features) if (!FEATURE.test(f)) throw invalid(`invalid feature name ${JSON.stringify(f)}`);
      const requested = new Set(features);
      if (requested.size > Limits.featuresMax) throw tooLarge(`${requested.size} features; a campaign can have at most ${Limits.featuresMax}`);
      const current = new Set(state.features);
      const target =
        op === 'add'
          ? new Set([...current, ...requested])
          : op === 'remove'
            ? new Set([...current].filter((f) => !requested.has(f)))
            : requested;
      if (target.size > Limits.featuresMax) throw tooLarge(`${target.size} features; a campaign can have at most ${Limits.featuresMax}`);
      const added = sortStrings([...target].filter((f) => !current.has(f)));
      const removed = sortStrings([...current].filter((f) => !target.has(f)));
      return added.length || removed.length ? { kind: 'features', added, removed } : null;
    }
    case 'config': {
      const { section } = write.request;
      const values = write.request.values as JsonObject;
      const mode = write.request.mode ?? 'merge';
      checkSection(section, values);
      const current = state.config[section];
      if (mode === 'remove') {
        if (Object.keys(values).length > 0) throw invalid('values must be {} when removing a section');
        return current ? { kind: 'config', section, mode: 'remove', values: {} } : null;
      }
      const result = mode === 'replace' ? values : mergePatch(current ?? {}, values);
      if (!current && Object.keys(state.config).length + 1 > Limits.configSectionsMax) {
        throw tooLarge(`${Object.keys(state.config).length + 1} config sections; a campaign can have at most ${Limits.configSectionsMax}`);
      }
      checkSection(section, result);
      if (current && jsonEqual(current, result)) return null;
      return { kind: 'config', section, mode, values: structuredClone(values) };
    }
  }
}

/** Every path a merge patch decides: each key down to a value that is not a non-empty object. */
function patchPaths(patch: JsonObject, prefix: string[] = [], out: string[][] = []): string[][] {
  for (const [key, value] of Object.entries(patch)) {
    const path = [...prefix, key];
    if (isObject(value) && Object.keys(value).length > 0) patchPaths(value, path, out);
    else out.push(path);
  }
  return out;
}

/** Whether two merge patches of one section decide overlapping paths (one equal to or inside another). */
export function patchesOverlap(a: JsonObject, b: JsonObject): boolean {
  const mine = patchPaths(a);
  const theirs = patchPaths(b);
  const within = (outer: string[], inner: string[]) =>
    outer.length <= inner.length && outer.every((k, i) => inner[i] === k);
  return theirs.some((t) => mine.some((m) => within(t, m) || within(m, t)));
}

/**
 * Whether `landed`, a change made after the write's base version, decided something the write
 * would silently undo (the server answers `conflict` then; the SDK holds a write back while an
 * earlier write of its own that it clashes with is unsettled).
 */
export function clashesWith(write: Write, landed: Change): boolean {
  if (landed.kind === 'created') return true;
  switch (write.kind) {
    case 'update': {
      const u = write.request.updates;
      if (landed.kind === 'fields') {
        const l = landed.updates;
        return (
          (u.title != null && l.title != null) ||
          (u.description != null && l.description != null) ||
          (u.status != null && l.status != null) ||
          (u.visibility != null && l.visibility != null)
        );
      }
      if (landed.kind === 'text') return u[landed.field] != null;
      if (landed.kind === 'revert') {
        const r = landed.restored;
        return (u.title != null && r.title != null) || (u.description != null && r.description != null) || (u.status != null && r.status != null);
      }
      return false;
    }
    case 'feature': {
      if (landed.kind === 'revert') return landed.restored.features != null;
      if (landed.kind !== 'features') return false;
      if (write.request.op === 'set') return true;
      const names = new Set(write.request.features);
      return [...landed.added, ...landed.removed].some((f) => names.has(f));
    }
    case 'config': {
      if (landed.kind === 'revert') return landed.restored.config?.[write.request.section] !== undefined;
      if (landed.kind !== 'config' || landed.section !== write.request.section) return false;
      const mode = write.request.mode ?? 'merge';
      return mode !== 'merge' || landed.mode !== 'merge' || patchesOverlap(write.request.values as JsonObject, landed.values as JsonObject);
    }
  }
}

/** The write's `base_version`, if it has one. */
export function baseVersionOf(write: Write): number | undefined {
  return write.request.base_version ?? undefined;
}

/** The same write based on `base` (a new object). */
export function basedOn(write: Write, base: number): Write {
  return { kind: write.kind, request: { ...write.request, base_version: base } } as Write;
}
