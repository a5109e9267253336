//! The server's one source of wall-clock time. Pure cores take time as an argument; shells call this.

use std::time::{SystemTime, UNIX_EPOCH};

use rally_app::model::Timestamp;

pub fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Timestamp::from_unix_nanos(nanos)
}
