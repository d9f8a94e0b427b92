//! OpenRegistry's platform-free core: an OCI Distribution Spec v1.1 registry as one request handler.
//!
//! An [`http::Request<Body>`] goes in, an [`http::Response<Body>`] comes out. The core depends on no
//! async runtime and no host SDK; everything it needs from the outside world comes through the ports
//! in [`ports`] (key-value sessions, SQL metadata, blob storage, outbound HTTP, a clock and
//! randomness). Hosts (native, Cloudflare Workers, Spin) are thin crates that supply those ports;
//! backend clients (`openregistry-backends`) are written against them.
//!
//! The public surface: [`Registry`] and its [`Config`]; the [`ports`] and the [`body`] that flows
//! through them; [`auth`] (tokens, users, the access [`auth::Policy`]); the [`operations`] seam and
//! its events; the sans-IO [`planner`]; [`migrations`]; and the value types stores need
//! ([`digest`], [`range`]). Routing, handlers, manifests, metadata queries and upload sessions are
//! private.

mod api;
pub mod auth;
pub mod body;
pub mod cache;
mod config;
pub mod digest;
mod error;
pub mod gc;
mod manifest;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod metadata;
pub mod migrations;
mod names;
pub mod operations;
pub mod planner;
pub mod ports;
pub mod range;
mod session;

pub use api::{route_name, webapp_bytes, ApiError, Registry};
pub use body::{Body, BodyError};
pub use config::Config;
pub use error::RegistryError;
pub use http;
pub use names::{Reference, RepoName, Tag};
pub use ports::Ports;
pub use session::is_live as upload_is_live;
