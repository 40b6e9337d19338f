//! wirt's management plane: a host daemon that keeps many VMs, each in its own `wirt vmm`
//! child process, behind a JSON REST API on a Unix socket — plus the client the CLI uses.
//!
//! Why a child per VM: a guest-triggered bug in one VMM (a panic, a crash in an engine)
//! can only take down that VM's process; the daemon notices, marks the VM `failed` and keeps
//! serving the others.
//!
//! Pieces, one module each: the wire types ([`model`]), errors with stable codes
//! ([`error`]), the VM state machine ([`lifecycle`]), persisted definitions ([`store`]), the
//! daemon ↔ child protocol ([`protocol`]), the child supervisor ([`supervisor`]), the VM
//! table and its operations ([`daemon`]), HTTP routing ([`routes`]), the socket listener
//! ([`server`]), the OpenAPI document ([`openapi`]) and the HTTP client ([`client`]).

pub mod client;
pub mod daemon;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod openapi;
pub mod protocol;
pub mod routes;
pub mod server;
pub mod store;
pub mod supervisor;

pub use daemon::Daemon;
pub use error::ApiError;
pub use server::{serve, ServeOptions};
