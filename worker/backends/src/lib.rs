//! OpenRegistry's backend clients, written once against the core's ports so every host (native,
//! Cloudflare Workers, Spin) reaches the same services the same way:
//!
//! - [`neon`]: the `Sql` port over Neon's SQL-over-HTTP protocol (Postgres), through `HttpClient`;
//! - [`skynet`]: the `BlobStore` port on a Skynet portal (TUS pieces cut by the core's part
//!   planner, the unaligned tail in `Kv`), through `HttpClient`;
//! - [`s3`]: the `BlobStore` port on S3-compatible object storage (multipart parts cut by the same
//!   planner, SigV4 by `rusty-s3`), through `HttpClient`;
//! - [`tail`]: the unaligned tail of an upload in `Kv`, shared by both stores.
//!
//! Kept out of the protocol crate (`openregistry`) so that it holds only the OCI protocol, the
//! access policy, upload sessions and the ports; wasm-clean like it.

pub mod neon;
pub mod s3;
pub mod skynet;
pub mod tail;

pub use neon::{NeonConfig, NeonConfigError, NeonSql};
pub use s3::{
    valid_locator as valid_s3_locator, MultipartHandle, S3Config, S3ConfigError, S3Store, PART_SIZE,
};
pub use skynet::{SkynetConfig, SkynetStore, TUS_ALIGN};
