//! Metrics over HTTP, for Prometheus: `GET /metrics` (the text exposition format, encoded by
//! `prometheus-client`), `GET /health` and `GET /ready` (200, or 503 with a one-line reason).
//!
//! The listener is meant for a monitoring network: it needs no credentials and serves nothing
//! but these three read-only pages. What it guarantees against whoever reaches it:
//! - at most [`MAX_CONNECTIONS`] connections at once (more are closed at once);
//! - a request's head must arrive within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD`] bytes, and
//!   a connection lives at most [`CONNECTION_LIMIT`]; bodies are never read;
//! - anything but GET (or HEAD) of the three paths is answered 405 or 404.
//!
//! What a page shows comes from its [`Pages`]: `refresh` brings the registry's gauges up to
//! date before each `/metrics` (bounded by [`REFRESH_LIMIT`]: a stuck source shows its last
//! values), `health` and `ready` say what is wrong, if anything.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A request head (request line and headers) arrives within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a connection may buffer: a request head larger than this is refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// A connection is closed after this, whatever it is doing.
pub const CONNECTION_LIMIT: Duration = Duration::from_secs(30);
/// How long `/metrics` waits for fresh values.
pub const REFRESH_LIMIT: Duration = Duration::from_secs(2);

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the pages show.
pub struct Pages {
    pub registry: Registry,
    /// Brings gauges up to date before `/metrics` is encoded.
    pub refresh: Box<dyn Fn() -> BoxFuture<()> + Send + Sync>,
    /// `Err(reason)`: `/health` answers 503 with it.
    pub health: Box<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>,
    /// `Err(reason)`: `/ready` answers 503 with it.
    pub ready: Box<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>,
}

/// Binds `addr` now (so a bad address fails the caller at once) and returns the server to
/// spawn.
pub async fn bind(addr: &str, pages: Arc<Pages>) -> std::io::Result<impl Future<Output = ()>> {
    let listener = TcpListener::bind(addr).await?;
    log::info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(serve(listener, pages))
}

async fn serve(listener: TcpListener, pages: Arc<Pages>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| page(pages.clone(), req));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
            drop(slot);
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn verdict(result: Result<(), String>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn page(
    pages: Arc<Pages>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let _ = tokio::time::timeout(REFRESH_LIMIT, (pages.refresh)()).await;
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &pages.registry) {
                Ok(()) => {
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/health" => verdict(bounded((pages.health)()).await),
        "/ready" => verdict(bounded((pages.ready)()).await),
        _ => text(
            StatusCode::NOT_FOUND,
            "/metrics, /health or /ready\n".into(),
        ),
    })
}

/// A verdict that does not come within [`REFRESH_LIMIT`] is a failure.
async fn bounded(check: BoxFuture<Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(REFRESH_LIMIT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REFRESH_LIMIT:?}")))
}
