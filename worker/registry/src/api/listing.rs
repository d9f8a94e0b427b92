//! Listings: `tags/list` and `_catalog` with `n`/`last` keyset pagination and `Link` headers, and
//! the referrers API with its `artifactType` filter.

use http::{header, HeaderName, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{json_response, response, Query, Registry, OCI_FILTERS_APPLIED};
use crate::auth::{CatalogView, Claims};
use crate::body::Body;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::OCI_INDEX;
use crate::metadata::Metadata;
use crate::names::RepoName;

/// A page request: how many, and after which name.
struct Page {
    limit: u64,
    /// Whether the client asked for a size (the `Link` then repeats it).
    last: String,
}

impl Registry {
    fn page(&self, query: &Query) -> Result<Page, RegistryError> {
        let limit = match query.get("n") {
            None => self.config.default_page_size,
            Some(n) => n
                .parse::<u64>()
                .map_err(|_| RegistryError::Unsupported(format!("n={n:?} is not a page size")))?
                .min(self.config.max_page_size),
        };
        Ok(Page {
            limit,
            last: query.get("last").unwrap_or_default().to_owned(),
        })
    }

    /// Turns `limit + 1` fetched names into a page and, when more remain, a `Link` header.
    fn paged(
        mut names: Vec<String>,
        page: &Page,
        base: &str,
    ) -> (Vec<String>, Option<(HeaderName, String)>) {
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        if names.len() <= limit {
            return (names, None);
        }
        names.truncate(limit);
        let link = names.last().map(|last| {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("n", &page.limit.to_string())
                .append_pair("last", last)
                .finish();
            (header::LINK, format!("<{base}?{query}>; rel=\"next\""))
        });
        (names, link)
    }

    pub(super) async fn list_tags(
        &self,
        repo: &RepoName,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let page = self.page(query)?;
        let metadata = Metadata::new(self.ports.sql.as_ref());
        let names = if page.limit == 0 {
            Vec::new()
        } else {
            metadata.tags(repo, &page.last, page.limit + 1).await?
        };
        if names.is_empty() && !metadata.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown);
        }
        let (tags, link) = Self::paged(names, &page, &format!("/v2/{repo}/tags/list"));
        let body = json!({ "name": repo.as_str(), "tags": tags }).to_string();
        let mut response = json_response(StatusCode::OK, body);
        add_link(&mut response, link);
        Ok(response)
    }

    pub(super) async fn catalog(
        &self,
        query: &Query,
        claims: Option<&Claims>,
    ) -> Result<Response<Body>, RegistryError> {
        let page = self.page(query)?;
        let names = if page.limit == 0 {
            Vec::new()
        } else {
            let metadata = Metadata::new(self.ports.sql.as_ref());
            match self.policy.catalog_view(claims) {
                CatalogView::All => metadata.repositories(&page.last, page.limit + 1).await?,
                CatalogView::Visible { namespace } => {
                    metadata
                        .visible_repositories(&page.last, page.limit + 1, namespace.as_deref())
                        .await?
                }
            }
        };
        let (repositories, link) = Self::paged(names, &page, "/v2/_catalog");
        let mut response = json_response(
            StatusCode::OK,
            json!({ "repositories": repositories }).to_string(),
        );
        add_link(&mut response, link);
        Ok(response)
    }

    pub(super) async fn referrers(
        &self,
        repo: &RepoName,
        subject: &str,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let subject: Digest = subject.parse()?;
        let artifact_type = query.get("artifactType").filter(|t| !t.is_empty());
        let referrers = Metadata::new(self.ports.sql.as_ref())
            .referrers(repo, &subject, artifact_type)
            .await?;
        let manifests: Vec<Value> = referrers
            .into_iter()
            .map(|r| {
                let mut descriptor = Map::new();
                descriptor.insert("mediaType".into(), r.media_type.into());
                descriptor.insert("digest".into(), r.digest.into());
                descriptor.insert("size".into(), r.size.into());
                if let Some(t) = r.artifact_type {
                    descriptor.insert("artifactType".into(), t.into());
                }
                if let Some(a) = r
                    .annotations
                    .and_then(|a| serde_json::from_str::<Value>(&a).ok())
                {
                    descriptor.insert("annotations".into(), a);
                }
                Value::Object(descriptor)
            })
            .collect();
        let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        let text = body.to_string();
        let mut headers = vec![
            (header::CONTENT_TYPE, OCI_INDEX.to_owned()),
            (header::CONTENT_LENGTH, text.len().to_string()),
        ];
        if artifact_type.is_some() {
            headers.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
        }
        Ok(response(StatusCode::OK, &headers, Body::from(text)))
    }
}

fn add_link(response: &mut Response<Body>, link: Option<(HeaderName, String)>) {
    if let Some((name, value)) = link {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}
