//! The one error type of the HTTP layer: a stable JSON body
//! `{"error": {"code": "...", "message": "..."}}`.
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_store::StoreError;
use tracing::error;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `Retry-After`: the sender should try again.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u32,
    ) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A store error, as the client should see it. Internal errors are logged here and
    /// returned without detail.
    pub fn from_store(e: StoreError, retry_after: u32) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::BadInput(msg) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", msg)
            }
            StoreError::Conflict(msg) | StoreError::MappingConflict(msg) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg)
            }
            // A value the database refused: the caller's input.
            e if e.is_bad_data() => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                match e.bad_data_code().as_deref() {
                    Some("22021") => "text cannot contain NUL (\\u0000) characters".to_owned(),
                    _ => format!("a value in the request cannot be used: {e}"),
                },
            ),
            e if e.is_unavailable() => {
                error!(error = %e, "database unavailable");
                ApiError::unavailable(
                    "database_unavailable",
                    "the database is unavailable; retry later",
                    retry_after,
                )
            }
            e => {
                error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
