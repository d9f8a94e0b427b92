//! Garbage collection, specified: what is freed (counted, bytes in the store included), what is
//! kept whatever happens (tagged images, index children, referrers of kept manifests, anything
//! inside the grace window, a blob a push is referencing right now), and how a run that failed
//! half-way is finished by the next one.

// Test code indexes what it just built: a panic is a failing test, not a crashed isolate.
#![allow(clippy::indexing_slicing)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_executor::block_on;
use http::StatusCode;
use openregistry::gc::GcReport;
use openregistry::memory::MemoryKv;
use openregistry::ports::{Row, Sql, SqlError, Statement, Unavailable};
use openregistry::Config;
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn gc(t: &TestRegistry) -> GcReport {
    block_on(t.registry.collect_garbage(false)).expect("garbage collection runs")
}

fn dry_run(t: &TestRegistry) -> GcReport {
    block_on(t.registry.collect_garbage(true)).expect("a dry run runs")
}

/// Past the default grace window.
fn a_day_later(t: &TestRegistry) {
    t.clock.advance(DAY + Duration::from_secs(1));
}

fn keeping_untagged(keep: u64) -> TestRegistry {
    TestRegistry::with(
        Config {
            gc_keep_untagged: Some(keep),
            ..Config::default()
        },
        Arc::new(MemoryKv::default()),
    )
}

/// Asserts the whole image can be pulled: manifest and every blob, byte for byte.
fn pulls(t: &TestRegistry, repo: &str, reference: &str, blobs: &[&Blob]) {
    t.get(&format!("/v2/{repo}/manifests/{reference}"))
        .expect_status(StatusCode::OK);
    for blob in blobs {
        assert_eq!(
            t.blob_bytes(repo, &blob.digest).as_ref(),
            blob.bytes.as_slice()
        );
    }
}

fn blob_is_gone(t: &TestRegistry, repo: &str, blob: &Blob) {
    t.head(&format!("/v2/{repo}/blobs/{}", blob.digest))
        .expect_status(StatusCode::NOT_FOUND);
}

fn query(t: &TestRegistry, sql: &'static str) -> Vec<Row> {
    block_on(t.ports.sql.query(Statement::new(sql))).expect("query runs")
}

#[test]
fn a_blob_no_manifest_references_is_freed_once_the_grace_window_has_passed() {
    let t = TestRegistry::new();
    let (config, layer) = t.push_image_blobs("app", "v1");
    t.push_manifest("app", "v1", &image_manifest(&config, &[&layer]));
    let loose = t.push_blob("app", &bytes_of(1000, 9));

    let report = gc(&t);
    assert_eq!(
        report.blobs_deleted, 0,
        "inside the grace window: {report:?}"
    );
    assert_eq!(t.blobs.blob_count(), 3);

    a_day_later(&t);
    let report = gc(&t);
    assert_eq!(report.blob_links_deleted, 1, "{report:?}");
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.blob_bytes_freed, 1000);
    assert_eq!(t.blobs.blob_count(), 2);
    assert_eq!(t.blobs.stored_bytes(), config.size + layer.size);
    blob_is_gone(&t, "app", &loose);
    pulls(&t, "app", "v1", &[&config, &layer]);

    let again = gc(&t);
    assert_eq!(
        again.blobs_deleted + again.blob_links_deleted,
        0,
        "{again:?}"
    );
}

#[test]
fn deleting_an_image_frees_its_own_blobs_but_not_those_another_image_shares() {
    let t = TestRegistry::new();
    let shared = t.push_blob("app", &bytes_of(5000, 1));
    let (config1, layer1) = t.push_image_blobs("app", "v1");
    let (config2, layer2) = t.push_image_blobs("app", "v2");
    let v1 = image_manifest(&config1, &[&shared, &layer1]);
    t.push_manifest("app", "v1", &v1);
    t.push_manifest("app", "v2", &image_manifest(&config2, &[&shared, &layer2]));
    // The same layer in another repository is that repository's link.
    t.push_blob("other", &layer1.bytes);

    t.delete(&format!("/v2/app/manifests/{}", v1.digest))
        .expect_status(StatusCode::ACCEPTED);
    a_day_later(&t);
    let report = gc(&t);

    assert_eq!(
        report.blob_links_deleted, 3,
        "config1, layer1 in app; layer1 in other: {report:?}"
    );
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert_eq!(report.blob_bytes_freed, config1.size + layer1.size);
    blob_is_gone(&t, "app", &config1);
    blob_is_gone(&t, "app", &layer1);
    blob_is_gone(&t, "other", &layer1);
    pulls(&t, "app", "v2", &[&config2, &shared, &layer2]);
    assert_eq!(t.blobs.blob_count(), 3);
}

#[test]
fn untagged_manifests_are_kept_unless_a_policy_keeps_only_the_newest() {
    for (keep, expected_deleted) in [(None, 0), (Some(1), 1), (Some(0), 2)] {
        let t = match keep {
            None => TestRegistry::new(),
            Some(keep) => keeping_untagged(keep),
        };
        let mut layers = Vec::new();
        for (i, seed) in ["v1", "v2", "v3"].iter().enumerate() {
            let (config, layer) = t.push_image_blobs("app", seed);
            // "latest" moves on: v1 and v2 end up untagged, v2 the newer.
            t.push_manifest("app", "latest", &image_manifest(&config, &[&layer]));
            t.clock.advance(Duration::from_secs(60 * (i as u64 + 1)));
            layers.push((config, layer));
        }
        a_day_later(&t);
        let report = gc(&t);
        assert_eq!(
            report.untagged_manifests_deleted, expected_deleted,
            "keep {keep:?}: {report:?}"
        );
        assert_eq!(
            report.blobs_deleted,
            2 * expected_deleted,
            "keep {keep:?}: {report:?}"
        );
        let (config, layer) = &layers[2];
        pulls(&t, "app", "latest", &[config, layer]);
        if keep == Some(1) {
            let (config, layer) = &layers[1];
            assert_eq!(
                t.blob_bytes("app", &layer.digest).as_ref(),
                layer.bytes.as_slice()
            );
            assert_eq!(
                t.blob_bytes("app", &config.digest).len() as u64,
                config.size
            );
            blob_is_gone(&t, "app", &layers[0].1);
        }
    }
}

#[test]
fn the_children_of_a_tagged_index_are_kept_and_freed_with_it() {
    let t = keeping_untagged(0);
    let (config_a, layer_a) = t.push_image_blobs("app", "amd64");
    let (config_b, layer_b) = t.push_image_blobs("app", "arm64");
    let amd64 = image_manifest(&config_a, &[&layer_a]);
    let arm64 = image_manifest(&config_b, &[&layer_b]);
    t.push_manifest("app", &amd64.digest, &amd64);
    t.push_manifest("app", &arm64.digest, &arm64);
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [amd64.descriptor(), arm64.descriptor()]}),
    );
    t.push_manifest("app", "multi", &index);

    a_day_later(&t);
    let report = gc(&t);
    assert_eq!(
        report.untagged_manifests_deleted, 0,
        "children of a tagged index: {report:?}"
    );
    pulls(&t, "app", &amd64.digest, &[&config_a, &layer_a]);
    pulls(&t, "app", &arm64.digest, &[&config_b, &layer_b]);

    t.delete("/v2/app/manifests/multi")
        .expect_status(StatusCode::ACCEPTED);
    let report = gc(&t);
    assert_eq!(
        report.untagged_manifests_deleted, 3,
        "the index, then its children: {report:?}"
    );
    assert_eq!(report.blobs_deleted, 4, "{report:?}");
    assert_eq!(t.blobs.blob_count(), 0);
}

#[test]
fn a_referrer_lives_as_long_as_its_subject() {
    let t = keeping_untagged(0);
    let subject = t.push_image("app", "v1", "v1");
    let signature = t.prepare_referrer("app", &subject, "application/vnd.example.sig", None);
    t.push_manifest("app", &signature.digest, &signature);

    a_day_later(&t);
    let report = gc(&t);
    assert_eq!(
        report.referrers_deleted + report.untagged_manifests_deleted,
        0,
        "{report:?}"
    );
    t.get(&format!("/v2/app/referrers/{}", subject.digest))
        .expect_status(StatusCode::OK);
    t.get(&format!("/v2/app/manifests/{}", signature.digest))
        .expect_status(StatusCode::OK);

    t.delete(&format!("/v2/app/manifests/{}", subject.digest))
        .expect_status(StatusCode::ACCEPTED);
    let report = gc(&t);
    assert_eq!(report.referrers_deleted, 1, "{report:?}");
    t.get(&format!("/v2/app/manifests/{}", signature.digest))
        .expect_status(StatusCode::NOT_FOUND);
    assert_eq!(
        t.blobs.blob_count(),
        0,
        "the image's and the signature's blobs: {report:?}"
    );
}

#[test]
fn a_referrer_pushed_before_its_subject_is_kept_through_the_grace_window() {
    let t = TestRegistry::new();
    let subject = t.prepare_image("app", "v1");
    let signature = t.prepare_referrer("app", &subject, "application/vnd.example.sig", None);
    t.push_manifest("app", &signature.digest, &signature);
    assert_eq!(gc(&t).referrers_deleted, 0);
    t.push_manifest("app", "v1", &subject);
    a_day_later(&t);
    assert_eq!(gc(&t).referrers_deleted, 0);
    t.get(&format!("/v2/app/manifests/{}", signature.digest))
        .expect_status(StatusCode::OK);
}

#[test]
fn a_blob_a_client_was_told_exists_is_kept_for_another_grace_window() {
    let t = TestRegistry::new();
    let blob = t.push_blob("app", b"a layer someone is about to reference");
    a_day_later(&t);
    // A pusher checks the blob, finds it, skips the upload and will put its manifest next.
    t.head(&format!("/v2/app/blobs/{}", blob.digest))
        .expect_status(StatusCode::OK);
    assert_eq!(gc(&t).blobs_deleted, 0);
    a_day_later(&t);
    assert_eq!(gc(&t).blobs_deleted, 1);
    blob_is_gone(&t, "app", &blob);
}

#[test]
fn a_dry_run_reports_what_a_run_then_frees_and_changes_nothing() {
    let t = keeping_untagged(0);
    let (config, layer) = t.push_image_blobs("app", "v1");
    let v1 = image_manifest(&config, &[&layer]);
    t.push_manifest("app", &v1.digest, &v1);
    t.push_blob("app", &bytes_of(700, 3));
    a_day_later(&t);

    let planned = dry_run(&t);
    assert!(planned.dry_run);
    assert_eq!(planned.untagged_manifests_deleted, 1, "{planned:?}");
    assert_eq!(
        planned.blobs_deleted, 1,
        "the loose blob; v1's are freed with v1: {planned:?}"
    );
    assert_eq!(planned.blob_bytes_freed, 700);
    assert_eq!(t.blobs.blob_count(), 3);
    pulls(&t, "app", &v1.digest, &[&config, &layer]);

    let done = gc(&t);
    assert_eq!(done.untagged_manifests_deleted, 1);
    assert_eq!(done.blobs_deleted, 3, "{done:?}");
    assert_eq!(done.blob_bytes_freed, 700 + config.size + layer.size);
}

#[test]
fn manifests_stored_before_reference_rows_existed_are_indexed_before_anything_is_freed() {
    let t = TestRegistry::new();
    let (config, layer) = t.push_image_blobs("app", "v1");
    let v1 = image_manifest(&config, &[&layer]);
    t.push_manifest("app", "v1", &v1);
    // As a database migrated from before reference rows looks.
    query(&t, "DELETE FROM manifest_blobs");
    query(&t, "UPDATE manifests SET indexed = 0");

    a_day_later(&t);
    let report = gc(&t);
    assert_eq!(report.manifests_indexed, 1, "{report:?}");
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    pulls(&t, "app", "v1", &[&config, &layer]);
}

#[test]
fn a_store_that_fails_to_delete_leaves_the_bytes_queued_for_the_next_run() {
    let t = TestRegistry::new();
    let blob = t.push_blob("app", &bytes_of(4096, 7));
    a_day_later(&t);

    t.blobs.fail_deletes(true);
    let report = gc(&t);
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.storage_errors, 1, "{report:?}");
    assert_eq!(report.blob_bytes_freed, 0);
    blob_is_gone(&t, "app", &blob);
    assert_eq!(t.blobs.blob_count(), 1, "the bytes wait in the queue");

    t.blobs.fail_deletes(false);
    let report = gc(&t);
    assert_eq!(report.blob_bytes_freed, 4096, "{report:?}");
    assert_eq!(report.storage_errors, 0);
    assert_eq!(t.blobs.blob_count(), 0);
    assert!(query(&t, "SELECT locator FROM blob_deletions").is_empty());
}

#[test]
fn a_run_cut_off_at_any_point_is_finished_by_the_next_with_nothing_lost_or_half_visible() {
    for cut_after in 0..12 {
        let failing = Arc::new(Mutex::new(None));
        let budget = failing.clone();
        let t = TestRegistry::with_sql(
            Config {
                gc_keep_untagged: Some(0),
                ..Config::default()
            },
            Arc::new(MemoryKv::default()),
            move |inner| Arc::new(FailingAfterShared { inner, budget }),
        );
        let kept = t.push_image("app", "kept", "kept");
        let (config, layer) = t.push_image_blobs("app", "gone");
        let gone = image_manifest(&config, &[&layer]);
        t.push_manifest("app", &gone.digest, &gone);
        t.push_blob("app", &bytes_of(300, 5));
        a_day_later(&t);

        *failing.lock().expect("not poisoned") = Some(cut_after);
        let cut = block_on(t.registry.collect_garbage(false));
        *failing.lock().expect("not poisoned") = None;
        // Whatever the cut-off run did, every blob the database still names is readable ...
        for row in query(&t, "SELECT repository, digest FROM repository_blobs") {
            let (repo, digest) = (row.text(0).expect("text"), row.text(1).expect("text"));
            t.get(&format!("/v2/{repo}/blobs/{digest}"))
                .expect_status(StatusCode::OK);
        }
        // ... and the next run finishes the work.
        let report = gc(&t);
        assert!(
            query(&t, "SELECT locator FROM blob_deletions").is_empty(),
            "cut after {cut_after}"
        );
        t.get(&format!("/v2/app/manifests/{}", gone.digest))
            .expect_status(StatusCode::NOT_FOUND);
        let kept_blobs = kept_image_blob_count(&t, &kept);
        assert_eq!(
            t.blobs.blob_count(),
            kept_blobs,
            "cut after {cut_after}: {cut:?} then {report:?}"
        );
        t.get("/v2/app/manifests/kept")
            .expect_status(StatusCode::OK);
    }
}

fn kept_image_blob_count(t: &TestRegistry, kept: &Manifest) -> usize {
    let document: serde_json::Value = serde_json::from_slice(&kept.bytes).expect("JSON");
    let mut digests = vec![document["config"]["digest"]
        .as_str()
        .expect("config")
        .to_owned()];
    for layer in document["layers"].as_array().expect("layers") {
        digests.push(layer["digest"].as_str().expect("digest").to_owned());
    }
    for digest in &digests {
        t.get(&format!("/v2/app/blobs/{digest}"))
            .expect_status(StatusCode::OK);
    }
    digests.len()
}

/// SQL that stops answering after a budget of calls (shared with the test), as a database does
/// when the collector's process is killed or its connection drops.
struct FailingAfterShared {
    inner: Arc<dyn Sql>,
    budget: Arc<Mutex<Option<usize>>>,
}

#[async_trait::async_trait]
impl Sql for FailingAfterShared {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        spend(&self.budget)?;
        self.inner.query(statement).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        spend(&self.budget)?;
        self.inner.batch(statements).await
    }
}

fn spend(budget: &Mutex<Option<usize>>) -> Result<(), SqlError> {
    let mut budget = budget.lock().expect("not poisoned");
    match budget.as_mut() {
        Some(0) => Err(SqlError::Unavailable(Unavailable::new(
            "sql",
            "connection lost",
        ))),
        Some(n) => {
            *n -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

/// SQL that, just before the batch storing a manifest, lets a collector delete a link the
/// manifest references (after the registry checked it): the race the foreign keys settle.
struct CollectorBeforeManifest {
    inner: Arc<dyn Sql>,
    armed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Sql for CollectorBeforeManifest {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        self.inner.query(statement).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        let stores_manifest = statements
            .iter()
            .any(|s| s.sql.starts_with("INSERT INTO manifests"));
        if stores_manifest && self.armed.swap(false, Ordering::SeqCst) {
            self.inner
                .query(Statement::new(
                    "DELETE FROM repository_blobs WHERE digest IN \
                     (SELECT digest FROM repository_blobs ORDER BY digest LIMIT 1)",
                ))
                .await?;
        }
        self.inner.batch(statements).await
    }
}

#[test]
fn a_manifest_whose_blob_is_collected_while_it_is_pushed_is_refused_and_not_stored() {
    let armed = Arc::new(AtomicBool::new(false));
    let trigger = armed.clone();
    let t = TestRegistry::with_sql(
        Config::default(),
        Arc::new(MemoryKv::default()),
        move |inner| {
            Arc::new(CollectorBeforeManifest {
                inner,
                armed: trigger,
            })
        },
    );
    let (config, layer) = t.push_image_blobs("app", "v1");
    let v1 = image_manifest(&config, &[&layer]);
    armed.store(true, Ordering::SeqCst);
    t.put_manifest("app", "v1", &v1)
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    t.get("/v2/app/manifests/v1")
        .expect_status(StatusCode::NOT_FOUND);
    t.get(&format!("/v2/app/manifests/{}", v1.digest))
        .expect_status(StatusCode::NOT_FOUND);
    assert!(t.tags("app").is_empty());
}

/// SQL that, just before the collector deletes links, lets a push reference one of them.
struct PushBeforeLinkDelete {
    inner: Arc<dyn Sql>,
    manifest: Mutex<Option<(String, String)>>,
}

#[async_trait::async_trait]
impl Sql for PushBeforeLinkDelete {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        self.inner.query(statement).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        let deletes_links = statements.iter().any(|s| {
            s.sql.starts_with(
                "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2 AND EXISTS",
            )
        });
        let pending = if deletes_links {
            self.manifest.lock().expect("not poisoned").take()
        } else {
            None
        };
        if let Some((manifest, digest)) = pending {
            self.inner
                .query(
                    Statement::new(
                        "INSERT INTO manifest_blobs (repository, manifest, digest) VALUES ('app', $1, $2)",
                    )
                    .bind(manifest)
                    .bind(digest),
                )
                .await?;
        }
        self.inner.batch(statements).await
    }
}

#[test]
fn a_link_a_push_references_as_the_collector_deletes_it_is_kept() {
    let slot: Arc<Mutex<Option<Arc<PushBeforeLinkDelete>>>> = Arc::new(Mutex::new(None));
    let shared = slot.clone();
    let t = TestRegistry::with_sql(
        Config::default(),
        Arc::new(MemoryKv::default()),
        move |inner| {
            let racing = Arc::new(PushBeforeLinkDelete {
                inner,
                manifest: Mutex::new(None),
            });
            *shared.lock().expect("not poisoned") = Some(racing.clone());
            racing
        },
    );
    let racing = slot.lock().expect("not poisoned").clone().expect("built");
    let holder = t.push_image("app", "holder", "holder");
    let (config, layer) = t.push_image_blobs("app", "v1");
    a_day_later(&t);
    // The collector has chosen `layer` (and `config`); a manifest referencing `layer` commits
    // between its choice and its delete.
    *racing.manifest.lock().expect("not poisoned") =
        Some((holder.digest.clone(), layer.digest.clone()));
    let report = gc(&t);
    assert_eq!(report.blob_links_deleted, 1, "only config: {report:?}");
    assert_eq!(
        t.blob_bytes("app", &layer.digest).as_ref(),
        layer.bytes.as_slice()
    );
    blob_is_gone(&t, "app", &config);
}

#[test]
fn the_admin_api_runs_the_collector_and_answers_its_report() {
    let t = TestRegistry::new();
    t.push_blob("app", &bytes_of(2048, 4));
    a_day_later(&t);
    let planned = t.post("/api/gc?dry_run=true", &[], openregistry::Body::Empty);
    planned.expect_status(StatusCode::OK);
    assert_eq!(planned.json()["dry_run"], true);
    assert_eq!(planned.json()["blob_bytes_freed"], 2048);
    let done = t.post("/api/gc", &[], openregistry::Body::Empty);
    done.expect_status(StatusCode::OK);
    assert_eq!(done.json()["blobs_deleted"], 1);
    assert_eq!(done.json()["blob_bytes_freed"], 2048);
    assert_eq!(t.blobs.blob_count(), 0);
    assert_eq!(t.get("/api/gc").status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        t.post("/api/gc?now=please", &[], openregistry::Body::Empty)
            .status,
        StatusCode::BAD_REQUEST
    );
}
