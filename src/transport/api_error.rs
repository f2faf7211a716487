//! An error as an HTTP response: the same `{code, message}` body as over
//! WebSocket, with the matching status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let e = &self.0;
        let mut body = json!({ "code": e.code, "message": e.message });
        if let Some(opens_at) = e.opens_field() {
            body["opens_at"] = json!(opens_at);
        }
        let mut resp = (status, Json(body)).into_response();
        // Closed: try again when the group opens.
        if let Some(at) = e.opens_at {
            let secs = (at - chrono::Utc::now()).num_seconds().max(1);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
