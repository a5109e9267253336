//! Any string as a session or invite token, in any header: verifying never panics and never
//! accepts what the key did not sign.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rally::auth::{identify, Keys};
use rally_app::model::Timestamp;

fuzz_target!(|token: &str| {
    let keys = Keys::new(b"fuzzing secret, not a real one");
    let now = Timestamp::from_unix_nanos(1_800_000_000_000_000_000);
    // Forged tokens: none verifies (the odds of guessing an HMAC are nil).
    assert!(keys.verify_session(token, now).is_err());
    assert!(keys.verify_invite(token, now).is_err());
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert("authorization", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("a=b; rally_session={token}")) {
        headers.insert("cookie", value);
    }
    assert!(!matches!(
        identify(&keys, &headers, Some(token), now),
        Ok(Some(_))
    ));
});
