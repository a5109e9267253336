// The realtime client: one WebSocket to a Rally server, following campaigns as observable states
// and changing them with optimistic writes. It follows docs/protocol.md "Staying in sync" and
// mirrors Rally's own browser client (app/src/client/live.rs, edits.rs):
//
// - reconnect with exponential backoff and "equal jitter" (half of each delay random), then
//   resubscribe every campaign with `since_version` = the last version applied, so the server
//   replays exactly what was missed (or answers with a snapshot);
// - apply state events strictly in version order: duplicates are dropped, and a gap resubscribes
//   instead of guessing;
// - writes show at once (confirmed state + pending writes), are sent with a request id and a
//   `base_version`, and are sent again after a reconnect when their reply was lost (Rally's
//   writes set values: sending one twice equals sending it once);
// - a socket that may have died quietly is probed with `system:ping` when a request has waited
//   for its reply too long, and dropped when the probe is not answered.
import { RallyError } from './errors.js';
import type {
  CampaignId,
  CampaignEvent,
  CampaignState,
  ConfigChange,
  Feature,
  FieldUpdates,
  Overruled,
  Presence,
  Role,
  SnapshotReason,
  SubscribeReply,
  Writable,
  WriteAck,
} from './generated.js';
import { Cell, Emitter, type Observable } from './observable.js';
import {
  CloseCodes,
  EventTypes,
  type Envelope,
  type PresenceChanged,
  type Resync,
  type SubscriptionEnded,
} from './protocol.js';
import { applyEvent, jsonEqual, type JsonObject, type Write } from './state.js';
import { EditQueue, type Outgoing } from './writes.js';

/** What the connection is doing. `closed`: for good (closed by you, the session ended, or retries ran out) or resting (idle, see README). */
export type ConnectionStatus = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** The part of the WebSocket API the client uses (browsers' WebSocket and the `ws` package fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface BackoffOptions {
  /** First retry delay (before jitter). Default 250 ms. */
  baseMs?: number;
  /** Longest delay. Default 15 000 ms. */
  maxMs?: number;
  /** Give up (status `closed`) after this many failed attempts in a row. Default: never. */
  maxAttempts?: number;
}

export interface ConnectOptions {
  /** The server: `https://rally.example` (the client opens `/ws` there) or a `ws(s)://…/ws` URL. */
  url: string;
  /** A session token (or a token from your backend). Without one the client is anonymous. API keys are refused by the WebSocket. */
  token?: string;
  /** The WebSocket constructor; default `globalThis.WebSocket` (in Node 20 pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** Probe the socket when a request has had no reply for this long. Default 4000 ms. */
  replyPatienceMs?: number;
  /** Drop the socket when the probe has no reply within this long. Default 2500 ms. */
  probeMs?: number;
  /** Random numbers in [0, 1) for the jitter (tests make it deterministic). */
  random?: () => number;
}

/** Delay before retry number `attempt` (1-based): exponential, capped, half of it random. */
export function backoffDelay(attempt: number, random: number, baseMs = 250, maxMs = 15_000): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 20));
  const half = Math.floor(exp / 2);
  return half + Math.floor(Math.min(Math.max(random, 0), 1) * (exp - half));
}

/** `ws(s)://host/ws?token=…` for a server URL given as http(s) or ws(s). */
export function websocketUrl(url: string, token?: string): string {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (!u.pathname.endsWith('/ws')) u.pathname = `${u.pathname.replace(/\/$/, '')}/ws`;
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

type Pending =
  | { kind: 'subscribe'; campaign: LiveCampaign }
  | { kind: 'unsubscribe' }
  | { kind: 'probe' }
  | { kind: 'write'; campaign: LiveCampaign; number: number; type: string; payload: unknown }
  | { kind: 'call'; type: string; payload: unknown; resolve: (v: unknown) => void; reject: (e: RallyError) => void };

interface InFlight {
  pending: Pending;
  sentAt: number;
}

/** Open a realtime connection. It connects at once and keeps reconnecting until {@link RallyClient.close}. */
export function connect(options: ConnectOptions): RallyClient {
  return new RallyClient(options);
}

/** See {@link connect}. */
export class RallyClient {
  private readonly WS: WebSocketConstructor;
  private readonly url: string;
  private readonly backoff: Required<Omit<BackoffOptions, 'maxAttempts'>> & { maxAttempts: number };
  private readonly patienceMs: number;
  private readonly probeMs: number;
  private readonly random: () => number;

  private socket: WebSocketLike | undefined;
  private socketNumber = 0;
  private open = false;
  private attempt = 0;
  private nextRequest = 1;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private probe: { id: string; sentAt: number } | undefined;
  private finished = false;
  private resting = false;
  private readonly campaigns = new Map<CampaignId, LiveCampaign>();
  private readonly inFlight = new Map<string, InFlight>();
  private outbox: { id: string; pending: Pending }[] = [];
  private readonly statusCell = new Cell<ConnectionStatus>('connecting');
  /** Why the connection is `closed`, when it is. */
  closeReason: 'closed_by_client' | 'session_ended' | 'gave_up' | 'idle' | undefined;

  constructor(options: ConnectOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError('no WebSocket: pass the `WebSocket` option (in Node, the `ws` package)');
    this.WS = WS;
    this.url = websocketUrl(options.url, options.token);
    this.backoff = {
      baseMs: options.backoff?.baseMs ?? 250,
      maxMs: options.backoff?.maxMs ?? 15_000,
      maxAttempts: options.backoff?.maxAttempts ?? Infinity,
    };
    this.patienceMs = options.replyPatienceMs ?? 4_000;
    this.probeMs = options.probeMs ?? 2_500;
    this.random = options.random ?? Math.random;
    this.openSocket();
  }

  /** The connection status now. */
  get status(): ConnectionStatus {
    return this.statusCell.value;
  }

  /** The connection status as an observable value. */
  get connection(): Observable<ConnectionStatus> {
    return this.statusCell;
  }

  /** Follow the status: called at once, then on every change. Returns the unsubscribe function. */
  onStatus(listener: (status: ConnectionStatus) => void): () => void {
    return this.statusCell.subscribe(listener);
  }

  /**
   * Follow a campaign (the same object for the same id while followed). Its state arrives with the
   * subscribe reply: `await campaign.ready`.
   */
  campaign(id: CampaignId): LiveCampaign {
    const existing = this.campaigns.get(id);
    if (existing) return existing;
    if (this.finished) throw new RallyError('unavailable', `the connection is closed (${this.closeReason})`);
    const campaign = new LiveCampaign(this, id);
    this.campaigns.set(id, campaign);
    if (this.open) this.subscribe(campaign);
    else this.wake();
    return campaign;
  }

  /** Round trip to the server; resolves with its `server_time`. */
  async ping(): Promise<string> {
    const reply = (await this.call(EventTypes.ping, {})) as { server_time: string };
    return reply.server_time;
  }

  /**
   * Send any request (`type` ends in `:requested`) and resolve with its success payload, or reject
   * with a {@link RallyError}. Queued while disconnected, sent again after a reconnect.
   */
  call(type: string, payload: object): Promise<unknown> {
    if (this.finished) return Promise.reject(new RallyError('unavailable', `the connection is closed (${this.closeReason})`));
    return new Promise((resolve, reject) => {
      this.send({ kind: 'call', type, payload, resolve, reject });
    });
  }

  /** Close the connection for good: pending writes and requests reject with `unavailable`. */
  close(): void {
    if (this.finished) return;
    this.finish('closed_by_client', new RallyError('unavailable', 'the client was closed'));
  }

  // -------------------------------------------------------------------------------------------
  // Used by LiveCampaign
  // -------------------------------------------------------------------------------------------

  /** @internal */
  sendWrites(campaign: LiveCampaign, writes: Outgoing[]): void {
    for (const { number, write } of writes) {
      const type = write.kind === 'update' ? EventTypes.update : write.kind === 'feature' ? EventTypes.feature : EventTypes.config;
      this.send({ kind: 'write', campaign, number, type, payload: write.request });
    }
  }

  /** @internal */
  resubscribe(campaign: LiveCampaign): void {
    if (this.open && this.campaigns.get(campaign.id) === campaign) this.subscribe(campaign);
  }

  /** @internal */
  forget(campaign: LiveCampaign): void {
    if (this.campaigns.get(campaign.id) !== campaign) return;
    this.campaigns.delete(campaign.id);
    if (this.open) this.send({ kind: 'unsubscribe' }, { campaign_id: campaign.id });
  }

  // -------------------------------------------------------------------------------------------
  // Socket life
  // -------------------------------------------------------------------------------------------

  private setStatus(status: ConnectionStatus): void {
    this.statusCell.set(status);
  }

  private openSocket(): void {
    this.resting = false;
    this.setStatus(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const number = ++this.socketNumber;
    let socket: WebSocketLike;
    try {
      socket = new this.WS(this.url);
    } catch {
      this.closed(number, 1006);
      return;
    }
    this.socket = socket;
    socket.onopen = () => number === this.socketNumber && this.opened();
    socket.onmessage = (event) => {
      if (number === this.socketNumber && typeof event.data === 'string') this.received(event.data);
    };
    socket.onclose = (event) => this.closed(number, event.code);
    socket.onerror = () => {
      /* a close event follows */
    };
  }

  private opened(): void {
    this.open = true;
    this.attempt = 0;
    this.setStatus('live');
    this.startWatchdog();
    for (const campaign of this.campaigns.values()) this.subscribe(campaign);
    const queued = this.outbox;
    this.outbox = [];
    for (const { id, pending } of queued) this.transmit(id, pending);
  }

  private closed(number: number, code: number): void {
    if (number !== this.socketNumber || this.finished) return;
    this.socketNumber++; // nothing more from that socket
    const socket = this.socket;
    this.socket = undefined;
    this.open = false;
    this.probe = undefined;
    this.stopWatchdog();
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {
        /* already closed */
      }
    }
    // Requests waiting for a reply go back to the front of the queue, in the order they were
    // sent; subscriptions are made again on open and a probe died with its socket.
    const again: { id: string; pending: Pending }[] = [];
    for (const [id, { pending }] of this.inFlight) {
      if (pending.kind === 'write' || pending.kind === 'call') again.push({ id, pending });
    }
    this.inFlight.clear();
    this.outbox = [...again, ...this.outbox];
    for (const campaign of this.campaigns.values()) campaign.disconnected();

    if (code === CloseCodes.sessionEnded) {
      this.finish('session_ended', new RallyError('unauthorized', 'the session ended (close code 4011): sign in again'));
      return;
    }
    if (code === CloseCodes.idle && this.campaigns.size === 0 && this.outbox.length === 0) {
      // Nothing needs the server: rest until something does.
      this.resting = true;
      this.closeReason = 'idle';
      this.setStatus('closed');
      return;
    }
    this.attempt++;
    if (this.attempt > this.backoff.maxAttempts) {
      this.finish('gave_up', new RallyError('unavailable', `could not reach the server after ${this.backoff.maxAttempts} attempts`));
      return;
    }
    this.setStatus('reconnecting');
    const delay = backoffDelay(this.attempt, this.random(), this.backoff.baseMs, this.backoff.maxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.finished && !this.open) this.openSocket();
    }, delay);
  }

  /** Resting after an idle close: connect again because something needs the server. */
  private wake(): void {
    if (this.resting && !this.finished) {
      this.closeReason = undefined;
      this.openSocket();
    }
  }

  private finish(reason: NonNullable<RallyClient['closeReason']>, error: RallyError): void {
    this.finished = true;
    this.closeReason = reason;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stopWatchdog();
    const socket = this.socket;
    this.socket = undefined;
    this.socketNumber++;
    this.open = false;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000);
      } catch {
        /* already closed */
      }
    }
    const pending = [...[...this.inFlight.values()].map((f) => f.pending), ...this.outbox.map((o) => o.pending)];
    this.inFlight.clear();
    this.outbox = [];
    for (const p of pending) if (p.kind === 'call') p.reject(error);
    for (const campaign of this.campaigns.values()) campaign.finished(error);
    this.setStatus('closed');
  }

  private startWatchdog(): void {
    this.stopWatchdog();
    const tick = Math.max(50, Math.min(1000, Math.floor(Math.min(this.patienceMs, this.probeMs) / 2)));
    this.watchdog = setInterval(() => this.checkLiveness(), tick);
    (this.watchdog as { unref?: () => void }).unref?.();
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  /** A request waited too long: probe the socket; a probe waited too long: drop the socket. */
  private checkLiveness(): void {
    if (!this.open) return;
    const now = Date.now();
    if (this.probe) {
      if (now - this.probe.sentAt >= this.probeMs) this.closed(this.socketNumber, 1006);
      return;
    }
    for (const { pending, sentAt } of this.inFlight.values()) {
      if (pending.kind !== 'probe' && now - sentAt >= this.patienceMs) {
        const id = this.nextId();
        this.probe = { id, sentAt: now };
        this.transmit(id, { kind: 'probe' });
        return;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Frames
  // -------------------------------------------------------------------------------------------

  private nextId(): string {
    return `r${this.nextRequest++}`;
  }

  private subscribe(campaign: LiveCampaign): void {
    campaign.subscribing = true;
    const payload: { campaign_id: string; since_version?: number } = { campaign_id: campaign.id };
    const since = campaign.confirmedVersion;
    if (since !== undefined) payload.since_version = since;
    this.transmit(this.nextId(), { kind: 'subscribe', campaign }, payload);
  }

  /** Send now, or queue until connected (subscriptions and unsubscriptions are never queued). */
  private send(pending: Pending, payload?: unknown): void {
    const id = this.nextId();
    if (this.open) this.transmit(id, pending, payload);
    else if (pending.kind === 'write' || pending.kind === 'call') {
      this.outbox.push({ id, pending });
      this.wake();
    }
  }

  private transmit(id: string, pending: Pending, payload?: unknown): void {
    const socket = this.socket;
    if (!socket || !this.open) {
      if (pending.kind === 'write' || pending.kind === 'call') this.outbox.push({ id, pending });
      return;
    }
    const type =
      pending.kind === 'subscribe'
        ? EventTypes.subscribe
        : pending.kind === 'unsubscribe'
          ? EventTypes.unsubscribe
          : pending.kind === 'probe'
            ? EventTypes.ping
            : pending.type;
    const body = pending.kind === 'write' || pending.kind === 'call' ? pending.payload : (payload ?? {});
    const frame: Envelope = { type, payload: body, request_id: id };
    this.inFlight.set(id, { pending, sentAt: Date.now() });
    try {
      socket.send(JSON.stringify(frame));
    } catch {
      // The socket is going away; its close event puts the request back in the queue.
    }
  }

  private received(text: string): void {
    let frame: Envelope;
    try {
      frame = JSON.parse(text) as Envelope;
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    if (frame.request_id !== undefined) {
      if (this.probe?.id === frame.request_id) this.probe = undefined;
      const flight = this.inFlight.get(frame.request_id);
      if (!flight) return;
      this.inFlight.delete(frame.request_id);
      this.reply(flight.pending, frame);
      return;
    }
    const payload = frame.payload as { campaign_id?: string; presence?: Presence };
    const campaignId = payload?.campaign_id ?? payload?.presence?.campaign_id;
    const campaign = campaignId === undefined ? undefined : this.campaigns.get(campaignId);
    if (!campaign) return;
    switch (frame.type) {
      case EventTypes.state:
        campaign.stateEvent(frame.payload as CampaignEvent);
        break;
      case EventTypes.resync:
        campaign.resync(frame.payload as Resync);
        break;
      case EventTypes.presence:
        campaign.presenceChanged(frame.payload as PresenceChanged);
        break;
      case EventTypes.writable:
        campaign.writableChanged(frame.payload as Writable);
        break;
      case EventTypes.overruled:
        campaign.overruledEvents.emit(frame.payload as Overruled);
        break;
      case EventTypes.subscriptionEnded:
        campaign.subscriptionEnded(frame.payload as SubscriptionEnded);
        break;
    }
  }

  private reply(pending: Pending, frame: Envelope): void {
    const failed = frame.type.endsWith(':failed');
    const error = failed ? RallyError.from(frame.payload) : undefined;
    switch (pending.kind) {
      case 'subscribe':
        if (this.campaigns.get(pending.campaign.id) !== pending.campaign) return; // unsubscribed meanwhile
        if (error) pending.campaign.subscribeFailed(error);
        else pending.campaign.subscribed(frame.payload as SubscribeReply);
        break;
      case 'write':
        pending.campaign.writeAnswered(pending.number, error, frame.payload as WriteAck);
        break;
      case 'call':
        if (error) pending.reject(error);
        else pending.resolve(frame.payload);
        break;
      case 'probe':
      case 'unsubscribe':
        break;
    }
  }
}

/** A state replaced wholesale: the first snapshot, a snapshot on resubscribe, or a resync. */
export interface StateReset {
  reason: SnapshotReason | 'resync';
  state: CampaignState;
}

type Waiter = { resolve: (ack: WriteAck) => void; reject: (error: RallyError) => void };

/** Options of a write. */
export interface WriteOptions {
  /**
   * The version the write is based on (what the caller saw). Default: the newest version this
   * client has fully seen, including its own acknowledged writes.
   */
  baseVersion?: number;
}

/**
 * One followed campaign. `state` is what to show: the confirmed state with this client's pending
 * writes laid over it. `subscribe(listener)` follows it (Svelte store contract).
 */
export class LiveCampaign implements Observable<CampaignState | undefined> {
  private confirmedState: CampaignState | undefined;
  private readonly shown = new Cell<CampaignState | undefined>(undefined);
  private readonly queue = new EditQueue();
  private readonly waiters = new Map<number, Waiter>();
  private resolveReady!: (state: CampaignState) => void;
  private rejectReady!: (error: RallyError) => void;
  /** @internal a subscribe request is on its way */
  subscribing = false;

  /** Resolves with the state once the first subscribe reply arrived; rejects if it failed. */
  readonly ready: Promise<CampaignState>;
  /** Your role in the campaign (from the latest subscribe reply or resync). */
  role: Role | undefined;
  /** Whether the campaign takes writes right now (`campaign:writable`). */
  writable = true;
  /** Who is watching (the latest presence). */
  presence: Presence | undefined;
  /** Set when the subscription ended for good (e.g. `not_found`: you may no longer see it). */
  ended: RallyError | undefined;

  /** Every state event applied to the confirmed state, exactly once each, in version order. */
  readonly events = new Emitter<CampaignEvent>();
  /** The confirmed state was replaced by a snapshot or a resync. */
  readonly resets = new Emitter<StateReset>();
  readonly overruledEvents = new Emitter<Overruled>();
  readonly presenceEvents = new Emitter<PresenceChanged>();

  constructor(
    private readonly client: RallyClient,
    readonly id: CampaignId,
  ) {
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // a failure is also reported through `ended`
  }

  /** What to show: confirmed state + pending optimistic writes (undefined until loaded). */
  get state(): CampaignState | undefined {
    return this.shown.value;
  }

  get value(): CampaignState | undefined {
    return this.shown.value;
  }

  /** The state as the server confirmed it (no pending writes). */
  get confirmed(): CampaignState | undefined {
    return this.confirmedState;
  }

  /** The last version applied (undefined until loaded). */
  get confirmedVersion(): number | undefined {
    return this.confirmedState?.version;
  }

  /** Writes sent or waiting that the server has not accepted yet. */
  get unsaved(): number {
    return this.queue.unsaved();
  }

  subscribe(listener: (state: CampaignState | undefined) => void): () => void {
    return this.shown.subscribe(listener);
  }

  /** Every applied state event, in order, exactly once. */
  onEvent(listener: (event: CampaignEvent) => void): () => void {
    return this.events.on(listener);
  }

  // -------------------------------------------------------------------------------------------
  // Writes
  // -------------------------------------------------------------------------------------------

  /** Set title, description, status and/or visibility (`campaign:update:v1`). */
  update(updates: FieldUpdates, options?: WriteOptions): Promise<WriteAck> {
    return this.write({ kind: 'update', request: { campaign_id: this.id, updates, ...base(options) } });
  }

  /** Replace the whole feature set. */
  setFeatures(features: Feature[], options?: WriteOptions): Promise<WriteAck> {
    return this.write({ kind: 'feature', request: { campaign_id: this.id, op: 'set', features, ...base(options) } });
  }

  addFeatures(features: Feature[], options?: WriteOptions): Promise<WriteAck> {
    return this.write({ kind: 'feature', request: { campaign_id: this.id, op: 'add', features, ...base(options) } });
  }

  removeFeatures(features: Feature[], options?: WriteOptions): Promise<WriteAck> {
    return this.write({ kind: 'feature', request: { campaign_id: this.id, op: 'remove', features, ...base(options) } });
  }

  /** JSON Merge Patch `values` into config section `section` (`null` deletes a key). Send only what changed. */
  mergeConfig(section: string, values: JsonObject, options?: WriteOptions): Promise<WriteAck> {
    return this.config({ section, values, mode: 'merge' }, options);
  }

  /** Make config section `section` exactly `values`. */
  replaceConfig(section: string, values: JsonObject, options?: WriteOptions): Promise<WriteAck> {
    return this.config({ section, values, mode: 'replace' }, options);
  }

  /** Delete config section `section`. */
  removeConfig(section: string, options?: WriteOptions): Promise<WriteAck> {
    return this.config({ section, values: {}, mode: 'remove' }, options);
  }

  /** Stop following the campaign. */
  close(): void {
    this.client.forget(this);
  }

  private config(change: Omit<ConfigChange, 'campaign_id' | 'base_version'>, options?: WriteOptions): Promise<WriteAck> {
    return this.write({ kind: 'config', request: { campaign_id: this.id, ...change, ...base(options) } });
  }

  private async write(write: Write): Promise<WriteAck> {
    if (!this.confirmedState) await this.ready;
    if (this.ended) throw this.ended;
    const confirmed = this.confirmedState as CampaignState;
    const { number, send } = this.queue.submit(write, confirmed); // throws invalid / too_large
    const answered = new Promise<WriteAck>((resolve, reject) => this.waiters.set(number, { resolve, reject }));
    this.refresh();
    this.client.sendWrites(this, send);
    return answered;
  }

  // -------------------------------------------------------------------------------------------
  // From the client
  // -------------------------------------------------------------------------------------------

  /** @internal */
  subscribed(reply: SubscribeReply): void {
    this.subscribing = false;
    this.role = reply.role;
    this.writable = reply.writable ?? true;
    this.presence = reply.presence;
    if (reply.resume.kind === 'snapshot') {
      this.replace(reply.resume.campaign, reply.resume.reason);
    }
    // `events`: exactly the missed events follow as state events; nothing to do until then.
  }

  /** @internal */
  subscribeFailed(error: RallyError): void {
    this.subscribing = false;
    this.finished(error);
    this.client.forget(this);
  }

  /** @internal */
  stateEvent(event: CampaignEvent): void {
    const confirmed = this.confirmedState;
    if (!confirmed) return; // no baseline yet; the subscribe reply brings one
    if (event.version <= confirmed.version) return; // a duplicate
    if (event.version > confirmed.version + 1) {
      // A gap: never apply out of order; ask for exactly what is missing.
      if (!this.subscribing) this.client.resubscribe(this);
      return;
    }
    let next: CampaignState;
    try {
      next = applyEvent(confirmed, event);
    } catch {
      // An event this SDK cannot apply (a newer change kind, a misfit edit): start over from a snapshot.
      this.confirmedState = undefined;
      this.client.resubscribe(this);
      return;
    }
    this.confirmedState = next;
    this.events.emit(event);
    this.settle();
  }

  /** @internal */
  resync(resync: Resync): void {
    this.role = resync.role;
    this.replace(resync.campaign, 'resync');
  }

  /** @internal */
  presenceChanged(change: PresenceChanged): void {
    this.presence = change.presence;
    this.presenceEvents.emit(change);
  }

  /** @internal */
  writableChanged(writable: Writable): void {
    this.writable = writable.writable;
  }

  /** @internal */
  subscriptionEnded(ended: SubscriptionEnded): void {
    if (ended.reason.code === 'not_found') {
      this.finished(RallyError.from(ended.reason));
      this.client.forget(this);
    } else {
      this.client.resubscribe(this);
    }
  }

  /** @internal The socket closed: a subscribe in flight died with it. */
  disconnected(): void {
    this.subscribing = false;
  }

  /** @internal The answer to write `number`. */
  writeAnswered(number: number, error: RallyError | undefined, ack: WriteAck): void {
    const waiter = this.waiters.get(number);
    this.waiters.delete(number);
    const confirmed = this.confirmedState;
    let send: Outgoing[] = [];
    if (error) {
      if (confirmed) send = this.queue.refused(number, confirmed).send;
      else this.queue.abandon(number);
      this.refresh();
      waiter?.reject(error);
    } else {
      if (confirmed) send = this.queue.accepted(number, ack.version, ack.unchanged, confirmed);
      this.refresh();
      waiter?.resolve(ack);
    }
    this.client.sendWrites(this, send);
  }

  /** @internal The connection is gone for good. */
  finished(error: RallyError): void {
    if (!this.ended) this.ended = error;
    this.rejectReady(error);
    for (const [number, waiter] of this.waiters) {
      this.queue.abandon(number);
      waiter.reject(error);
    }
    this.waiters.clear();
    this.refresh();
  }

  private replace(state: CampaignState, reason: StateReset['reason']): void {
    this.confirmedState = state;
    this.resets.emit({ reason, state });
    this.resolveReady(state);
    this.settle();
  }

  /** The confirmed state moved: settle the queue, send what it releases, show the result. */
  private settle(): void {
    const confirmed = this.confirmedState;
    if (!confirmed) return;
    const send = this.queue.confirmed(confirmed);
    this.refresh();
    this.client.sendWrites(this, send);
  }

  private refresh(): void {
    const confirmed = this.confirmedState;
    const next = confirmed ? this.queue.overlay(confirmed) : undefined;
    if (next !== undefined && this.shown.value !== undefined && jsonEqual(next, this.shown.value)) return;
    this.shown.set(next);
  }
}

function base(options: WriteOptions | undefined): { base_version?: number } {
  return options?.baseVersion === undefined ? {} : { base_version: options.baseVersion };
}
