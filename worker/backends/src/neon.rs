//! A client for Neon's SQL-over-HTTP protocol, implementing the `Sql` port over the `HttpClient`
//! port, so every host (Workers, Spin, native) reaches Postgres the same way.
//!
//! Hand-written: the protocol is one JSON request per statement or batch, and no maintained crate
//! supports a caller-supplied transport, array mode and an endpoint override on every target
//! (see the Neon reference notes). What it sends: `POST <endpoint>` with `Neon-Connection-String`,
//! `Neon-Raw-Text-Output: true` and `Neon-Array-Mode: true`; every parameter as text or null;
//! `{"query","params"}` for one statement and `{"queries":[...]}` for a batch (one transaction).
//! Values come back as Postgres text and are decoded by type OID.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use openregistry::body::Body;
use openregistry::ports::{
    HttpClient, Row, Sql, SqlError, SqlValue, Statement, Timeout, Unavailable,
};

/// Neon's answers are capped at 10 MiB; anything bigger is not a Neon answer.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

const BYTEA: u32 = 17;
const INTEGER_TYPES: [u32; 4] = [20, 21, 23, 26]; // int8, int2, int4, oid

/// Why a database URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeonConfigError {
    #[error("the database URL must start with postgres:// or postgresql://")]
    Scheme,
    #[error("the database URL has no user")]
    User,
    #[error("the database URL's host must be a DNS name such as ep-x-123.us-east-2.aws.neon.tech")]
    Host,
}

/// Where and how to reach the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeonConfig {
    /// The `postgres://user:password@host/db` string, sent in `Neon-Connection-String`.
    pub connection_string: String,
    /// The SQL endpoint URL.
    pub endpoint: String,
    /// Client-side limit for one HTTP round trip (Neon has no server-side timeout).
    pub timeout: Duration,
    /// Extra attempts for reads that failed on the way (never for writes).
    pub read_retries: u32,
}

impl NeonConfig {
    /// From `OPENREGISTRY_DATABASE_URL` and the optional `OPENREGISTRY_DATABASE_HTTP_ENDPOINT`.
    /// Without an override the endpoint is Neon's: `https://api.<host minus its first label>/sql`.
    pub fn new(database_url: &str, endpoint: Option<&str>) -> Result<Self, NeonConfigError> {
        let rest = database_url
            .strip_prefix("postgresql://")
            .or_else(|| database_url.strip_prefix("postgres://"))
            .ok_or(NeonConfigError::Scheme)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host_port) = authority.rsplit_once('@').ok_or(NeonConfigError::User)?;
        if userinfo.split(':').next().unwrap_or_default().is_empty() {
            return Err(NeonConfigError::User);
        }
        let host = host_port.split(':').next().unwrap_or_default();
        let dns_name = host.contains('.')
            && !host.starts_with('[')
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !dns_name {
            return Err(NeonConfigError::Host);
        }
        let endpoint = match endpoint {
            Some(url) => url.to_owned(),
            None => {
                let (_, parent) = host.split_once('.').ok_or(NeonConfigError::Host)?;
                format!("https://api.{parent}/sql")
            }
        };
        Ok(Self {
            connection_string: database_url.to_owned(),
            endpoint,
            timeout: Duration::from_secs(10),
            read_retries: 1,
        })
    }
}

/// The `Sql` port over Neon's HTTP protocol.
#[derive(Clone)]
pub struct NeonSql {
    http: Arc<dyn HttpClient>,
    config: NeonConfig,
}

#[derive(Serialize)]
struct QueryBody<'a> {
    query: &'a str,
    params: Vec<Option<String>>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    queries: Vec<QueryBody<'a>>,
}

#[derive(Deserialize)]
struct Field {
    #[serde(rename = "dataTypeID")]
    data_type_id: u32,
}

#[derive(Deserialize)]
struct QueryResult {
    #[serde(default)]
    fields: Vec<Field>,
    #[serde(default)]
    rows: Vec<Vec<Option<String>>>,
}

#[derive(Deserialize)]
struct BatchResult {
    results: Vec<QueryResult>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    constraint: Option<String>,
}

fn encode(value: &SqlValue) -> Option<String> {
    match value {
        SqlValue::Null => None,
        SqlValue::Int(i) => Some(i.to_string()),
        SqlValue::Text(s) => Some(s.clone()),
        SqlValue::Bytes(b) => Some(format!("\\x{}", hex::encode(b))),
    }
}

fn query_body(statement: &Statement) -> QueryBody<'_> {
    QueryBody {
        query: &statement.sql,
        params: statement.params.iter().map(encode).collect(),
    }
}

fn decode(result: QueryResult) -> Result<Vec<Row>, SqlError> {
    let types: Vec<u32> = result.fields.iter().map(|f| f.data_type_id).collect();
    result
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .enumerate()
                .map(|(i, value)| {
                    let Some(text) = value else {
                        return Ok(SqlValue::Null);
                    };
                    match types.get(i).copied() {
                        Some(BYTEA) => {
                            let hex_text = text.strip_prefix("\\x").ok_or_else(|| {
                                SqlError::Decode(format!("bytea without \\x prefix in column {i}"))
                            })?;
                            hex::decode(hex_text)
                                .map(|b| SqlValue::Bytes(Bytes::from(b)))
                                .map_err(|e| SqlError::Decode(format!("bytea column {i}: {e}")))
                        }
                        Some(t) if INTEGER_TYPES.contains(&t) => text
                            .parse()
                            .map(SqlValue::Int)
                            .map_err(|e| SqlError::Decode(format!("integer column {i}: {e}"))),
                        _ => Ok(SqlValue::Text(text)),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Row)
        })
        .collect()
}

fn unavailable(message: impl Into<String>) -> SqlError {
    SqlError::Unavailable(Unavailable::new("database", message))
}

/// Maps a 400 answer: a Postgres error (SQLSTATE in `code`) or one of the proxy's own.
fn database_error(body: &[u8]) -> SqlError {
    let Ok(error) = serde_json::from_slice::<ErrorBody>(body) else {
        return unavailable(format!(
            "unreadable error answer: {}",
            String::from_utf8_lossy(body.get(..200).unwrap_or(body))
        ));
    };
    match error.code.as_deref().unwrap_or_default() {
        "23505" => SqlError::UniqueViolation(error.constraint.unwrap_or(error.message)),
        "23503" => SqlError::ForeignKeyViolation(error.constraint.unwrap_or(error.message)),
        // Serialization failures and deadlocks: nothing was committed; trying again may work.
        "40001" | "40P01" => unavailable(error.message),
        // The connection, not the statement, failed (admin shutdown, cannot connect ...).
        code if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") => {
            unavailable(error.message)
        }
        code => SqlError::Database {
            code: code.to_owned(),
            message: error.message,
        },
    }
}

fn is_read(statement: &Statement) -> bool {
    let sql = statement.sql.trim_start();
    sql.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("select"))
}

impl NeonSql {
    pub fn new(http: Arc<dyn HttpClient>, config: NeonConfig) -> Self {
        Self { http, config }
    }

    /// One HTTP round trip: the JSON answer of a 200, or the mapped error.
    async fn round_trip(&self, json: Vec<u8>) -> Result<Bytes, SqlError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.config.endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header("neon-connection-string", &self.config.connection_string)
            .header("neon-raw-text-output", "true")
            .header("neon-array-mode", "true")
            .body(Body::from(json))
            .map_err(|e| unavailable(format!("cannot build request: {e}")))?;
        request
            .extensions_mut()
            .insert(Timeout(self.config.timeout));
        let response = self
            .http
            .send(request)
            .await
            .map_err(SqlError::Unavailable)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| unavailable(format!("reading the answer: {e}")))?;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::BAD_REQUEST => Err(database_error(&body)),
            other => Err(unavailable(format!(
                "HTTP {}: {}",
                other.as_u16(),
                String::from_utf8_lossy(body.get(..200).unwrap_or(&body))
            ))),
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Sql for NeonSql {
    async fn query(&self, statement: Statement) -> Result<Vec<Row>, SqlError> {
        let json = serde_json::to_vec(&query_body(&statement))
            .map_err(|e| unavailable(format!("cannot encode query: {e}")))?;
        // Only reads are retried: a write that timed out may have committed.
        let attempts = if is_read(&statement) {
            1 + self.config.read_retries
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            match self.round_trip(json.clone()).await {
                Ok(body) => {
                    let result: QueryResult = serde_json::from_slice(&body)
                        .map_err(|e| SqlError::Decode(format!("query answer: {e}")))?;
                    return decode(result);
                }
                Err(SqlError::Unavailable(u)) => last = Some(u),
                Err(other) => return Err(other),
            }
        }
        Err(SqlError::Unavailable(last.unwrap_or_else(|| {
            Unavailable::new("database", "no attempt made")
        })))
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>, SqlError> {
        let body = BatchBody {
            queries: statements.iter().map(query_body).collect(),
        };
        let json = serde_json::to_vec(&body)
            .map_err(|e| unavailable(format!("cannot encode batch: {e}")))?;
        let answer = self.round_trip(json).await?;
        let result: BatchResult = serde_json::from_slice(&answer)
            .map_err(|e| SqlError::Decode(format!("batch answer: {e}")))?;
        if result.results.len() != statements.len() {
            return Err(SqlError::Decode(format!(
                "batch of {} statements answered with {} results",
                statements.len(),
                result.results.len()
            )));
        }
        result.results.into_iter().map(decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_endpoint_is_neons_api_host() {
        let config = NeonConfig::new(
            "postgresql://u:p@ep-x-123.us-east-2.aws.neon.tech/db?sslmode=require",
            None,
        )
        .expect("valid");
        assert_eq!(config.endpoint, "https://api.us-east-2.aws.neon.tech/sql");
        let local = NeonConfig::new(
            "postgres://u:p@db.localtest.me:5432/db",
            Some("http://127.0.0.1:9/sql"),
        )
        .expect("valid");
        assert_eq!(local.endpoint, "http://127.0.0.1:9/sql");
    }

    #[test]
    fn unusable_database_urls_are_refused() {
        assert_eq!(
            NeonConfig::new("mysql://u:p@h.x/db", None),
            Err(NeonConfigError::Scheme)
        );
        assert_eq!(
            NeonConfig::new("postgres://h.x/db", None),
            Err(NeonConfigError::User)
        );
        assert_eq!(
            NeonConfig::new("postgres://u:p@127.0.0.1/db", None),
            Err(NeonConfigError::Host)
        );
        assert_eq!(
            NeonConfig::new("postgres://u:p@localhost/db", None),
            Err(NeonConfigError::Host)
        );
    }

    #[test]
    fn parameters_are_text_and_bytea_is_hex() {
        let statement = Statement::new("SELECT $1, $2, $3, $4")
            .bind(7i64)
            .bind("it's")
            .bind(SqlValue::Bytes(Bytes::from_static(&[0, 255])))
            .bind(SqlValue::Null);
        let json = serde_json::to_string(&query_body(&statement)).expect("json");
        assert_eq!(
            json,
            r#"{"query":"SELECT $1, $2, $3, $4","params":["7","it's","\\x00ff",null]}"#
        );
    }

    #[test]
    fn values_are_decoded_by_type_oid() {
        let answer = r#"{"fields":[{"name":"a","dataTypeID":20},{"name":"b","dataTypeID":17},
            {"name":"c","dataTypeID":25},{"name":"d","dataTypeID":23}],
            "rows":[["9007199254740993","\\x00ff","text",null]]}"#;
        let rows = decode(serde_json::from_str(answer).expect("json")).expect("decodes");
        assert_eq!(
            rows,
            vec![Row(vec![
                SqlValue::Int(9_007_199_254_740_993),
                SqlValue::Bytes(Bytes::from_static(&[0, 255])),
                SqlValue::Text("text".into()),
                SqlValue::Null,
            ])]
        );
    }

    #[test]
    fn postgres_errors_are_typed() {
        let unique = br#"{"message":"duplicate key","code":"23505","constraint":"tags_pkey"}"#;
        assert_eq!(
            database_error(unique),
            SqlError::UniqueViolation("tags_pkey".into())
        );
        let syntax = br#"{"message":"syntax error","code":"42601"}"#;
        assert!(
            matches!(database_error(syntax), SqlError::Database { code, .. } if code == "42601")
        );
        let conflict = br#"{"message":"could not serialize","code":"40001"}"#;
        assert!(matches!(database_error(conflict), SqlError::Unavailable(_)));
        assert!(matches!(
            database_error(b"not json"),
            SqlError::Unavailable(_)
        ));
    }

    #[test]
    fn only_selects_count_as_reads() {
        assert!(is_read(&Statement::new("  select 1")));
        assert!(!is_read(&Statement::new("DELETE FROM t RETURNING x")));
    }
}
