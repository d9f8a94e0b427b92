//! Every way a request can fail, as one typed enum, and its single mapping to an OCI error
//! response (`{"errors":[{"code","message","detail"}]}` with the right status code).

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{Body, BodyError};
use crate::digest::DigestError;
use crate::ports::{SqlError, StoreError, Unavailable};

/// A registry failure, named after the OCI error code it answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("manifest references a manifest or blob unknown to the repository: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest larger than {limit} bytes")]
    ManifestTooLarge { limit: u64 },
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// A request body larger than the advertised `OCI-Chunk-Max-Length` (the host's limit).
    #[error("the body is larger than this registry's chunk limit of {limit} bytes (OCI-Chunk-Max-Length); send smaller chunks")]
    ChunkTooLarge { limit: u64 },
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    /// A chunk that does not start where the upload stands; carries the current offset and the
    /// URL to continue at.
    #[error("requested range not satisfiable: upload is at byte {offset}")]
    UploadRangeInvalid {
        offset: u64,
        location: Option<String>,
    },
    /// A `Range` on a blob read that lies outside the blob; carries the blob size.
    #[error("requested range not satisfiable: blob has {size} bytes")]
    BlobRangeInvalid { size: u64 },
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// No valid credentials for what the request needs; `challenge` is the `WWW-Authenticate`.
    #[error("authentication required: {reason}")]
    Unauthorized { challenge: String, reason: String },
    /// The token allows the route but not this use of it (Org mode: a tag it may not push to,
    /// move or delete). A Docker client asking for a new token would get the same rights, so this
    /// is a 403, not a 401 challenge.
    #[error("requested access to the resource is denied: {0}")]
    Denied(String),
    /// A method the endpoint does not have; `allow` lists those it has (the `Allow` header).
    #[error("method not allowed; this endpoint allows {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// No endpoint has this path.
    #[error("no such endpoint")]
    NotFound,
    /// The request's body broke off (the client went away). No progress was recorded.
    #[error("request body incomplete: {0}")]
    BodyIncomplete(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A broken invariant inside the registry (a bug), never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// The OCI `errors[].code` and HTTP status this failure answers with.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        use RegistryError::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadInvalid(_) => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
            DigestInvalid(_) => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
            ManifestInvalid(_) => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
            ManifestTooLarge { .. } => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
            NameInvalid(_) => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
            SizeInvalid(_) => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
            ChunkTooLarge { .. } => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
            TagInvalid(_) => ("TAG_INVALID", StatusCode::BAD_REQUEST),
            // The spec's code table has no range code, and its codes are the only ones allowed:
            // an out-of-order chunk is an invalid upload, an unsatisfiable read an invalid size.
            UploadRangeInvalid { .. } => ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
            BlobRangeInvalid { .. } => ("SIZE_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
            Unsupported(_) => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
            Unauthorized { .. } => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            Denied(_) => ("DENIED", StatusCode::FORBIDDEN),
            MethodNotAllowed { .. } => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
            NotFound => ("UNSUPPORTED", StatusCode::NOT_FOUND),
            BodyIncomplete(_) => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
            Unavailable(_) => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
            Internal(_) => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The single place where an error becomes a response.
    pub fn into_response(self) -> Response<Body> {
        let (code, status) = self.code_and_status();
        match &self {
            RegistryError::Unavailable(_) | RegistryError::Internal(_) => {
                tracing::error!(error = %self, "request failed on the server side");
            }
            _ => tracing::debug!(error = %self, code, "request refused"),
        }
        let detail = match &self {
            RegistryError::UploadRangeInvalid { offset, .. } => json!({ "offset": offset }),
            RegistryError::BlobRangeInvalid { size } => json!({ "size": size }),
            RegistryError::ManifestTooLarge { limit } => json!({ "limit": limit }),
            RegistryError::ChunkTooLarge { limit } => json!({ "limit": limit }),
            _ => serde_json::Value::Null,
        };
        let body = json!({
            "errors": [{ "code": code, "message": self.to_string(), "detail": detail }]
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            RegistryError::UploadRangeInvalid { offset, location } => {
                if let Ok(value) = HeaderValue::from_str(&range_header(*offset)) {
                    headers.insert(header::RANGE, value);
                }
                if let Some(value) = location
                    .as_deref()
                    .and_then(|l| HeaderValue::from_str(l).ok())
                {
                    headers.insert(header::LOCATION, value);
                }
            }
            RegistryError::BlobRangeInvalid { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            RegistryError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            RegistryError::Unauthorized { challenge, .. } => {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            RegistryError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

/// The `Range` header of an upload holding `offset` bytes: `0-<offset-1>` (`0-0` when empty, as
/// Docker's registry answers, since `0--1` is not a range).
pub fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<DigestError> for RegistryError {
    fn from(err: DigestError) -> Self {
        RegistryError::DigestInvalid(err.to_string())
    }
}

impl From<SqlError> for RegistryError {
    fn from(err: SqlError) -> Self {
        match err {
            SqlError::Unavailable(u) => RegistryError::Unavailable(u),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => RegistryError::Internal(format!(
                "storage lost an object the database knows: {what}"
            )),
            StoreError::RangeNotSatisfiable => RegistryError::BlobRangeInvalid { size: 0 },
            StoreError::Body(body) => body.into(),
            StoreError::Refused(why) => RegistryError::BlobUploadInvalid(why),
            StoreError::Unavailable(u) => RegistryError::Unavailable(u),
            StoreError::Failed(why) => RegistryError::Internal(why),
        }
    }
}

impl From<BodyError> for RegistryError {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::Transport(why) => RegistryError::BodyIncomplete(why),
            BodyError::TooLarge { limit } => {
                RegistryError::SizeInvalid(format!("body larger than {limit} bytes"))
            }
        }
    }
}
