//! The web app: its files, embedded at build time (`webapp/`), served at `/` and `/ui/…` by the
//! handler on every host, with a strict Content-Security-Policy (nothing but this origin: no
//! inline script, no CDN, no frames).
//!
//! It is plain HTML, CSS and one ES module, with no framework and no build step, so the release
//! build needs no Node and the Worker bundle grows by the files' own size.

use std::sync::OnceLock;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::body::Body;
use crate::error::RegistryError;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../../../webapp/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../../webapp/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../../webapp/app.css"),
    },
    Asset {
        path: "/ui/icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../../../webapp/icon.svg"),
    },
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether a path is the web app's.
pub(super) fn is_webapp_path(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// The total size of the web app's files (reported by the Worker's size check).
pub fn webapp_bytes() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

/// Each file's ETag (in `ASSETS`' order): a hash of its bytes, computed once per process or
/// isolate.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                format!(
                    "\"{}\"",
                    hex::encode(digest.as_slice().get(..12).unwrap_or_default())
                )
            })
            .collect()
    })
}

/// Answers `GET`/`HEAD` of one of the files; 304 when the browser has it already.
pub(super) fn serve(
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>, RegistryError> {
    let (asset, etag) = ASSETS
        .iter()
        .zip(etags())
        .find(|(a, _)| a.path == path)
        .ok_or(RegistryError::NotFound)?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(RegistryError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag.as_str()));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Body::Empty)
    } else if *method == Method::HEAD {
        (StatusCode::OK, Body::Empty)
    } else {
        (
            StatusCode::OK,
            Body::Full(bytes::Bytes::from_static(asset.bytes)),
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}
