// @rally/sdk: the realtime client, the HTTP client, the pure state logic, and every protocol type
// (generated from the server's Rust types).
export * from './generated.js';
export { RallyError } from './errors.js';
export type { Envelope, Resync, PresenceChanged, SubscriptionEnded } from './protocol.js';
export { EventTypes, CloseCodes } from './protocol.js';
export {
  applyChange,
  applyEvent,
  applyTextEdit,
  clashesWith,
  jsonEqual,
  Limits,
  mergePatch,
  mergePatchBetween,
  patchesOverlap,
  textLength,
  VersionGapError,
  writeEffect,
  type JsonObject,
  type Write,
} from './state.js';
export { EditQueue, type Outgoing } from './writes.js';
export { Cell, Emitter, type Observable } from './observable.js';
export {
  backoffDelay,
  connect,
  LiveCampaign,
  RallyClient,
  websocketUrl,
  type BackoffOptions,
  type ConnectionStatus,
  type ConnectOptions,
  type StateReset,
  type WebSocketConstructor,
  type WebSocketLike,
  type WriteOptions,
} from './realtime.js';
export {
  nextLink,
  parseEtag,
  RallyHttp,
  type GetResult,
  type HistoryOptions,
  type ListOptions,
  type RallyHttpOptions,
  type WriteHttpOptions,
  type WriteResult,
} from './http.js';
