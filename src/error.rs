//! The broker's one error type: a wire error code and a human message,
//! answered as an `error` message over WebSocket or a JSON body over HTTP.

use crate::protocol::ErrorCode;

/// A refused command. The message is for humans and never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// For `closed`: when the group opens next, if it does.
    pub opens_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Result of a broker command.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            opens_at: None,
        }
    }

    /// Outside a group's opening hours: its `closed_message` (or a default)
    /// and when it opens next.
    pub fn closed(
        message: impl Into<String>,
        opens_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Error {
        Error {
            opens_at,
            ..Error::new(ErrorCode::Closed, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Conflict, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Unauthorized, message)
    }

    pub fn too_large(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::TooLarge, message)
    }

    /// The `opens_at` field of the error's body: present for `closed`
    /// alone, null when the group does not open again soon.
    pub fn opens_field(&self) -> Option<Option<String>> {
        (self.code == ErrorCode::Closed)
            .then(|| self.opens_at.as_ref().map(crate::case::format_time))
    }

    /// The one answer for a code that does not exist, is not visible to the
    /// caller, or (for customers) is no longer joinable: nothing tells them
    /// apart.
    pub fn not_found() -> Error {
        Error::new(ErrorCode::NotFound, "no such case")
    }
}
