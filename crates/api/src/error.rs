//! API errors: each has an HTTP status and a stable `code` that scripts can match on; the
//! body is always `{"code": ..., "message": ...}`. A user's mistake is never a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::model::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (400 `malformed_json`).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// JSON of the wrong shape: unknown field, wrong type, missing field (422 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Values that do not make a VM: sizes, vCPUs, unreadable kernel (422 `invalid_config`).
    #[error("invalid VM config: {0}")]
    InvalidConfig(String),
    /// 413 `body_too_large`.
    #[error("request body too large: the limit is {0} bytes")]
    BodyTooLarge(usize),
    /// 404 `vm_not_found`.
    #[error("no VM named {0:?}")]
    NotFound(String),
    /// 404 `no_route`.
    #[error("no such path: {0}")]
    NoRoute(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409 `vm_exists`.
    #[error("a VM named {0:?} already exists")]
    Exists(String),
    /// 409 `wrong_state`.
    #[error("{0}")]
    WrongState(String),
    /// 409 `console_busy`.
    #[error("the console of VM {0:?} is attached elsewhere: detach there first")]
    ConsoleBusy(String),
    /// 426 `upgrade_required`.
    #[error("the console is a stream: send Connection: upgrade and Upgrade: wirt-console")]
    UpgradeRequired,
    /// The VMM could not start the VM (422 `start_failed`): engine unavailable, kernel
    /// unreadable now, guest image not loadable.
    #[error("cannot start VM {name:?}: {message}")]
    StartFailed { name: String, message: String },
    /// The VMM process did not answer (503 `vmm_unavailable`).
    #[error("the VMM of {name:?} did not answer: {message}")]
    VmmUnavailable { name: String, message: String },
    /// The host failed (500 `internal`): disk full, cannot spawn a process.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_)
            | ApiError::InvalidConfig(_)
            | ApiError::StartFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Exists(_) | ApiError::WrongState(_) | ApiError::ConsoleBusy(_) => {
                StatusCode::CONFLICT
            }
            ApiError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ApiError::VmmUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable error code (documented in `openapi.json` under `Error`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::NotFound(_) => "vm_not_found",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Exists(_) => "vm_exists",
            ApiError::WrongState(_) => "wrong_state",
            ApiError::ConsoleBusy(_) => "console_busy",
            ApiError::UpgradeRequired => "upgrade_required",
            ApiError::StartFailed { .. } => "start_failed",
            ApiError::VmmUnavailable { .. } => "vmm_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!("{self}");
        }
        (self.status(), Json(self.body())).into_response()
    }
}
