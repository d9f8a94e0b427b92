//! Manifest parsing and validation: what a pushed manifest is, what it references, and what
//! the referrers API needs to know about it.
//!
//! Known media types (OCI image manifest and index, Docker schema 2 manifest and manifest list)
//! are parsed with `oci-spec`'s types, which are structurally identical for the Docker variants.
//! Any other JSON document is accepted as an artifact: its descriptors in `config`, `layers`,
//! `blobs` and `manifests` are still checked.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// Whether a referenced digest must name a blob or a manifest in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    Blob,
    Manifest,
}

/// A descriptor the manifest depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub digest: Digest,
    pub size: u64,
    pub kind: ReferenceKind,
}

/// What the registry keeps and checks about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The media type it is stored and served under.
    pub media_type: String,
    /// `artifactType`, or for image manifests without one, the config's media type (as the
    /// referrers API reports it).
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Top-level annotations, as JSON text (reported by the referrers API).
    pub annotations: Option<String>,
    /// Blobs and child manifests that must exist in the repository.
    pub dependencies: Vec<Dependency>,
}

/// Strips parameters and whitespace from a `Content-Type`; `None` for absent or generic types.
fn specific_media_type(content_type: Option<&str>) -> Option<String> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/octet-stream" | "application/json" | "*/*" => None,
        _ => Some(essence),
    }
}

fn invalid(why: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(why.into())
}

/// Parses a manifest pushed with `content_type`.
pub fn parse(content: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, RegistryError> {
    let document: Value =
        serde_json::from_slice(content).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let object = document
        .as_object()
        .ok_or_else(|| invalid("a manifest is a JSON object"))?;
    let declared = match object.get("mediaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let header = specific_media_type(content_type);
    let media_type = match (header, declared) {
        (Some(header), Some(declared)) if header != declared => {
            return Err(invalid(format!(
                "Content-Type {header:?} does not match the manifest's mediaType {declared:?}"
            )))
        }
        (Some(header), _) => header,
        (None, Some(declared)) => declared,
        (None, None) if object.contains_key("manifests") => OCI_INDEX.to_owned(),
        (None, None) if object.contains_key("config") => OCI_MANIFEST.to_owned(),
        (None, None) => {
            return Err(invalid(
                "the manifest's media type is unknown: set Content-Type or mediaType",
            ))
        }
    };
    if media_type.starts_with(DOCKER_SCHEMA1) {
        return Err(RegistryError::ManifestInvalid(
            "Docker schema 1 manifests are not supported; push schema 2 or OCI".into(),
        ));
    }
    if object.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => parse_image_manifest(content, media_type),
        OCI_INDEX | DOCKER_MANIFEST_LIST => parse_index(content, media_type),
        _ => parse_artifact(object, media_type),
    }
}

fn dependency(
    descriptor: &Descriptor,
    kind: ReferenceKind,
) -> Result<Option<Dependency>, RegistryError> {
    // Non-distributable ("foreign") layers live at their URLs, not in the registry.
    if descriptor
        .urls()
        .as_ref()
        .is_some_and(|urls| !urls.is_empty())
    {
        return Ok(None);
    }
    let digest = descriptor
        .digest()
        .to_string()
        .parse::<Digest>()
        .map_err(|e| RegistryError::ManifestBlobUnknown(e.to_string()))?;
    Ok(Some(Dependency {
        digest,
        size: descriptor.size(),
        kind,
    }))
}

fn subject_digest(subject: Option<&Descriptor>) -> Result<Option<Digest>, RegistryError> {
    subject
        .map(|s| {
            s.digest()
                .to_string()
                .parse::<Digest>()
                .map_err(|e| invalid(format!("subject: {e}")))
        })
        .transpose()
}

fn annotations_json(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Option<String> {
    let sorted: BTreeMap<_, _> = annotations?.iter().collect();
    (!sorted.is_empty()).then(|| serde_json::to_string(&sorted).unwrap_or_default())
}

fn parse_image_manifest(
    content: &[u8],
    media_type: String,
) -> Result<ParsedManifest, RegistryError> {
    let manifest: ImageManifest = serde_json::from_slice(content)
        .map_err(|e| invalid(format!("not a valid image manifest: {e}")))?;
    let mut dependencies = Vec::with_capacity(manifest.layers().len() + 1);
    for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
        dependencies.extend(dependency(descriptor, ReferenceKind::Blob)?);
    }
    let artifact_type = manifest
        .artifact_type()
        .as_ref()
        .map(|t| t.to_string())
        .or_else(|| Some(manifest.config().media_type().to_string()));
    Ok(ParsedManifest {
        media_type,
        artifact_type,
        subject: subject_digest(manifest.subject().as_ref())?,
        annotations: annotations_json(manifest.annotations().as_ref()),
        dependencies,
    })
}

fn parse_index(content: &[u8], media_type: String) -> Result<ParsedManifest, RegistryError> {
    let index: ImageIndex = serde_json::from_slice(content)
        .map_err(|e| invalid(format!("not a valid image index: {e}")))?;
    let mut dependencies = Vec::with_capacity(index.manifests().len());
    for descriptor in index.manifests() {
        dependencies.extend(dependency(descriptor, ReferenceKind::Manifest)?);
    }
    Ok(ParsedManifest {
        media_type,
        artifact_type: index.artifact_type().as_ref().map(|t| t.to_string()),
        subject: subject_digest(index.subject().as_ref())?,
        annotations: annotations_json(index.annotations().as_ref()),
        dependencies,
    })
}

/// A manifest of a media type the registry does not know: checked generically.
fn parse_artifact(
    object: &serde_json::Map<String, Value>,
    media_type: String,
) -> Result<ParsedManifest, RegistryError> {
    let descriptor = |value: &Value| -> Result<Descriptor, RegistryError> {
        serde_json::from_value(value.clone()).map_err(|e| invalid(format!("bad descriptor: {e}")))
    };
    let mut dependencies = Vec::new();
    if let Some(config) = object.get("config") {
        dependencies.extend(dependency(&descriptor(config)?, ReferenceKind::Blob)?);
    }
    for (field, kind) in [
        ("layers", ReferenceKind::Blob),
        ("blobs", ReferenceKind::Blob),
        ("manifests", ReferenceKind::Manifest),
    ] {
        match object.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    dependencies.extend(dependency(&descriptor(item)?, kind)?);
                }
            }
            Some(_) => return Err(invalid(format!("{field} must be an array"))),
        }
    }
    let subject = object.get("subject").map(descriptor).transpose()?;
    let annotations = match object.get("annotations") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let map: std::collections::HashMap<String, String> =
                serde_json::from_value(value.clone())
                    .map_err(|_| invalid("annotations must map strings to strings"))?;
            annotations_json(Some(&map))
        }
    };
    let artifact_type = object
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            object
                .get("config")
                .and_then(|c| c.get("mediaType"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    Ok(ParsedManifest {
        media_type,
        artifact_type,
        subject: subject_digest(subject.as_ref())?,
        annotations,
        dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image_manifest() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(1), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(2), "size": 20}],
            "annotations": {"b": "2", "a": "1"}
        })
    }

    #[test]
    fn an_image_manifest_depends_on_its_config_and_layers() {
        let bytes = serde_json::to_vec(&image_manifest()).expect("json");
        let parsed = parse(&bytes, Some(OCI_MANIFEST)).expect("valid");
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        let digests: Vec<_> = parsed
            .dependencies
            .iter()
            .map(|d| d.digest.to_string())
            .collect();
        assert_eq!(digests, vec![d(1), d(2)]);
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(parsed.annotations.as_deref(), Some(r#"{"a":"1","b":"2"}"#));
    }

    #[test]
    fn an_index_depends_on_its_child_manifests() {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/x-thing",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d(3), "size": 30,
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        });
        let parsed = parse(&serde_json::to_vec(&index).expect("json"), None).expect("valid");
        assert_eq!(parsed.dependencies[0].kind, ReferenceKind::Manifest);
        assert_eq!(parsed.artifact_type.as_deref(), Some("application/x-thing"));
    }

    #[test]
    fn the_subject_is_recorded_but_is_not_a_dependency() {
        let mut manifest = image_manifest();
        manifest["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d(9), "size": 5});
        let parsed = parse(&serde_json::to_vec(&manifest).expect("json"), None).expect("valid");
        assert_eq!(parsed.subject.map(|s| s.to_string()), Some(d(9)));
        assert_eq!(parsed.dependencies.len(), 2);
    }

    #[test]
    fn content_type_and_media_type_must_agree() {
        let bytes = serde_json::to_vec(&image_manifest()).expect("json");
        assert!(matches!(
            parse(&bytes, Some(OCI_INDEX)),
            Err(RegistryError::ManifestInvalid(_))
        ));
        // Parameters and generic types do not count as a disagreement.
        assert!(parse(
            &bytes,
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        )
        .is_ok());
        assert!(parse(&bytes, Some("application/octet-stream")).is_ok());
    }

    #[test]
    fn broken_documents_are_manifest_invalid() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"schemaVersion":1,"config":{}}"#,
        ] {
            assert!(
                matches!(
                    parse(bad, Some(OCI_MANIFEST)),
                    Err(RegistryError::ManifestInvalid(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut missing_layers = image_manifest();
        missing_layers
            .as_object_mut()
            .expect("object")
            .remove("layers");
        let bytes = serde_json::to_vec(&missing_layers).expect("json");
        assert!(matches!(
            parse(&bytes, None),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }

    #[test]
    fn unknown_media_types_are_artifacts_whose_descriptors_are_still_checked() {
        let artifact = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.example.thing.v1+json",
            "blobs": [{"mediaType": "text/plain", "digest": d(4), "size": 1}]
        });
        let parsed = parse(&serde_json::to_vec(&artifact).expect("json"), None).expect("valid");
        assert_eq!(parsed.dependencies.len(), 1);
    }

    #[test]
    fn docker_schema1_is_refused() {
        let v1 = json!({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []});
        let bytes = serde_json::to_vec(&v1).expect("json");
        assert!(parse(
            &bytes,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
        )
        .is_err());
    }

    #[test]
    fn foreign_layers_are_not_dependencies() {
        let mut manifest = image_manifest();
        manifest["layers"][0]["urls"] = json!(["https://example.com/layer"]);
        let parsed = parse(&serde_json::to_vec(&manifest).expect("json"), None).expect("valid");
        assert_eq!(parsed.dependencies.len(), 1);
    }
}
