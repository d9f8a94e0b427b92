//! HTTP trigger routes (`route = "/..."`) and the `spin-*` request headers Spin derives
//! from a match: exact routes (`/foo`), named segments (`/users/:id`) and trailing
//! wildcards (`/foo/...`); an exact route beats a wildcard, and among wildcards the longest
//! prefix wins, as in Spin's router.

use anyhow::{ensure, Result};

#[derive(Debug, Clone)]
pub struct Route {
    /// As written in the manifest.
    raw: String,
    /// Absolute, with one trailing `/` removed (Spin's "based route" with base `/`).
    based: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A matched route and what Spin passes to the component about it.
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    /// The part of the path under a trailing wildcard (`spin-path-info`).
    pub path_info: String,
    /// Named segments (`spin-path-match-<name>`).
    pub params: Vec<(String, String)>,
}

impl Route {
    pub fn parse(raw: &str) -> Result<Self> {
        let absolute = if raw.starts_with('/') {
            raw.to_string()
        } else {
            format!("/{raw}")
        };
        let based = absolute.strip_suffix('/').unwrap_or(&absolute).to_string();
        let (prefix, wildcard) = match based
            .strip_suffix("/...")
            .or_else(|| based.strip_suffix("/*"))
        {
            Some(prefix) => (prefix, true),
            None => (based.as_str(), false),
        };
        let mut segments = Vec::new();
        for seg in split(prefix) {
            segments.push(match seg.strip_prefix(':') {
                Some(name) => {
                    ensure!(!name.is_empty(), "route {raw:?}: empty parameter name");
                    Segment::Param(name.to_string())
                }
                None => {
                    ensure!(
                        !seg.contains('*') && seg != "...",
                        "route {raw:?}: wildcards are only allowed at the end"
                    );
                    Segment::Literal(seg.to_string())
                }
            });
        }
        Ok(Self {
            raw: raw.to_string(),
            based,
            segments,
            wildcard,
        })
    }

    /// `spin-raw-component-route`: the route as written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// `spin-matched-route`: the route with the (root) base applied.
    pub fn based(&self) -> &str {
        &self.based
    }

    /// `spin-component-route`: the route without its trailing wildcard.
    pub fn raw_or_prefix(&self) -> &str {
        self.raw.strip_suffix("/...").unwrap_or(&self.raw)
    }

    fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let parts: Vec<&str> = split(path).collect();
        let fixed = self.segments.len();
        if parts.len() < fixed || (!self.wildcard && parts.len() != fixed) {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(&parts) {
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
            }
        }
        let path_info = if self.wildcard {
            let rest = parts[fixed..].join("/");
            match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            }
        } else {
            String::new()
        };
        Some(RouteMatch {
            route: self,
            path_info,
            params,
        })
    }

    /// Higher is more specific: exact before wildcard, then more literal segments, then more
    /// segments.
    fn rank(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (!self.wildcard, literals, self.segments.len())
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The best route for `path`, if any.
pub fn find<'a>(routes: &'a [Route], path: &str) -> Option<RouteMatch<'a>> {
    routes
        .iter()
        .filter_map(|r| r.matches(path))
        .max_by_key(|m| m.route.rank())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[&str]) -> Vec<Route> {
        list.iter().map(|r| Route::parse(r).expect(r)).collect()
    }

    #[test]
    fn wildcard_and_path_info() {
        let r = routes(&["/..."]);
        for (path, info) in [
            ("/", "/"),
            ("/v2/", "/v2/"),
            ("/v2/a/blobs/x", "/v2/a/blobs/x"),
        ] {
            let m = find(&r, path).expect(path);
            assert_eq!(m.path_info, info, "{path}");
            assert_eq!(m.route.based(), "/...");
            assert_eq!(m.route.raw_or_prefix(), "");
        }
        let r = routes(&["/foo/..."]);
        assert_eq!(find(&r, "/foo").map(|m| m.path_info).as_deref(), Some(""));
        assert_eq!(
            find(&r, "/foo/bar").map(|m| m.path_info).as_deref(),
            Some("/bar")
        );
        assert!(find(&r, "/foobar").is_none());
    }

    #[test]
    fn precedence_and_params() {
        let r = routes(&["/...", "/one", "/one/two/...", "/users/:id/..."]);
        assert_eq!(find(&r, "/one").map(|m| m.route.raw()), Some("/one"));
        assert_eq!(find(&r, "/one/").map(|m| m.route.raw()), Some("/one"));
        assert_eq!(
            find(&r, "/one/two/x").map(|m| m.route.raw()),
            Some("/one/two/...")
        );
        assert_eq!(find(&r, "/other").map(|m| m.route.raw()), Some("/..."));
        let m = find(&r, "/users/42/bar").expect("param route");
        assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(m.path_info, "/bar");
        assert!(find(&routes(&["/one"]), "/two").is_none());
    }
}
