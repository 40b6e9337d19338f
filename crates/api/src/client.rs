//! An HTTP/1.1 client for the daemon's Unix socket, used by `wirt vm` and the tests: plain
//! requests, a streamed response (events), and the console upgrade.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header;
use hyper_util::rt::TokioIo;

use crate::model::{ErrorBody, Event};
use crate::routes::CONSOLE_PROTOCOL;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the wirt daemon at {}: {source} (is `wirt serve` running, and may you use its socket?)", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request to the daemon: {0}")]
    Request(#[from] hyper::http::Error),
    /// The daemon answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

/// A response: status and the whole body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, or `Null` if it is empty or not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `Ok(self)` on 2xx, else the daemon's error as a [`ClientError::Api`].
    pub fn into_result(self) -> Result<Reply, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => (e.code, e.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&self.body).into_owned(),
            ),
        };
        Err(ClientError::Api {
            status: self.status,
            code,
            message,
        })
    }
}

/// The daemon at a socket path.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }

    fn build(
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "wirt");
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(b.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
    }

    /// Sends one request and reads the whole response, whatever its status.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(Self::build(method, path, body)?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }

    /// Sends a JSON body (or none) and returns the 2xx reply's JSON, or the API error.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map(|v| v.to_string().into_bytes());
        Ok(self.send(method, path, body).await?.into_result()?.json())
    }

    /// Opens a GET whose body is a stream (e.g. `/v1/events`).
    pub async fn stream(&self, path: &str) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        Ok(sender.send_request(Self::build("GET", path, None)?).await?)
    }

    /// Follows `/v1/events`.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let resp = self.stream("/v1/events").await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(Reply { status, body }
                .into_result()
                .err()
                .unwrap_or(ClientError::Api {
                    status,
                    code: "unknown".into(),
                    message: "the daemon did not open the event stream".into(),
                }));
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// Attaches to VM `name`'s serial console: a byte stream both ways.
    pub async fn attach_console(
        &self,
        name: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let mut sender = self.connect().await?;
        let req = hyper::Request::builder()
            .method("GET")
            .uri(format!("/v1/vms/{name}/console"))
            .header(header::HOST, "wirt")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, CONSOLE_PROTOCOL)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(Reply { status, body }
                .into_result()
                .err()
                .unwrap_or(ClientError::Api {
                    status,
                    code: "unknown".into(),
                    message: "the daemon did not open the console".into(),
                }));
        }
        Ok(TokioIo::new(hyper::upgrade::on(resp).await?))
    }
}

/// The state changes the daemon reports, one [`Event`] at a time.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event, or `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                match serde_json::from_slice(&line) {
                    Ok(ev) => return Ok(Some(ev)),
                    Err(_) => continue, // not an event: skip the line
                }
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
