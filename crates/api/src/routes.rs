//! HTTP routing: paths and methods → [`Daemon`] operations, JSON in and out. The table
//! [`ROUTES`] is what `openapi.json` must document (a test checks both ways).

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::model::{BalloonTarget, VmInfo, VmSpec};

/// The largest request body accepted (a VM definition is far smaller).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The protocol name of the console upgrade (`Upgrade: wirt-console`).
pub const CONSOLE_PROTOCOL: &str = "wirt-console";

/// Every (method, path) the router serves.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/v1/vms"),
    ("POST", "/v1/vms"),
    ("GET", "/v1/vms/{name}"),
    ("DELETE", "/v1/vms/{name}"),
    ("POST", "/v1/vms/{name}/start"),
    ("POST", "/v1/vms/{name}/pause"),
    ("POST", "/v1/vms/{name}/resume"),
    ("POST", "/v1/vms/{name}/shutdown"),
    ("POST", "/v1/vms/{name}/kill"),
    ("GET", "/v1/vms/{name}/console"),
    ("PUT", "/v1/vms/{name}/balloon"),
    ("GET", "/v1/events"),
];

/// The API's router over `daemon`.
pub fn router(daemon: Daemon) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(info).delete(delete))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/pause", post(pause))
        .route("/v1/vms/{name}/resume", post(resume))
        .route("/v1/vms/{name}/shutdown", post(shutdown))
        .route("/v1/vms/{name}/kill", post(kill))
        .route("/v1/vms/{name}/console", get(console))
        .route("/v1/vms/{name}/balloon", put(balloon))
        .route("/v1/events", get(events))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(daemon)
}

/// A JSON body whose every failure is an [`ApiError`] (400, 413 or 422).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(BODY_LIMIT)
            } else {
                ApiError::MalformedJson(e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a request body: syntax errors are 400, wrong shapes 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(e.to_string())
            }
            Category::Data => ApiError::InvalidRequest(e.to_string()),
        }
    })
}

/// The `{name}` path segment.
pub struct VmName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for VmName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(n)| VmName(n))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
}

#[derive(Serialize)]
struct VmList {
    vms: Vec<VmInfo>,
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn list(State(d): State<Daemon>) -> Response {
    Json(VmList {
        vms: d.list().await,
    })
    .into_response()
}

async fn create(State(d): State<Daemon>, JsonBody(spec): JsonBody<VmSpec>) -> Response {
    match d.create(spec) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn reply(r: Result<VmInfo, ApiError>, ok: StatusCode) -> Response {
    match r {
        Ok(info) => (ok, Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn info(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.info(&n).await, StatusCode::OK)
}

async fn delete(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    match d.delete(&n).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn start(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.start(&n).await, StatusCode::OK)
}

async fn pause(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.pause(&n).await, StatusCode::OK)
}

async fn resume(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.resume(&n).await, StatusCode::OK)
}

async fn shutdown(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.shutdown(&n).await, StatusCode::ACCEPTED)
}

async fn kill(State(d): State<Daemon>, VmName(n): VmName) -> Response {
    reply(d.kill(&n).await, StatusCode::OK)
}

/// Sets the balloon's target; 202: the guest inflates or deflates in its own time.
async fn balloon(
    State(d): State<Daemon>,
    VmName(n): VmName,
    JsonBody(target): JsonBody<BalloonTarget>,
) -> Response {
    reply(d.set_balloon(&n, target).await, StatusCode::ACCEPTED)
}

fn wants_console_upgrade(h: &HeaderMap) -> bool {
    let has = |name, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, CONSOLE_PROTOCOL)
}

/// Attaches to the serial console: after `101 Switching Protocols` the connection carries
/// raw console bytes both ways until either side closes it.
async fn console(State(d): State<Daemon>, VmName(n): VmName, mut req: Request) -> Response {
    let lease = match d.console(&n) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    if !wants_console_upgrade(req.headers()) {
        return ApiError::UpgradeRequired.into_response();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::UpgradeRequired.into_response();
    };
    let mut vm_side = match tokio::net::UnixStream::connect(&lease.socket).await {
        Ok(s) => s,
        Err(e) => {
            return ApiError::VmmUnavailable {
                name: n,
                message: format!("cannot reach the console: {e}"),
            }
            .into_response()
        }
    };
    tokio::spawn(async move {
        let _lease = lease; // the console stays reserved until the stream ends
        if let Ok(upgraded) = on_upgrade.await {
            let mut client_side = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client_side, &mut vm_side).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, CONSOLE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::SWITCHING_PROTOCOLS.into_response())
}

/// State changes as newline-delimited JSON, for as long as the client listens.
async fn events(State(d): State<Daemon>) -> Response {
    let rx = d.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn no_route(req: Request) -> Response {
    ApiError::NoRoute(req.uri().path().to_string()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}
