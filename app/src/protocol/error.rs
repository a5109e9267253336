//! The error every `failed` reply and every HTTP API error carries: a stable machine code and a
//! human message. Clients branch on `code`, never on `message`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, unknown type, wrong field types, invalid ids.
    Invalid,
    /// The named thing (campaign, route, session) does not exist.
    NotFound,
    /// The sender is known but not allowed to do this.
    Forbidden,
    /// The sender is not signed in where that is required.
    Unauthorized,
    /// The change was based on an outdated version of a field it touches.
    Conflict,
    /// The sender exceeded a rate limit; retry later.
    RateLimited,
    /// A per-connection quota is used up (e.g. the number of subscriptions); free some first.
    LimitExceeded,
    /// A frame, payload or value is over its documented size limit.
    TooLarge,
    /// The server cannot take writes right now (shutting down, store or bus unavailable); retry.
    Unavailable,
    /// A bug on the server. The request may be retried; the incident is logged.
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the API answers with for this code.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::Invalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code": "...", "message": "..."}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// What the HTTP API answers when it refuses a request: `{"error": {"code", "message"}}`, with
/// the code's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// Longest error message, in bytes. Messages may quote what a client sent (a decoder naming the
/// bad value); a reply never echoes more than this of it.
pub const MESSAGE_MAX_BYTES: usize = 300;

impl ErrorBody {
    /// An error; a message over [`MESSAGE_MAX_BYTES`] is cut (at a character boundary) and
    /// marked with "…".
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MESSAGE_MAX_BYTES {
            let mut end = MESSAGE_MAX_BYTES - '…'.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ErrorBody { code, message }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = format!("invalid value: string \"{}\"", "é".repeat(30_000));
        let body = ErrorBody::new(ErrorCode::Invalid, long);
        assert!(
            body.message.len() <= MESSAGE_MAX_BYTES,
            "{}",
            body.message.len()
        );
        assert!(body.message.ends_with('…'));
        let short = ErrorBody::new(ErrorCode::Invalid, "fine");
        assert_eq!(short.message, "fine");
    }

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::Invalid,
            ErrorCode::NotFound,
            ErrorCode::Forbidden,
            ErrorCode::Unauthorized,
            ErrorCode::Conflict,
            ErrorCode::RateLimited,
            ErrorCode::LimitExceeded,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }
}
