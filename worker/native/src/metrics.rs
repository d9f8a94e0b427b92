//! `/metrics`: the native host's counters in the Prometheus text format (version 0.0.4).
//!
//! - `openregistry_requests_total{route,method,status}` and
//!   `openregistry_request_duration_seconds{route}` (a histogram), per route kind
//!   (`openregistry::route_name`), never per repository (unbounded label values);
//! - `openregistry_request_bytes_total` / `openregistry_response_bytes_total`: declared body
//!   lengths (`Content-Length`; streamed bodies of unknown length are not counted);
//! - the registry's events ([`Subscriber`]): upload sessions started and cancelled, blobs
//!   committed and their bytes, manifests pushed and deleted, tags moved and deleted;
//! - `openregistry_gc_*_total`: garbage collection runs' manifests, blobs and bytes freed (from
//!   the run's event, whoever started it) and scheduled runs that failed;
//! - `openregistry_unavailable_responses_total{route}`: 503s, which is how database and storage
//!   failures reach clients.
//!
//! Written by hand: a few counters behind one mutex, rendered on demand, are less code than
//! wiring a metrics crate's registry and exporter for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use openregistry::operations::{Event, Subscriber};

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative here; summed when rendered).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    durations: BTreeMap<&'static str, Histogram>,
    unavailable: BTreeMap<&'static str, u64>,
    request_bytes: u64,
    response_bytes: u64,
    events: BTreeMap<&'static str, u64>,
    committed_bytes: u64,
    gc_manifests: u64,
    gc_blobs: u64,
    gc_bytes: u64,
    gc_failures: u64,
}

/// The native host's counters.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    /// One answered request.
    pub fn record(
        &self,
        route: &'static str,
        method: &str,
        status: u16,
        seconds: f64,
        request_bytes: Option<u64>,
        response_bytes: Option<u64>,
    ) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        *c.requests
            .entry((route, method.to_owned(), status))
            .or_default() += 1;
        let histogram = c.durations.entry(route).or_default();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            if let Some(count) = histogram.counts.get_mut(bucket) {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
        if status == 503 {
            *c.unavailable.entry(route).or_default() += 1;
        }
        c.request_bytes += request_bytes.unwrap_or(0);
        c.response_bytes += response_bytes.unwrap_or(0);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let Ok(c) = self.counters.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP openregistry_requests_total Requests answered, by route kind, method and status.\n\
             # TYPE openregistry_requests_total counter"
        );
        for ((route, method, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "openregistry_requests_total{{route=\"{route}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(method)
            );
        }
        let _ = writeln!(
            out,
            "# HELP openregistry_request_duration_seconds Time to the response's headers, by route kind.\n\
             # TYPE openregistry_request_duration_seconds histogram"
        );
        for (route, h) in &c.durations {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "openregistry_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "openregistry_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 openregistry_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 openregistry_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP openregistry_unavailable_responses_total 503 answers (the database or the storage failed), by route kind.\n\
             # TYPE openregistry_unavailable_responses_total counter"
        );
        for (route, n) in &c.unavailable {
            let _ = writeln!(
                out,
                "openregistry_unavailable_responses_total{{route=\"{route}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP openregistry_request_bytes_total Request body bytes declared by Content-Length.\n\
             # TYPE openregistry_request_bytes_total counter\n\
             openregistry_request_bytes_total {}\n\
             # HELP openregistry_response_bytes_total Response body bytes declared by Content-Length.\n\
             # TYPE openregistry_response_bytes_total counter\n\
             openregistry_response_bytes_total {}\n\
             # HELP openregistry_events_total The registry's events, by kind.\n\
             # TYPE openregistry_events_total counter",
            c.request_bytes, c.response_bytes
        );
        for (kind, n) in &c.events {
            let _ = writeln!(out, "openregistry_events_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP openregistry_blob_bytes_committed_total Bytes of new blobs verified and stored.\n\
             # TYPE openregistry_blob_bytes_committed_total counter\n\
             openregistry_blob_bytes_committed_total {}",
            c.committed_bytes
        );
        let _ = writeln!(
            out,
            "# HELP openregistry_gc_manifests_deleted_total Manifests the garbage collector deleted.\n\
             # TYPE openregistry_gc_manifests_deleted_total counter\n\
             openregistry_gc_manifests_deleted_total {}\n\
             # HELP openregistry_gc_blobs_deleted_total Blobs the garbage collector deleted.\n\
             # TYPE openregistry_gc_blobs_deleted_total counter\n\
             openregistry_gc_blobs_deleted_total {}\n\
             # HELP openregistry_gc_bytes_freed_total Blob bytes the garbage collector deleted from storage.\n\
             # TYPE openregistry_gc_bytes_freed_total counter\n\
             openregistry_gc_bytes_freed_total {}\n\
             # HELP openregistry_gc_failures_total Scheduled garbage collection runs that failed.\n\
             # TYPE openregistry_gc_failures_total counter\n\
             openregistry_gc_failures_total {}",
            c.gc_manifests, c.gc_blobs, c.gc_bytes, c.gc_failures
        );
        out
    }

    /// A scheduled garbage collection run failed (a finished one arrives as an event).
    pub fn record_gc_failure(&self) {
        if let Ok(mut c) = self.counters.lock() {
            c.gc_failures += 1;
        }
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::UploadStarted { .. } => "upload_started",
        Event::UploadCancelled { .. } => "upload_cancelled",
        Event::BlobCommitted { .. } => "blob_committed",
        Event::BlobLinked { .. } => "blob_linked",
        Event::BlobUnlinked { .. } => "blob_unlinked",
        Event::ManifestPushed { .. } => "manifest_pushed",
        Event::TagMoved { .. } => "tag_moved",
        Event::TagDeleted { .. } => "tag_deleted",
        Event::ManifestDeleted { .. } => "manifest_deleted",
        Event::VisibilityChanged { .. } => "visibility_changed",
        Event::GarbageCollected { .. } => "garbage_collected",
    }
}

#[async_trait::async_trait]
impl Subscriber for Metrics {
    async fn on_events(&self, events: &[Event]) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        for event in events {
            *c.events.entry(event_kind(event)).or_default() += 1;
            match event {
                Event::BlobCommitted { size, .. } => c.committed_bytes += size,
                Event::GarbageCollected {
                    manifests_deleted,
                    blobs_deleted,
                    blob_bytes_freed,
                    ..
                } => {
                    c.gc_manifests += manifests_deleted;
                    c.gc_blobs += blobs_deleted;
                    c.gc_bytes += blob_bytes_freed;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.record("manifest", "GET", 200, 0.002, None, Some(512));
        metrics.record("manifest", "GET", 200, 0.3, None, Some(512));
        metrics.record("blob", "PUT", 503, 2.0, Some(10), None);
        metrics
            .on_events(&[Event::BlobCommitted {
                repository: "a/b".into(),
                digest: "sha256:x".into(),
                size: 42,
            }])
            .await;
        let text = metrics.render();
        for line in [
            "openregistry_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 2",
            "openregistry_request_duration_seconds_bucket{route=\"manifest\",le=\"0.005\"} 1",
            "openregistry_request_duration_seconds_bucket{route=\"manifest\",le=\"0.5\"} 2",
            "openregistry_request_duration_seconds_bucket{route=\"manifest\",le=\"+Inf\"} 2",
            "openregistry_request_duration_seconds_count{route=\"blob\"} 1",
            "openregistry_unavailable_responses_total{route=\"blob\"} 1",
            "openregistry_response_bytes_total 1024",
            "openregistry_request_bytes_total 10",
            "openregistry_events_total{kind=\"blob_committed\"} 1",
            "openregistry_blob_bytes_committed_total 42",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
