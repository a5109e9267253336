// Frame shapes that `rally openapi` does not publish as components (the envelope itself and a few
// pushed payloads), written in terms of the generated types. Every field type comes from
// ./generated.ts; only the composition is spelled out here.
import type {
  CampaignId,
  CampaignState,
  ErrorBody,
  EventId,
  Presence,
  Role,
  SnapshotReason,
  Timestamp,
  UserId,
} from './generated.js';

/** One WebSocket frame (docs/protocol.md "Envelope"). */
export interface Envelope<P = unknown> {
  type: string;
  payload: P;
  metadata?: { timestamp?: Timestamp; event_id?: EventId; [k: string]: unknown };
  request_id?: string;
}

/** `campaign:resync:v1:success` (app/src/protocol/campaign.rs `Resync`). */
export interface Resync {
  campaign_id: CampaignId;
  reason: SnapshotReason;
  campaign: CampaignState;
  role: Role;
}

/** `campaign:presence:v1:success` (`PresenceChanged`). */
export interface PresenceChanged {
  presence: Presence;
  joined?: { user_id: UserId | null; display_name: string }[];
  left?: { user_id: UserId | null; display_name: string }[];
}

/** `campaign:subscription:v1:completed` (`SubscriptionEnded`). */
export interface SubscriptionEnded {
  campaign_id: CampaignId;
  reason: ErrorBody;
}

/** The event types the SDK sends and reads (each has exactly one spelling). */
export const EventTypes = {
  subscribe: 'campaign:subscribe:v1:requested',
  unsubscribe: 'campaign:unsubscribe:v1:requested',
  snapshot: 'campaign:snapshot:v1:requested',
  update: 'campaign:update:v1:requested',
  feature: 'campaign:feature:v1:requested',
  config: 'campaign:config:v1:requested',
  text: 'campaign:text:v1:requested',
  ping: 'system:ping:v1:requested',
  state: 'campaign:state:v1:success',
  presence: 'campaign:presence:v1:success',
  resync: 'campaign:resync:v1:success',
  writable: 'campaign:writable:v1:success',
  overruled: 'campaign:overruled:v1:completed',
  subscriptionEnded: 'campaign:subscription:v1:completed',
} as const;

/** WebSocket close codes with a meaning for clients (docs/protocol.md "Close codes"). */
export const CloseCodes = {
  slowConsumer: 4008,
  pingTimeout: 4009,
  idle: 4010,
  sessionEnded: 4011,
} as const;
