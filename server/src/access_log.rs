//! The access log: one Debug line per HTTP request once its answer is ready — method, path,
//! status, duration — and a request id that every line the request causes carries (a span
//! around the handler) and that the answer returns as `x-request-id`, so a person reporting a
//! problem can quote it and an operator can find every line about it.
//!
//! Never logged: bodies, queries (a query may carry a token, an OAuth code or state) and the
//! tokens some paths carry (`/invite/<token>`, `/api/invites/<token>`), which are replaced by `…`.
//! The access line is Debug, per the log policy: a running server writes only lifecycle lines at
//! the default level. The span is Info, so that the lines a request causes at the default level
//! (a key made, a handler's panic) carry its id too; a span writes nothing by itself.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Longest request id taken from a proxy's `x-request-id`; a longer or odd one is replaced.
const MAX_ID_LEN: usize = 64;

/// The request's id: the one a proxy in front set, if it is a plain token, else a new one.
fn request_id(request: &Request) -> String {
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    match given {
        Some(id) => id.to_owned(),
        None => {
            let mut bytes = [0u8; 8];
            // Without randomness the id is still unique enough to follow one request.
            let _ = getrandom::fill(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// The path as logged: tokens in it replaced by `…`.
fn loggable_path(path: &str) -> String {
    for prefix in ["/api/invites/", "/invite/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.find('/').map_or("", |at| &rest[at..]);
            return format!("{prefix}…{tail}");
        }
    }
    path.to_owned()
}

/// Middleware: log the request when its answer is ready, with its id in a span around it.
pub async fn log_requests(request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let span = tracing::info_span!("request", request_id = %id);
    let method = request.method().clone();
    let path = loggable_path(request.uri().path());
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            duration_ms = micros as f64 / 1000.0,
            "request answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_paths_are_not_logged() {
        let table = [
            ("/api/invites/abc.def", "/api/invites/…"),
            ("/api/invites/abc.def/accept", "/api/invites/…/accept"),
            ("/invite/abc.def", "/invite/…"),
            ("/api/campaigns/spring", "/api/campaigns/spring"),
            ("/", "/"),
        ];
        for (path, logged) in table {
            assert_eq!(loggable_path(path), logged, "{path}");
        }
    }

    #[test]
    fn a_proxys_request_id_is_kept_only_when_plain() {
        let with = |value: &str| {
            let request = Request::builder()
                .header("x-request-id", value)
                .body(axum::body::Body::empty())
                .unwrap();
            request_id(&request)
        };
        assert_eq!(with("abc-123_x.y"), "abc-123_x.y");
        for odd in ["", "a b", "<script>", &"a".repeat(65)] {
            let id = with(odd);
            assert_ne!(id, odd);
            assert_eq!(id.len(), 16, "a new id for {odd:?}");
        }
    }
}
