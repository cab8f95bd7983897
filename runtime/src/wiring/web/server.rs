//! The HTTP server (axum): routes, the bearer-token check, binding and graceful shutdown.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health` | 200 `{"status":"alive"}` while the process serves requests |
//! | `GET /ready` | 200 `{"status":"ready"}`, else 503 `{"status":"not_ready","reason":..}` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /topology`, `/topology.dot`, `/topology.svg` | the topology as JSON, DOT, SVG |
//! | `GET /status` | live figures per agent (the status page polls it) |
//! | `GET /tables/{name}/{key}` | a table value as JSON; 307 to the owner when another worker owns the key |
//! | `GET /`, `/assets/*` | the status page (no data in it; it fetches the routes above) |
//!
//! With a token configured every route but `/health`, `/` and `/assets/*` needs
//! `Authorization: Bearer <token>`. Backend calls run on tokio's blocking pool: table reads
//! go to LMDB, and a slow read must not stall the worker's async threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::oneshot;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::wiring::web::api::{TableAnswer, WebBackend};
use crate::wiring::web::{to_dot, to_svg};

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The page and its assets come from this worker only; the SVG is inlined by script.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";
/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// A running web server. It stops on [`WebServer::shutdown`], or when dropped (without
/// waiting for requests in flight).
pub(crate) struct WebServer {
    /// The address it listens on (the port chosen when 0 was asked for).
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// Stops accepting connections, lets requests in flight finish (up to 5 s), and returns.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(DRAIN, &mut task).await.is_err() {
            tracing::warn!(addr = %self.addr, "web server: requests still running after 5 s; closing them");
            task.abort();
        }
    }
}

#[derive(Clone)]
struct WebState {
    backend: Arc<dyn WebBackend>,
    token: Option<Arc<str>>,
}

/// Binds `config.web_bind:web_port` (0: a free port) and serves in a background task.
/// `user` holds the app's own routes (`App::routes`), served behind the same token.
pub(crate) async fn serve(
    config: &Config,
    backend: Arc<dyn WebBackend>,
    user: Option<Router>,
) -> Result<WebServer> {
    let wanted = SocketAddr::new(config.web_bind, config.web_port.unwrap_or(0));
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .map_err(|e| bind_error(wanted, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("web server: reading the bound address", e))?;
    let shared = WebState {
        backend,
        token: config.web_token.as_deref().map(Arc::from),
    };
    let app = router(shared, user)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    tracing::info!(
        %addr,
        token = config.web_token.is_some(),
        "web server listening on http://{addr}/"
    );
    Ok(WebServer { addr, stop, task })
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::config(
            "--web-port (RILL_WEB_PORT)",
            format!(
                "{addr} is in use (another worker on this host?); choose another port, or 0 for a free one"
            ),
        ),
        std::io::ErrorKind::AddrNotAvailable => Error::config(
            "RILL_WEB_BIND",
            format!("{} is not an address of this host: {e}", addr.ip()),
        ),
        std::io::ErrorKind::PermissionDenied => Error::config(
            "--web-port (RILL_WEB_PORT)",
            format!("binding {addr} is not permitted ({e}); ports below 1024 need privileges"),
        ),
        _ => Error::io(format!("web server: binding {addr}"), e),
    }
}

fn router(shared: WebState, user: Option<Router>) -> Result<Router> {
    let guarded = Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/topology", get(topology))
        .route("/topology.dot", get(topology_dot))
        .route("/topology.svg", get(topology_svg))
        .route("/status", get(status))
        .route("/tables/{name}/{key}", get(table))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    let rill = Router::new()
        .route("/health", get(health))
        .route("/", get(page))
        .route("/assets/{file}", get(asset))
        .merge(guarded)
        .with_state(shared.clone());
    let app = match user {
        Some(user) => merge_user_routes(rill, user, shared)?,
        None => rill,
    };
    Ok(app.fallback(not_found))
}

/// The app's routes beside rill's, behind the token. axum refuses overlapping routes by
/// panicking; that becomes a start-up error naming the setting.
fn merge_user_routes(rill: Router, user: Router, shared: WebState) -> Result<Router> {
    let user = user.route_layer(middleware::from_fn_with_state(shared, require_token));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rill.merge(user))).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Error::config(
            "App::routes or #[page]",
            format!("a route of the app overlaps one rill serves ({why}); rill serves /, /health, /ready, /metrics, /status, /topology*, /tables/* and /assets/*, so choose other paths"),
        )
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(State(s): State<WebState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    if bearer(req.headers()).is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "this worker requires `Authorization: Bearer <token>` (RILL_WEB_TOKEN)",
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"rill\""),
    );
    res
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares in time that depends only on the lengths, so response times say nothing about
/// how much of a guess was right.
fn same(given: &[u8], token: &[u8]) -> bool {
    let mut diff = given.len() ^ token.len();
    for i in 0..given.len().max(token.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = token.get(i).copied().unwrap_or(0);
        diff |= usize::from(a ^ b);
    }
    std::hint::black_box(diff) == 0
}

/// Runs a backend call on the blocking pool.
async fn call<T: Send + 'static>(
    s: &WebState,
    f: impl FnOnce(&dyn WebBackend) -> T + Send + 'static,
) -> std::result::Result<T, Response> {
    let backend = Arc::clone(&s.backend);
    tokio::task::spawn_blocking(move || f(backend.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "web server: a backend call failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the worker's log",
            )
        })
}

async fn health() -> Response {
    axum::Json(json!({ "status": "alive" })).into_response()
}

async fn ready(State(s): State<WebState>) -> Response {
    match call(&s, |b| b.ready()).await {
        Ok(Ok(())) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
        Err(res) => res,
    }
}

async fn metrics(State(s): State<WebState>) -> Response {
    match call(&s, |b| b.metrics()).await {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_TYPE)], text).into_response(),
        Err(res) => res,
    }
}

async fn topology(State(s): State<WebState>) -> Response {
    match call(&s, |b| b.topology()).await {
        Ok(t) => axum::Json(t).into_response(),
        Err(res) => res,
    }
}

async fn topology_dot(State(s): State<WebState>) -> Response {
    match call(&s, |b| to_dot(&b.topology())).await {
        Ok(dot) => (
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            dot,
        )
            .into_response(),
        Err(res) => res,
    }
}

async fn topology_svg(State(s): State<WebState>) -> Response {
    match call(&s, |b| to_svg(&b.topology())).await {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
                // Opened on its own, an SVG is a document: no scripts in it, whatever the names.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            svg,
        )
            .into_response(),
        Err(res) => res,
    }
}

async fn status(State(s): State<WebState>) -> Response {
    match call(&s, |b| b.status()).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(res) => res,
    }
}

/// `key` arrives percent-decoded: a key with `/` in it is sent as `%2F`. `?at=<time>` (ms, an
/// age such as `5m`, or RFC 3339) reads a windowed table's window at that time.
async fn table(
    State(s): State<WebState>,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let at = match query.get("at").map(|t| crate::base::time::parse_instant(t)) {
        None => None,
        Some(Some(ms)) => Some(ms),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`at` is a time: ms since the epoch, an age (`30s`, `15m`), or RFC 3339",
            );
        }
    };
    let (n, k) = (name.clone(), key.clone());
    let answer = match call(&s, move |b| b.table(&n, &k, at)).await {
        Ok(answer) => answer,
        Err(res) => return res,
    };
    match answer {
        TableAnswer::Found(value) => {
            axum::Json(json!({ "table": name, "key": key, "value": value })).into_response()
        }
        TableAnswer::Missing => error(
            StatusCode::NOT_FOUND,
            format!("table `{name}` has no value for key `{key}`"),
        ),
        TableAnswer::NoSuchTable => error(
            StatusCode::NOT_FOUND,
            format!("no table named `{name}` (GET /topology lists the tables)"),
        ),
        TableAnswer::BadKey(why) => error(StatusCode::BAD_REQUEST, why),
        TableAnswer::Unavailable(why) => {
            let mut res = error(StatusCode::SERVICE_UNAVAILABLE, why);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        TableAnswer::Elsewhere(owner) => {
            let location = format!(
                "{}/tables/{}/{}{}",
                owner.trim_end_matches('/'),
                encode(&name),
                encode(&key),
                at.map(|ms| format!("?at={ms}")).unwrap_or_default()
            );
            match HeaderValue::from_str(&location) {
                Ok(location) => (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                    axum::Json(json!({ "owner": owner })),
                )
                    .into_response(),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "the owner's address `{owner}` is not a valid URL (RILL_WEB_ADVERTISE)"
                    ),
                ),
            }
        }
    }
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn page() -> Response {
    static_file(
        "text/html; charset=utf-8",
        include_str!("assets/status.html"),
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "status.js" => static_file(
            "text/javascript; charset=utf-8",
            include_str!("assets/status.js"),
        ),
        "status.css" => static_file("text/css; charset=utf-8", include_str!("assets/status.css")),
        _ => not_found().await,
    }
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route; see /topology, /status, /metrics, /tables/<name>/<key>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"s3cretX", b"s3cret"));
        assert!(!same(b"S3cret", b"s3cret"));
        assert!(!same(b"", b"s3cret"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    /// Answers by key: `here` found, `gone` missing, `far/away` elsewhere, `busy` unavailable,
    /// anything else a bad key; not ready.
    struct Fake;

    impl WebBackend for Fake {
        fn ready(&self) -> std::result::Result<(), String> {
            Err("agent `a` is recovering its tables".into())
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
        fn topology(&self) -> crate::wiring::topology::Topology {
            crate::wiring::topology::Topology {
                app: "fake".into(),
                agents: Vec::new(),
                topics: Vec::new(),
                tables: Vec::new(),
            }
        }
        fn status(&self) -> crate::wiring::web::api::Status {
            crate::wiring::web::api::Status {
                app: "fake".into(),
                url: String::new(),
                ready: false,
                reason: Some("agent `a` is recovering its tables".into()),
                now_ms: 0,
                agents: Vec::new(),
            }
        }
        fn table(&self, table: &str, key: &str, _at: Option<i64>) -> TableAnswer {
            match (table, key) {
                ("t", "here") => TableAnswer::Found(json!({ "n": 1 })),
                ("t", "gone") => TableAnswer::Missing,
                ("t", "far/away") => TableAnswer::Elsewhere("http://w2:6066/".into()),
                ("t", "busy") => TableAnswer::Unavailable("rebalancing".into()),
                ("t", _) => TableAnswer::BadKey("keys of `t` are words".into()),
                _ => TableAnswer::NoSuchTable,
            }
        }
    }

    /// `GET path` on a blocking thread; the status line, headers and body as one string.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .expect("send");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        })
        .await
        .expect("client")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_answers_map_to_statuses_and_redirects() {
        let mut config = Config::new("fake");
        config.web_port = Some(0);
        let server = serve(&config, Arc::new(Fake), None).await.expect("serve");
        let addr = server.addr;
        let here = get(addr, "/tables/t/here").await;
        assert!(here.starts_with("HTTP/1.1 200"), "{here}");
        assert!(
            here.ends_with(r#"{"key":"here","table":"t","value":{"n":1}}"#),
            "{here}"
        );
        let gone = get(addr, "/tables/t/gone").await;
        assert!(
            gone.starts_with("HTTP/1.1 404") && gone.contains("has no value for key `gone`"),
            "{gone}"
        );
        let none = get(addr, "/tables/x/here").await;
        assert!(
            none.starts_with("HTTP/1.1 404") && none.contains("no table named `x`"),
            "{none}"
        );
        let bad = get(addr, "/tables/t/9").await;
        assert!(
            bad.starts_with("HTTP/1.1 400") && bad.contains("keys of `t` are words"),
            "{bad}"
        );
        let busy = get(addr, "/tables/t/busy").await;
        assert!(
            busy.starts_with("HTTP/1.1 503") && busy.contains("retry-after: 1"),
            "{busy}"
        );
        let far = get(addr, "/tables/t/far%2Faway").await;
        assert!(far.starts_with("HTTP/1.1 307"), "{far}");
        assert!(
            far.contains("location: http://w2:6066/tables/t/far%2Faway\r\n"),
            "{far}"
        );
        assert!(far.ends_with(r#"{"owner":"http://w2:6066/"}"#), "{far}");
        let ready = get(addr, "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(
            ready.ends_with(
                r#"{"reason":"agent `a` is recovering its tables","status":"not_ready"}"#
            ),
            "{ready}"
        );
        server.shutdown().await;
        assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
    }

    #[test]
    fn redirect_segments_are_percent_encoded() {
        assert_eq!(encode("/page/0"), "%2Fpage%2F0");
        assert_eq!(encode("a b~é"), "a%20b~%C3%A9");
        assert_eq!(encode("[\"k\",1]"), "%5B%22k%22%2C1%5D");
    }
}
