//! Every Redis key and channel Rally uses. Each key of one campaign carries the hash tag `{<id>}`,
//! so a campaign's keys live in one slot and its scripts work unchanged on Redis Cluster.
//!
//! | key | type | content | written by |
//! |---|---|---|---|
//! | `rally:{<id>}:campaign` | hash | `version` (decimal), `record` (JSON of the durable record) | store |
//! | `rally:{<id>}:events` | stream | entry id `<version>-0`, field `e` = JSON event; every event (the complete log) | store |
//! | `rally:{<id>}:snapshots` | stream | entry id `<version>-0`, field `s` = JSON state at that version, every 100 versions | store |
//! | `rally:{<id>}:turn` | string | the instance that claimed the next commit, for a moment | store |
//! | `rally:{<id>}:presence` | hash | one field per instance: its local viewers and an expiry | bus |
//! | `rally:{<id>}:media-owner` | string | `<instance hex>:<nonce>`: who runs the media session | media cluster |
//! | `rally:campaigns` | set | every campaign id (for listings) | store |
//! | `rally:secret:<name>` | string | shared secrets (the session key) | store |
//! | `rally:session:<session id>` | string | JSON session record; expires when the session ends | store |
//! | `rally:user:<user id>:sessions` | set | the user's session ids (pruned when listed) | store |
//! | `rally:{api-keys}` | hash | key id → JSON key record (never its token) | store |
//! | `rally:{api-keys}:uses` | hash | key id → when it was last used (unix nanoseconds) | store |
//! | `rally:{webhooks}` | hash | endpoint id → JSON endpoint record (cursors, log) | store |
//! | `rally:{webhooks}:revisions` | hash | endpoint id → its record's revision (compare-and-set) | store |
//! | `rally:{webhooks}:lease:<id>` | string | the instance delivering for the endpoint, for a moment | webhooks |
//!
//! | channel | carries |
//! |---|---|
//! | `rally:bus` | commit, record and presence notes between instances; sessions that ended |
//! | `rally:media:<instance hex>` | media signaling for the sessions an instance runs or visits |

use rally_app::model::{CampaignId, UserId};

pub fn campaign(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:campaign")
}

pub fn events(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:events")
}

pub fn snapshots(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:snapshots")
}

pub fn turn(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:turn")
}

pub fn presence(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:presence")
}

pub fn media_owner(id: &CampaignId) -> String {
    format!("rally:{{{id}}}:media-owner")
}

pub const CAMPAIGNS: &str = "rally:campaigns";

pub fn secret(name: &str) -> String {
    format!("rally:secret:{name}")
}

pub fn session(id: &str) -> String {
    format!("rally:session:{id}")
}

pub fn user_sessions(user: &UserId) -> String {
    format!("rally:user:{user}:sessions")
}

/// Both key hashes share a hash tag: one script touches both (one slot on Redis Cluster).
pub const API_KEYS: &str = "rally:{api-keys}";
pub const API_KEY_USES: &str = "rally:{api-keys}:uses";

/// Webhook endpoints, their revisions and leases share a hash tag (one slot on Redis Cluster).
pub const WEBHOOKS: &str = "rally:{webhooks}";
pub const WEBHOOK_REVISIONS: &str = "rally:{webhooks}:revisions";

pub fn webhook_lease(id: &str) -> String {
    format!("rally:{{webhooks}}:lease:{id}")
}

/// The channel of notes between instances.
pub const BUS_CHANNEL: &str = "rally:bus";

/// The media signaling channel of one instance.
pub fn media_channel(instance: u32) -> String {
    format!("rally:media:{instance:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_keys_share_one_hash_tag() {
        let id = CampaignId::parse("spring").unwrap();
        for key in [
            campaign(&id),
            events(&id),
            turn(&id),
            presence(&id),
            media_owner(&id),
        ] {
            assert!(key.starts_with("rally:{spring}:"), "{key}");
        }
        assert_eq!(media_channel(0x4fc7de), "rally:media:004fc7de");
    }
}
