//! Which instance runs a campaign's media session (Redis mode): a lease per campaign,
//! `rally:{<campaign>}:media-owner` = `<instance hex>:<nonce>`, that expires after [`LEASE_TTL`]
//! unless its holder renews it (every [`LEASE_RENEW`]). Taking, renewing and releasing are each
//! one Lua script, so they are atomic against the other instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rally_app::model::CampaignId;
use redis::Script;

use super::call::MediaError;
use crate::redis::{keys, Outage, RedisLink};

/// How long a lease lasts without renewal: how long a dead owner's campaign waits before
/// another instance may take its media session over.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often owners renew leases, and instances check the leases of their away participants
/// and confirm those participants to the owners.
pub const LEASE_RENEW: Duration = Duration::from_secs(3);
/// Who holds a campaign's media session: `<instance hex>:<nonce>`. The nonce tells two
/// sessions of one instance apart, so a session that ended cannot release its successor's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(String);

impl Lease {
    pub fn owner(&self) -> Option<u32> {
        let (instance, _) = self.0.split_once(':')?;
        u32::from_str_radix(instance, 16).ok()
    }
}

/// Where a join goes.
pub enum Location {
    /// This instance just took the lease: start the session with it.
    Here(Lease),
    /// Another instance does.
    Away(Lease),
}

/// Who holds a lease, as far as Redis says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    Instance(u32),
    /// Redis did not answer.
    Unknown,
}

/// This instance's leases.
pub struct Leases {
    link: RedisLink,
    instance: u32,
    next_nonce: AtomicU64,
    /// Claims run one at a time: two joins for an unowned campaign must not both start a
    /// session here.
    pub claiming: tokio::sync::Mutex<()>,
}

/// Set the lease if free (`OK`), or return who holds it; an instance's own stale lease (its
/// session ended without releasing it) is replaced.
fn claim_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"local held = redis.call('GET', KEYS[1])
if (not held) or string.sub(held, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return held",
        )
    })
}

/// Extend our lease, or take it back if it lapsed and nobody took it: 1; someone else's: 0.
fn renew_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"local held = redis.call('GET', KEYS[1])
if (not held) or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0",
        )
    })
}

/// Delete our lease, and only ours.
fn release_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
        )
    })
}

impl Leases {
    pub fn new(link: RedisLink, instance: u32) -> Self {
        Leases {
            link,
            instance,
            next_nonce: AtomicU64::new(1),
            claiming: tokio::sync::Mutex::new(()),
        }
    }

    /// Where `campaign`'s session runs, taking the lease if nobody holds it. The caller holds
    /// [`Leases::claiming`] and has checked that no session runs here.
    pub async fn claim(&self, campaign: &CampaignId) -> Result<Location, MediaError> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let mine = format!("{:08x}:{nonce}", self.instance);
        let prefix = format!("{:08x}:", self.instance);
        let key = keys::media_owner(campaign);
        let held: String = self
            .link
            .run(|mut conn| {
                let (key, mine) = (key.clone(), mine.clone());
                async move {
                    claim_script()
                        .key(&key)
                        .arg(&mine)
                        .arg(LEASE_TTL.as_millis() as u64)
                        .arg(&prefix)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await
            .map_err(|err| MediaError::Unavailable(err.to_string()))?
            .map_err(|err| MediaError::Unavailable(err.to_string()))?;
        Ok(if held == mine {
            Location::Here(Lease(mine))
        } else {
            Location::Away(Lease(held))
        })
    }

    /// Extend `lease` (or take it back if it lapsed and nobody took it): `false` when another
    /// instance holds it now.
    pub async fn renew(&self, campaign: &CampaignId, lease: &Lease) -> Result<bool, Outage> {
        let key = keys::media_owner(campaign);
        let renewed = self
            .link
            .run(|mut conn| async move {
                renew_script()
                    .key(&key)
                    .arg(&lease.0)
                    .arg(LEASE_TTL.as_millis() as u64)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        // An error reply from the script counts as "still ours": nothing says otherwise.
        Ok(renewed.map_or(true, |held| held == 1))
    }

    /// Give `lease` up, if it is still ours.
    pub async fn release(&self, campaign: &CampaignId, lease: &Lease) {
        let key = keys::media_owner(campaign);
        let _ = self
            .link
            .run(|mut conn| async move {
                release_script()
                    .key(&key)
                    .arg(&lease.0)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
    }

    /// Who holds `campaign`'s lease. By instance, not nonce: an owner may restart a session
    /// it ran under a new nonce.
    pub async fn holder(&self, campaign: &CampaignId) -> Holder {
        let key = keys::media_owner(campaign);
        let held = self
            .link
            .run(|mut conn| async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await;
        match held {
            Ok(Ok(Some(lease))) => match Lease(lease).owner() {
                Some(instance) => Holder::Instance(instance),
                None => Holder::Nobody,
            },
            Ok(Ok(None)) => Holder::Nobody,
            Ok(Err(_)) | Err(_) => Holder::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_instance() {
        assert_eq!(Lease("004fc7de:17".into()).owner(), Some(0x004f_c7de));
        assert_eq!(Lease("garbage".into()).owner(), None);
        assert_eq!(Lease("zz:1".into()).owner(), None);
    }
}
