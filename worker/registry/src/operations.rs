//! The operation seam: the registry's state changes as typed operations that return their outcome
//! together with the domain events they caused, and the way those events reach subscribers after
//! the response has been sent.
//!
//! The HTTP handlers parse and verify a request, then call one of the [`Operations`]; each returns
//! an [`Outcome`] (its value and its [`Event`]s). The handler collects the events of its request in
//! an [`EventLog`]; [`Registry::handle_deferred`](crate::Registry::handle_deferred) hands them back
//! with the response as a [`FollowUp`], which the host runs once the response is on its way:
//! `ctx.wait_until` on Workers, a spawned task natively, after the response body on Spin. Caches,
//! webhooks and metrics subscribe ([`Subscriber`]).

use std::sync::{Arc, Mutex, PoisonError};

use crate::body::{MaybeSend, MaybeSync};
use crate::cache::TagRefresh;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::ParsedManifest;
use crate::metadata::Metadata;
use crate::names::{RepoName, Tag};

/// Something that changed in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An upload session was opened.
    UploadStarted { repository: String, upload: String },
    /// An upload session was cancelled by its client.
    UploadCancelled { repository: String, upload: String },
    /// New blob bytes were verified and stored, and linked to the repository.
    BlobCommitted {
        repository: String,
        digest: String,
        size: u64,
    },
    /// A blob already stored was linked to another repository (uploaded again, or mounted).
    BlobLinked {
        repository: String,
        digest: String,
        from: Option<String>,
    },
    /// A repository's link to a blob was removed (the bytes may still be shared).
    BlobUnlinked { repository: String, digest: String },
    /// A manifest was stored (or stored again) in a repository.
    ManifestPushed {
        repository: String,
        digest: String,
        media_type: String,
        subject: Option<String>,
    },
    /// A tag now points at `digest`.
    TagMoved {
        repository: String,
        tag: String,
        digest: String,
    },
    /// A tag was removed.
    TagDeleted { repository: String, tag: String },
    /// A manifest (and every tag on it) was removed.
    ManifestDeleted { repository: String, digest: String },
    /// A repository was made public or private.
    VisibilityChanged { repository: String, public: bool },
    /// A garbage collection run finished (not a dry run).
    GarbageCollected {
        manifests_deleted: u64,
        blob_links_deleted: u64,
        blobs_deleted: u64,
        blob_bytes_freed: u64,
    },
}

/// An operation's value and the events it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub value: T,
    pub events: Vec<Event>,
}

impl<T> Outcome<T> {
    fn new(value: T, events: Vec<Event>) -> Self {
        Self { value, events }
    }

    /// Records the events in `log` and returns the value.
    pub fn record(self, log: &EventLog) -> T {
        log.extend(self.events);
        self.value
    }
}

impl Outcome<bool> {
    /// `changed`, with `event` only when something did change.
    fn if_changed(changed: bool, event: impl FnOnce() -> Event) -> Self {
        let events = if changed { vec![event()] } else { Vec::new() };
        Self::new(changed, events)
    }
}

/// The events of one request, in order, and the cached tags it found due for a refresh.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<Vec<Event>>,
    tag_refreshes: Mutex<Vec<(RepoName, Tag)>>,
}

impl EventLog {
    /// A cached tag to refresh after the response (see [`crate::cache::Tagged::refresh`]).
    pub fn refresh_tag(&self, repo: &RepoName, tag: &Tag) {
        self.tag_refreshes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((repo.clone(), tag.clone()));
    }

    pub fn take_tag_refreshes(&self) -> Vec<(RepoName, Tag)> {
        std::mem::take(
            &mut *self
                .tag_refreshes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    pub fn extend(&self, events: Vec<Event>) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events);
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Receives the events of each request, after its response.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Subscriber: MaybeSend + MaybeSync {
    async fn on_events(&self, events: &[Event]);
}

/// Work to run once the response is on its way: the request's events, for the subscribers.
#[must_use = "a follow-up does nothing until it is run"]
pub struct FollowUp {
    subscribers: Vec<Arc<dyn Subscriber>>,
    events: Vec<Event>,
    refreshes: Vec<TagRefresh>,
}

impl FollowUp {
    pub(crate) fn new(subscribers: Vec<Arc<dyn Subscriber>>, events: Vec<Event>) -> Self {
        Self {
            subscribers,
            events,
            refreshes: Vec::new(),
        }
    }

    pub(crate) fn with_refreshes(mut self, refreshes: Vec<TagRefresh>) -> Self {
        self.refreshes = refreshes;
        self
    }

    /// Whether running it would do nothing (no cache refresh, and no events or no one listening).
    pub fn is_empty(&self) -> bool {
        self.refreshes.is_empty() && (self.events.is_empty() || self.subscribers.is_empty())
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Refreshes the cached tags the request found old, then delivers the events to every
    /// subscriber, in order.
    pub async fn run(self) {
        for refresh in self.refreshes {
            refresh.run().await;
        }
        if self.events.is_empty() {
            return;
        }
        for subscriber in &self.subscribers {
            subscriber.on_events(&self.events).await;
        }
    }
}

/// The registry's state changes over its metadata, each with the events it causes.
pub struct Operations<'a> {
    metadata: Metadata<'a>,
    now_ms: u64,
}

impl<'a> Operations<'a> {
    pub fn new(metadata: Metadata<'a>, now_ms: u64) -> Self {
        Self { metadata, now_ms }
    }

    /// Records new, verified blob bytes and links them to `repo`; the value is the locator kept
    /// for the digest (another upload's, when a concurrent push of the same blob won).
    pub async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        locator: &str,
    ) -> Result<Outcome<String>, RegistryError> {
        let kept = self
            .metadata
            .commit_blob(repo, digest, size, locator, self.now_ms)
            .await?;
        Ok(Outcome::new(
            kept,
            vec![Event::BlobCommitted {
                repository: repo.to_string(),
                digest: digest.to_string(),
                size,
            }],
        ))
    }

    /// Links a blob the registry already stores to `repo` (its bytes were sent and verified again).
    pub async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Outcome<()>, RegistryError> {
        self.metadata.link_blob(repo, digest, self.now_ms).await?;
        Ok(Outcome::new(
            (),
            vec![Event::BlobLinked {
                repository: repo.to_string(),
                digest: digest.to_string(),
                from: None,
            }],
        ))
    }

    /// Mounts `digest` from `from` into `repo`; `false` when `from` does not have it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Outcome<bool>, RegistryError> {
        let mounted = self
            .metadata
            .mount_blob(repo, from, digest, self.now_ms)
            .await?;
        Ok(Outcome::if_changed(mounted, || Event::BlobLinked {
            repository: repo.to_string(),
            digest: digest.to_string(),
            from: Some(from.to_string()),
        }))
    }

    /// Removes `repo`'s link to a blob; `false` when there was none.
    pub async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Outcome<bool>, RegistryError> {
        let unlinked = self.metadata.unlink_blob(repo, digest).await?;
        Ok(Outcome::if_changed(unlinked, || Event::BlobUnlinked {
            repository: repo.to_string(),
            digest: digest.to_string(),
        }))
    }

    /// Stores a verified manifest and moves `tags` to it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        content: String,
        tags: &[Tag],
        immutable: &[Tag],
    ) -> Result<Outcome<()>, RegistryError> {
        self.metadata
            .put_manifest(
                repo,
                digest,
                manifest,
                content,
                tags,
                immutable,
                self.now_ms,
            )
            .await?;
        let mut events = vec![Event::ManifestPushed {
            repository: repo.to_string(),
            digest: digest.to_string(),
            media_type: manifest.media_type.clone(),
            subject: manifest.subject.as_ref().map(ToString::to_string),
        }];
        events.extend(tags.iter().map(|tag| Event::TagMoved {
            repository: repo.to_string(),
            tag: tag.to_string(),
            digest: digest.to_string(),
        }));
        Ok(Outcome::new((), events))
    }

    /// Deletes a manifest and its tags (each reported as deleted); `false` when there was none.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Outcome<bool>, RegistryError> {
        let Some(tags) = self.metadata.delete_manifest(repo, digest).await? else {
            return Ok(Outcome::new(false, Vec::new()));
        };
        // The tags that went with it first, so that caches forget them too.
        let mut events: Vec<Event> = tags
            .into_iter()
            .map(|tag| Event::TagDeleted {
                repository: repo.to_string(),
                tag,
            })
            .collect();
        events.push(Event::ManifestDeleted {
            repository: repo.to_string(),
            digest: digest.to_string(),
        });
        Ok(Outcome::new(true, events))
    }

    /// Deletes a tag (not the manifest); `false` when there was none.
    pub async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Outcome<bool>, RegistryError> {
        let deleted = self.metadata.delete_tag(repo, tag).await?;
        Ok(Outcome::if_changed(deleted, || Event::TagDeleted {
            repository: repo.to_string(),
            tag: tag.to_string(),
        }))
    }
}
