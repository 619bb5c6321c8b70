//! The local health endpoint, its snapshot and the Prometheus metrics.
//!
//! Stages never talk to the endpoint: they publish their state on the shared
//! [`StatusBoard`](crate::status::StatusBoard) and count events on a shared [`Metrics`]. The
//! server ([`serve`]) only reads those two and
//! answers `GET /health`, `/health/stream`, `/live` and `/metrics`
//! (`../shared/spec/INTERFACE.md`, "Health endpoint"). Nothing here may block a stage: every
//! publication is a short lock and a watch-channel bump, and a stuck or hostile HTTP client
//! can only cost its own connection.
//!
//! Layout: [`snapshot`] (the JSON contract, a pure function of the board), [`server`] (hyper 1
//! HTTP/1.1 with bounded connections and timeouts), [`metrics`] (prometheus-client registry).

mod admission;
pub mod metrics;
pub mod server;
pub mod snapshot;

pub use metrics::Metrics;
pub use server::{serve, serve_with, ServeOptions};
pub use snapshot::{snapshot, Snapshot};
