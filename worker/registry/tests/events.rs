//! The operation seam: every state change a request makes is reported as a domain event, after
//! the response (`Registry::handle_deferred` hands the events over as a `FollowUp`), and only
//! what really changed is reported.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures_executor::block_on;
use http::StatusCode;
use openregistry::operations::{Event, Subscriber};

/// Remembers every event it is told about.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

#[async_trait::async_trait]
impl Subscriber for Recorder {
    async fn on_events(&self, events: &[Event]) {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(events);
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

fn observed() -> (TestRegistry, Arc<Recorder>) {
    let mut t = TestRegistry::new();
    let recorder = Arc::new(Recorder::default());
    t.registry = t.registry.clone().subscribe(recorder.clone());
    (t, recorder)
}

const REPO: &str = "team/app";

#[test]
fn a_push_reports_its_blobs_its_manifest_and_its_tag() {
    let (t, seen) = observed();
    let manifest = t.prepare_image(REPO, "one");
    let events = seen.take();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::BlobCommitted { repository, .. } if repository == REPO)));
    t.push_manifest(REPO, "v1", &manifest);
    assert_eq!(
        seen.take(),
        vec![
            Event::ManifestPushed {
                repository: REPO.into(),
                digest: manifest.digest.clone(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                subject: None,
            },
            Event::TagMoved {
                repository: REPO.into(),
                tag: "v1".into(),
                digest: manifest.digest.clone(),
            },
        ]
    );
}

#[test]
fn a_blob_stored_already_is_linked_not_committed_and_a_mount_names_its_source() {
    let (t, seen) = observed();
    let blob = t.push_blob(REPO, b"shared bytes");
    seen.take();
    t.push_blob("other/app", b"shared bytes");
    assert_eq!(
        seen.take(),
        vec![Event::BlobLinked {
            repository: "other/app".into(),
            digest: blob.digest.clone(),
            from: None,
        }]
    );
    t.post(
        &format!(
            "/v2/third/app/blobs/uploads/?mount={}&from={REPO}",
            blob.digest
        ),
        &[],
        Vec::new(),
    )
    .expect_status(StatusCode::CREATED);
    assert_eq!(
        seen.take(),
        vec![Event::BlobLinked {
            repository: "third/app".into(),
            digest: blob.digest.clone(),
            from: Some(REPO.into()),
        }]
    );
}

#[test]
fn deletes_report_what_they_removed_and_refusals_report_nothing() {
    let (t, seen) = observed();
    let manifest = t.push_image(REPO, "v1", "one");
    seen.take();
    t.delete(&format!("/v2/{REPO}/manifests/v1"))
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(
        seen.take(),
        vec![Event::TagDeleted {
            repository: REPO.into(),
            tag: "v1".into()
        }]
    );
    t.delete(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(
        seen.take(),
        vec![Event::ManifestDeleted {
            repository: REPO.into(),
            digest: manifest.digest.clone()
        }]
    );
    // Nothing left to delete: 404, and no event.
    t.delete(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::NOT_FOUND);
    let blob = t.push_blob(REPO, b"bytes");
    seen.take();
    t.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(
        seen.take(),
        vec![Event::BlobUnlinked {
            repository: REPO.into(),
            digest: blob.digest.clone()
        }]
    );
    t.delete(&format!("/v2/{REPO}/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
    assert_eq!(seen.take(), vec![]);
}

#[test]
fn a_chunked_upload_reports_its_session_and_its_blob_once() {
    let (t, seen) = observed();
    let location = t.start_upload(REPO);
    let started = seen.take();
    assert!(
        matches!(&started[..], [Event::UploadStarted { repository, .. }] if repository == REPO)
    );
    let bytes = bytes_of(1000, 3);
    let location = t.patch_chunk(&location, 0, &bytes).location();
    assert_eq!(seen.take(), vec![], "a chunk changes nothing visible");
    t.finish_upload(&location, &sha256(&bytes), b"")
        .expect_status(StatusCode::CREATED);
    assert_eq!(
        seen.take(),
        vec![Event::BlobCommitted {
            repository: REPO.into(),
            digest: sha256(&bytes),
            size: 1000
        }]
    );
    let cancelled = t.start_upload(REPO);
    seen.take();
    t.delete(&cancelled).expect_status(StatusCode::NO_CONTENT);
    assert!(matches!(&seen.take()[..], [Event::UploadCancelled { .. }]));
}

#[test]
fn handle_deferred_hands_the_events_over_instead_of_delivering_them() {
    let (t, seen) = observed();
    let blob = bytes_of(10, 1);
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!(
            "/v2/{REPO}/blobs/uploads/?digest={}",
            sha256(&blob)
        ))
        .body(openregistry::Body::from(blob.clone()))
        .expect("a request");
    let (response, follow_up) = block_on(t.registry.handle_deferred(request));
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(follow_up.events().len(), 1);
    assert!(!follow_up.is_empty());
    assert_eq!(
        seen.take(),
        vec![],
        "nothing is delivered before the follow-up runs"
    );
    block_on(follow_up.run());
    assert_eq!(seen.take().len(), 1);
}

#[test]
fn deleting_a_tagged_manifest_reports_each_of_its_tags_as_deleted() {
    let (t, seen) = observed();
    let manifest = t.push_image(REPO, "v1", "one");
    t.push_manifest(REPO, "stable", &manifest);
    seen.take();
    t.delete(&format!("/v2/{REPO}/manifests/{}", manifest.digest))
        .expect_status(StatusCode::ACCEPTED);
    let mut events = seen.take();
    let last = events.pop();
    assert_eq!(
        last,
        Some(Event::ManifestDeleted {
            repository: REPO.into(),
            digest: manifest.digest.clone()
        })
    );
    let mut tags: Vec<String> = events
        .into_iter()
        .map(|e| match e {
            Event::TagDeleted { repository, tag } if repository == REPO => tag,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    tags.sort();
    assert_eq!(tags, ["stable", "v1"]);
}
