//! Any string as a session, invite, sign-in attempt or backend-minted token, in any header:
//! checking it never panics and never accepts what the key did not sign; as a sign-in's return
//! path it never leads off the site.
#![no_main]

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rally::auth::{token_from_request, Keys};
use rally::jwt::{JwtSettings, JwtVerifier};
use rally_app::model::Timestamp;

/// Poll once: checking an HS256 token never waits for anything.
fn now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fuzz_target!(|token: &str| {
    let keys = Keys::new(b"fuzzing secret, not a real one");
    let now_ts = Timestamp::from_unix_nanos(1_800_000_000_000_000_000);
    // Forged tokens: none verifies (the odds of guessing an HMAC are nil).
    assert!(keys.verify_session(token, now_ts).is_err());
    assert!(keys.verify_invite(token, now_ts).is_err());
    assert!(rally::oidc::open_attempt(&keys, token).is_none());
    // As a sign-in's return path: only ever a path on this site.
    let back = rally::oidc::login::local_path(Some(token));
    assert!(back.starts_with('/') && !back.starts_with("//") && !back.starts_with("/\\"));
    let jwt = JwtVerifier::new(JwtSettings {
        secret: Some("fuzzing secret for backend tokens, not real".into()),
        jwks_url: None,
        audience: "rally".into(),
        issuer: None,
        leeway: Duration::from_secs(30),
    });
    let checked = now(jwt.verify(token)).expect("HS256 checks never wait");
    assert!(checked.is_err(), "a forged backend token was accepted");

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert("authorization", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("a=b; rally_session={token}")) {
        headers.insert("cookie", value);
    }
    if let Some((found, _)) = token_from_request(&headers, Some(token)) {
        assert!(keys.verify_session(found, now_ts).is_err());
    }
});
