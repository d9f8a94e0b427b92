//! OpenRegistry's platform-free core: an OCI Distribution Spec v1.1 registry as one request handler.
//!
//! An [`http::Request<Body>`] goes in, an [`http::Response<Body>`] comes out. The core depends on no
//! async runtime and no host SDK; everything it needs from the outside world comes through the ports
//! in [`ports`] (key-value sessions, SQL metadata, blob storage, outbound HTTP, a clock and
//! randomness). Hosts (native, Cloudflare Workers, Spin) are thin crates that supply those ports.

pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod digest;
pub mod error;
pub mod manifest;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod metadata;
pub mod migrations;
pub mod names;
pub mod operations;
pub mod planner;
pub mod ports;
pub mod range;
pub mod session;

pub use api::Registry;
pub use body::{Body, BodyError};
pub use config::Config;
pub use error::RegistryError;
pub use http;
pub use ports::Ports;
