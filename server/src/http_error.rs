//! The error every HTTP handler answers with: `{"error": {"code": "...", "message": "..."}}` and
//! the code's HTTP status. The same [`ErrorBody`] a WebSocket `failed` reply carries, so a client
//! reads errors one way whichever path it used.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rally_app::protocol::{ErrorBody, ErrorCode, ErrorResponse};

#[derive(Debug)]
pub struct ApiError(ErrorBody);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody::new(code, message))
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<ErrorBody> for ApiError {
    fn from(error: ErrorBody) -> Self {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorResponse { error: self.0 })).into_response()
    }
}
