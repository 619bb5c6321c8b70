//! gps-agent: an on-vehicle GPS telematics edge agent.
//!
//! A fix's way through the agent, one module per stage:
//!
//! 1. [`gnss`]: serial or file source, framing, NMEA parsing, epoch assembly.
//! 2. [`validate`]: an epoch becomes an accepted [`fix::Fix`] or a [`rejection::Rejection`].
//!    [`pipeline`] joins the two: receiver bytes to verdicts, the one way everything takes.
//! 3. [`buffer`]: every accepted fix is stored in SQLite with a `seq` before it is sent.
//! 4. [`uplink`]: MQTT publishing, acknowledgement window, backoff, circuit breaker.
//! 5. [`health`]: the local endpoint (`/health`, `/health/stream`, `/live`, `/metrics`).
//!
//! [`sim`] is the project's own NMEA receiver simulator (demo and tests).
//!
//! [`config`] reads and checks the TOML file; [`cli`] is the command line. Shared types live
//! in small files of their own: [`fix`], [`rejection`], [`error`].

pub mod app;
pub mod buffer;
pub mod cli;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod fix;
pub mod gnss;
pub mod health;
pub mod logging;
pub mod notify;
pub mod pipeline;
pub mod rejection;
pub mod report;
pub mod sim;
pub mod status;
pub mod uplink;
pub mod validate;
