//! Smoke-test component for spin-test-host (see ../smoke.sh). Routes:
//!
//! * `GET /` -> `ok`
//! * `GET /var?<name>` -> the component variable (400 invalid-name, 404 undefined)
//! * `PUT|GET|DELETE /kv/<key>` on the `default` store (413 when the host refuses a value)
//! * `GET /kv-open/<label>` -> opens a store and reports the error, if any
//! * `GET /fetch?<url>` -> outbound GET; the upstream's status and body, or 502 + error
//! * `PUT /echo` -> streams the request body back as the response body
//! * `GET /sleep?<ms>` / `GET /busy?<ms>` -> waits, or computes, for that long, then `done`

use futures::{SinkExt, StreamExt};
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingResponse, Request, Response, ResponseOutparam,
};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error as KvError, Store};
use spin_sdk::variables;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let path_and_query = req.path_with_query().unwrap_or_default();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_and_query.clone(), String::new()),
    };
    let method = req.method();
    let (status, body): (u16, Vec<u8>) = match (&method, path.as_str()) {
        (Method::Get, "/") => (200, b"ok".to_vec()),
        (Method::Get, "/var") => match variables::get(&query) {
            Ok(v) => (200, v.into_bytes()),
            Err(variables::Error::InvalidName(m)) => (400, format!("invalid-name: {m}").into()),
            Err(variables::Error::Undefined(m)) => (404, format!("undefined: {m}").into()),
            Err(e) => (500, format!("{e:?}").into()),
        },
        (Method::Put, "/echo") => return echo(req, out).await,
        (Method::Get, "/fetch") => fetch(&query).await,
        (Method::Get, "/sleep") => {
            let ms = query.parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            (200, b"done".to_vec())
        }
        (Method::Get, "/busy") => {
            let ms = query.parse().unwrap_or(0);
            let start = std::time::Instant::now();
            let mut spins = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(ms) {
                spins = spins.wrapping_add(1);
            }
            (200, format!("done after {spins} spins").into())
        }
        (_, p) if p.starts_with("/kv-open/") => match Store::open(&p["/kv-open/".len()..]) {
            Ok(_) => (200, b"opened".to_vec()),
            Err(e) => (403, kv_error(&e).into()),
        },
        (_, p) if p.starts_with("/kv/") => {
            let key = p["/kv/".len()..].to_string();
            kv(method, &key, req).await
        }
        _ => (404, b"no such route".to_vec()),
    };
    reply(out, status, body).await;
}

async fn kv(method: Method, key: &str, req: IncomingRequest) -> (u16, Vec<u8>) {
    let store = match Store::open_default() {
        Ok(s) => s,
        Err(e) => return (500, kv_error(&e).into()),
    };
    let result = match method {
        Method::Put => match req.into_body().await {
            Ok(value) => store.set(key, &value).map(|()| (201, Vec::new())),
            Err(e) => return (400, format!("body: {e:?}").into()),
        },
        Method::Get => store.get(key).map(|v| match v {
            Some(v) => (200, v),
            None => (404, b"missing".to_vec()),
        }),
        Method::Delete => store.delete(key).map(|()| (204, Vec::new())),
        _ => return (405, Vec::new()),
    };
    result.unwrap_or_else(|e| (413, kv_error(&e).into()))
}

fn kv_error(e: &KvError) -> String {
    match e {
        KvError::StoreTableFull => "store-table-full".into(),
        KvError::NoSuchStore => "no-such-store".into(),
        KvError::AccessDenied => "access-denied".into(),
        KvError::Other(m) => format!("other: {m}"),
    }
}

async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let request = Request::get(url).build();
    match spin_sdk::http::send::<_, Response>(request).await {
        Ok(resp) => (*resp.status(), resp.body().to_vec()),
        Err(e) => (502, format!("outbound error: {e:?}").into()),
    }
}

async fn echo(req: IncomingRequest, out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let mut sink = response.take_body();
    out.set(response);
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if sink.send(chunk).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("echo: request body error: {e:?}");
                return;
            }
        }
    }
}

async fn reply(out: ResponseOutparam, status: u16, body: Vec<u8>) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    if let Err(e) = out.set_with_body(response, body).await {
        eprintln!("reply: {e:?}");
    }
}
