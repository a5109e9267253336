//! The Redis bus: notifications over pub/sub (channel `rally:bus`), presence in a hash per
//! campaign (`rally:{<id>}:presence`, one field per instance with an expiry, so a dead instance's
//! viewers disappear within [`PRESENCE_TTL`]).
//!
//! On Redis Cluster, classic pub/sub is broadcast to every node, so the channel works unchanged;
//! sharded pub/sub (`SPUBLISH`) would be the next step for very large clusters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rally_app::model::{CampaignId, Viewer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{BusFuture, BusNote, EventBus, Incoming, SentNote};
use crate::redis::{keys, Heard, RedisLink};
use crate::shutdown::ShutdownSignal;

/// How long an instance's presence entry counts without a refresh.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct PresenceEntry {
    expires_ms: u64,
    viewers: Vec<Viewer>,
    people: u32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct RedisBus {
    link: RedisLink,
    instance: u32,
}

impl RedisBus {
    /// Start the bus: returns it and the notes other instances send, for the manager.
    pub fn start(
        link: RedisLink,
        instance: u32,
        shutdown: ShutdownSignal,
    ) -> (RedisBus, mpsc::UnboundedReceiver<Incoming>) {
        let (incoming, notes) = mpsc::unbounded_channel();
        link.listen(keys::BUS_CHANNEL.to_owned(), shutdown, move |heard| {
            let payload = match heard {
                Heard::Resubscribed => {
                    metrics::counter!("rally_bus_reconnects_total").increment(1);
                    let _ = incoming.send(Incoming::Resync);
                    return;
                }
                Heard::Message(payload) => payload,
            };
            let Ok(envelope) = serde_json::from_str::<SentNote>(&payload) else {
                metrics::counter!("rally_bus_errors_total").increment(1);
                return;
            };
            if envelope.from == instance {
                return;
            }
            metrics::counter!("rally_bus_received_total").increment(1);
            tracing::debug!(campaign = ?envelope.note.campaign(), "bus note received");
            let _ = incoming.send(match envelope.note {
                BusNote::SessionEnded { session } => Incoming::SessionEnded(session),
                note => Incoming::Note(note),
            });
        });
        (RedisBus { link, instance }, notes)
    }
}

impl EventBus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shared(&self) -> bool {
        true
    }

    fn publish(&self, note: BusNote) -> BusFuture<'_, ()> {
        Box::pin(async move {
            let payload = serde_json::to_string(&SentNote {
                from: self.instance,
                note,
            })
            .expect("notes serialize");
            match self.link.publish(keys::BUS_CHANNEL, &payload).await {
                Ok(Ok(_)) => {
                    metrics::counter!("rally_bus_published_total").increment(1);
                    tracing::debug!("bus note published");
                }
                _ => metrics::counter!("rally_bus_errors_total").increment(1),
            }
        })
    }

    fn share_presence(
        &self,
        campaign: &CampaignId,
        viewers: Vec<Viewer>,
        people: u32,
    ) -> BusFuture<'_, ()> {
        let key = keys::presence(campaign);
        let field = format!("{:08x}", self.instance);
        Box::pin(async move {
            let result = if people == 0 {
                self.link
                    .run(|mut conn| async move {
                        redis::cmd("HDEL")
                            .arg(&key)
                            .arg(&field)
                            .query_async::<i64>(&mut conn)
                            .await
                    })
                    .await
                    .map(|r| r.map(|_| ()))
            } else {
                let entry = serde_json::to_string(&PresenceEntry {
                    expires_ms: now_ms() + PRESENCE_TTL.as_millis() as u64,
                    viewers,
                    people,
                })
                .expect("presence serializes");
                self.link
                    .run(|mut conn| async move {
                        redis::pipe()
                            .hset(&key, &field, &entry)
                            .ignore()
                            .pexpire(&key, 2 * PRESENCE_TTL.as_millis() as i64)
                            .ignore()
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await
            };
            if !matches!(result, Ok(Ok(()))) {
                metrics::counter!("rally_bus_errors_total").increment(1);
            }
        })
    }

    fn remote_presence(&self, campaign: &CampaignId) -> BusFuture<'_, (Vec<Viewer>, u32)> {
        let key = keys::presence(campaign);
        let own = format!("{:08x}", self.instance);
        Box::pin(async move {
            let entries: Vec<(String, String)> = match self
                .link
                .run(|mut conn| {
                    let key = key.clone();
                    async move { redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await }
                })
                .await
            {
                Ok(Ok(entries)) => entries,
                _ => return (Vec::new(), 0),
            };
            let now = now_ms();
            let mut viewers = Vec::new();
            let mut people = 0u32;
            let mut expired = Vec::new();
            for (field, value) in entries {
                if field == own {
                    continue;
                }
                match serde_json::from_str::<PresenceEntry>(&value) {
                    Ok(entry) if entry.expires_ms > now => {
                        viewers.extend(entry.viewers);
                        people += entry.people;
                    }
                    _ => expired.push(field),
                }
            }
            if !expired.is_empty() {
                // A dead instance's entry: clean it up for everyone.
                let _ = self
                    .link
                    .run(|mut conn| async move {
                        redis::cmd("HDEL")
                            .arg(&key)
                            .arg(&expired)
                            .query_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            }
            (viewers, people)
        })
    }
}
