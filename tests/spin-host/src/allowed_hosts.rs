//! `allowed_outbound_hosts`: parsing and matching, following Spin's own rules
//! (`spin-outbound-networking-config`, `AllowedHostConfig::parse` / `OutboundUrl`).
//!
//! An entry is `scheme://host[:port]`:
//! * scheme: a name of letters only, or `*`;
//! * host: a name, `*`, `*.example.com` (any subdomain, not the apex), an IP address, an IP
//!   network in CIDR form (`10.0.0.0/8`, then a port is required: `*://10.0.0.0/8:80`), or
//!   `self` / `self.alt` (the app itself);
//! * port: a number, a range `4000..5000` (end exclusive), `*`, or omitted, which means the
//!   scheme's well-known port (80 for http, 443 for https; other schemes without a known port
//!   are an error).
//!
//! A path is rejected: `http://h/a` and `http://h:80/a` are errors; only a bare trailing `/`
//! is accepted and ignored. `insecure:allow-all` as the only entry is rejected (Spin points
//! to `*://*:*`). Requests are matched on scheme, lower-cased host and effective port only.

use anyhow::{bail, ensure, Context, Result};
use std::net::IpAddr;
use std::ops::Range;

/// All entries of one component, already resolved (no `{{ }}` templates left).
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    scheme: Option<String>, // None = any
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    AnySubdomain(String), // ".example.com"
    ToSelf,
    Exact(String),
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Any,
    Port(u16),
    Range(Range<u16>),
}

impl AllowedHosts {
    /// Parses resolved entries; the first invalid one is an error naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        if entries.len() == 1 && entries[0].as_ref() == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all outbound traffic");
        }
        let entries = entries
            .iter()
            .map(|e| {
                AllowedHost::parse(e.as_ref()).with_context(|| {
                    format!("invalid allowed_outbound_hosts entry {:?}", e.as_ref())
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// Whether an absolute request URL (`scheme`, `host`, optional explicit `port`) is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|e| {
            e.scheme.as_deref().is_none_or(|s| s == scheme)
                && e.host.allows(&host)
                && e.port.allows(port.or_else(|| well_known_port(scheme)))
        })
    }

    /// Whether a request to the app itself (`http://self.alt/...`) is allowed: an entry with
    /// an http(s) (or `*`) scheme and host `self`, `self.alt` or `*`.
    pub fn allows_self(&self) -> bool {
        self.entries.iter().any(|e| {
            e.scheme
                .as_deref()
                .is_none_or(|s| s == "http" || s == "https")
                && matches!(e.host, HostRule::Any | HostRule::ToSelf)
        })
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self> {
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("{url:?} does not contain a scheme (e.g., 'http://' or '*://'); hosts must be in the form <scheme>://<host>[:<port>]");
        };
        // Like Spin: the port is whatever follows the last ':'; a '/' after it must end the entry.
        let (host, rest) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match rest.split_once('/') {
            Some((port, path)) => {
                ensure!(path.is_empty(), "{url:?} has a path but is not allowed to");
                port
            }
            None => rest,
        };
        Ok(Self {
            scheme: parse_scheme(scheme)?,
            host: HostRule::parse(host)?,
            port: PortRule::parse(port, scheme)?,
        })
    }
}

fn parse_scheme(scheme: &str) -> Result<Option<String>> {
    if scheme == "*" {
        return Ok(None);
    }
    ensure!(
        !scheme.starts_with('{'),
        "scheme lists are not yet supported"
    );
    ensure!(
        scheme.chars().all(char::is_alphabetic),
        "scheme {scheme:?} contains non alphabetic character"
    );
    Ok(Some(scheme.to_string()))
}

impl HostRule {
    fn parse(host: &str) -> Result<Self> {
        let host = host.trim();
        if host == "*" {
            return Ok(Self::Any);
        }
        if host == "self" || host == "self.alt" {
            return Ok(Self::ToSelf);
        }
        if host.starts_with('{') {
            bail!("host lists are not yet supported");
        }
        if let Some(net) = parse_cidr(host) {
            return Ok(net);
        }
        if matches!(host.split('/').nth(1), Some(path) if !path.is_empty()) {
            bail!("hosts must not contain paths");
        }
        if let Some(domain) = host.strip_prefix("*.") {
            ensure!(
                !domain.contains('*'),
                "invalid allowed host {host}: wildcards are allowed only as prefixes"
            );
            return Ok(Self::AnySubdomain(format!(".{domain}")));
        }
        ensure!(
            !host.contains('*'),
            "invalid allowed host {host}: wildcards are allowed only as subdomains"
        );
        Ok(Self::Exact(host.trim_end_matches('/').to_string()))
    }

    fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::AnySubdomain(suffix) => host.ends_with(suffix.as_str()),
            Self::Exact(h) => h == host,
            // Absolute URLs never match `self`; see `AllowedHosts::allows_self`.
            Self::ToSelf => false,
            Self::Cidr(net, len) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| same_prefix(*net, ip, *len)),
        }
    }
}

/// `addr/len`, with host bits truncated (Spin uses `IpNetwork::from_str_truncate`).
fn parse_cidr(host: &str) -> Option<HostRule> {
    let (addr, len) = host.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(HostRule::Cidr(addr, len))
}

fn same_prefix(net: IpAddr, ip: IpAddr, len: u8) -> bool {
    fn prefix_eq(a: u128, b: u128, len: u8, bits: u8) -> bool {
        if len == 0 {
            return true;
        }
        let shift = u32::from(bits - len);
        (a >> shift) == (b >> shift)
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            prefix_eq(u32::from(n).into(), u32::from(i).into(), len, 32)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(u128::from(n), u128::from(i), len, 128),
        _ => false,
    }
}

impl PortRule {
    fn parse(port: &str, scheme: &str) -> Result<Self> {
        if port.is_empty() {
            return well_known_port(scheme).map(Self::Port).with_context(|| {
                format!("no port was provided and the scheme {scheme:?} does not have a known default port number")
            });
        }
        if port == "*" {
            return Ok(Self::Any);
        }
        ensure!(!port.starts_with('{'), "port lists are not yet supported");
        if let Some((start, end)) = port.split_once("..") {
            let start = start
                .parse()
                .with_context(|| format!("port range {port:?} contains non-number"))?;
            let end = end
                .parse()
                .with_context(|| format!("port range {port:?} contains non-number"))?;
            return Ok(Self::Range(start..end));
        }
        Ok(Self::Port(port.parse().with_context(|| {
            format!("port {port:?} is not a number")
        })?))
    }

    fn allows(&self, port: Option<u16>) -> bool {
        match (self, port) {
            (Self::Any, _) => true,
            (_, None) => false,
            (Self::Port(p), Some(port)) => *p == port,
            (Self::Range(r), Some(port)) => r.contains(&port),
        }
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry: &str) -> AllowedHosts {
        AllowedHosts::parse(&[entry]).expect(entry)
    }

    #[test]
    fn parses_like_spin() {
        for ok in [
            "http://spin.fermyon.dev",
            "http://spin.fermyon.dev/",
            "http://spin.fermyon.dev:4444/",
            "https://spin.fermyon.dev:4444..5555",
            "*://spin.fermyon.dev:7777",
            "http://self",
            "http://localhost:3001",
            "http://*.example.com",
            "http://192.168.1.1:3002",
            "http://[::1]:8001",
            "*://127.0.0.0/24:80",
            "*://ff00::/8:80",
            "*://*:*",
        ] {
            AllowedHosts::parse(&[ok]).expect(ok);
        }
        for bad in [
            "spin.fermyon.dev",
            "spin.fermyon.dev:80",
            "localhost",
            "http://[::1]",
            "*://127.0.0.0/24",
            "http://spin.fermyon.dev/a",
            "http://spin.fermyon.dev:6666/a/b",
            "http://*.fermyon.dev/a",
            "http://a.*.com",
            "http://exa*mple.com",
            "ht-tp://example.com",
            "tcp://example.com",
            "http://example.com:http",
            "insecure:allow-all",
        ] {
            assert!(
                AllowedHosts::parse(&[bad]).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn matches_like_spin() {
        let a = AllowedHosts::parse(&["*://spin.fermyon.dev:443", "http://example.com:8383"])
            .expect("parse");
        assert!(a.allows("http", "example.com", Some(8383)));
        assert!(a.allows("https", "spin.fermyon.dev", None));
        assert!(!a.allows("http", "example.com", None));
        assert!(!a.allows("http", "google.com", None));

        let w = AllowedHosts::parse(&["http://*.example.com", "http://*.example2.com:8383"])
            .expect("parse");
        assert!(w.allows("http", "a.example.com", None));
        assert!(w.allows("http", "a.b.example.com", None));
        assert!(w.allows("http", "a.b.example2.com", Some(8383)));
        assert!(!w.allows("http", "a.b.example2.com", None));
        assert!(!w.allows("http", "example.com", None));
        assert!(!w.allows("http", "myexample.com", None));

        assert!(one("*://127.0.0.1/24:63551").allows("http", "127.0.0.9", Some(63551)));
        assert!(!one("*://127.0.0.1/24:63551").allows("http", "127.0.1.9", Some(63551)));
        assert!(one("http://127.0.0.1:*").allows("http", "127.0.0.1", Some(1234)));
        assert!(one("http://h:4444..5555").allows("http", "h", Some(4444)));
        assert!(!one("http://h:4444..5555").allows("http", "h", Some(5555)));
        assert!(!one("https://h").allows("http", "h", Some(443)));
        // Entries are compared as written (Spin does not lower-case them).
        assert!(!one("http://Example.com").allows("http", "example.com", None));
        assert!(one("http://example.com").allows("http", "EXAMPLE.com", None));
        assert!(one("http://self").allows_self());
        assert!(!one("http://self").allows("http", "self", None));
        assert!(!one("http://example.com").allows_self());
    }
}
