//! The HTTP edge of a node: the accept loop with its per-connection timeouts
//! and connection cap, and the layers that make every error response the
//! JSON envelope.
//!
//! ## Why a hand-written accept loop
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no cap on
//! connections: a few hundred clients that send half a request header (or
//! nothing) hold a node for as long as they like. hyper's own
//! `http1::Builder::header_read_timeout` does not fit either: it is one timer
//! armed whenever hyper waits for a request head — at accept, and again as
//! soon as a keep-alive connection goes idle (`Conn::poll_read_head` in
//! hyper 1.x `proto/h1/conn.rs`, re-armed by `State::idle`) — so it cannot
//! tell "idle between requests" (allowed for [`HttpLimits::idle_timeout`])
//! from "slow request head" (allowed for [`HttpLimits::header_read_timeout`]);
//! with a timer set, it would also close every idle keep-alive connection
//! after its default 30 s. So hyper's timer is switched off and each
//! connection runs under a small watchdog ([`Phase`]) instead, fed by its
//! socket reads and by the request/response passing through the service.
//!
//! The same socket wrapper ([`Watched`]) replaces the one answer hyper
//! writes on its own — a bodiless `400`/`414`/`431` to a request it cannot
//! parse, which never reaches the router — by the JSON envelope.
//!
//! HTTP/1.1 only (no h2c): one request at a time per connection keeps the
//! timeout model exact; HTTP/2 belongs to a TLS-terminating proxy in front.

use crate::MAX_BODY_BYTES;
use crate::error::ApiError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// After the last response, how long (and how many bytes) a closing
/// connection keeps reading what the client still sends; see [`linger`].
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 8 * MAX_BODY_BYTES;

/// How long a client may take, and how many may be connected at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A new connection must deliver its complete first request head this
    /// long after it was accepted (sending nothing counts); a keep-alive
    /// connection likewise from the first byte of its next request. Past
    /// it the connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in progress (and no byte of
    /// a next one) is closed after this.
    pub idle_timeout: Duration,
    /// From a complete head to the response, reading the body included:
    /// past it the answer is `408 request_timeout`. While the response is
    /// written, a client that takes no byte of it for this long is dropped.
    pub request_timeout: Duration,
    /// Open connections on this node. At the cap the node stops accepting
    /// (new clients wait in the kernel's backlog) until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Counters of the accept loop (a gauge of open connections and its peak).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicU64,
    timed_out: AtomicU64,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    /// The most connections ever open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
    /// Connections closed by a header, idle or response-write timeout.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::SeqCst)
    }
    fn opened(self: &Arc<Self>) -> OpenConnection {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(open, Ordering::SeqCst);
        self.accepted.fetch_add(1, Ordering::SeqCst);
        OpenConnection(self.clone())
    }
}

/// One count in [`ConnectionStats::open`], for as long as it lives.
struct OpenConnection(Arc<ConnectionStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The layers every route goes through (outermost first): errors mapped to
/// the JSON envelope, tracing, panics caught as `500 internal`, the request
/// timeout (`408`), and the body limit of [`MAX_BODY_BYTES`] (`413`, checked
/// against `Content-Length` up front and counted while reading otherwise).
pub fn with_edge(routes: Router, limits: &HttpLimits) -> Router {
    let request_timeout = limits.request_timeout;
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::map_response(move |response: Response| {
            envelope(response, request_timeout)
        }))
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "request handler panicked");
    ApiError::internal().into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// The safety net: an error response that is not JSON (axum's extractor
/// rejections and routing, tower-http's limit and timeout) becomes the
/// envelope, its code chosen from the status (and, for a `400`, from which
/// extractor refused). Other headers (e.g. `Allow`) are kept.
async fn envelope(response: Response, request_timeout: Duration) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(MAX_BODY_BYTES),
        StatusCode::REQUEST_TIMEOUT => ApiError::request_timeout(request_timeout),
        _ => ApiError::from_plain(status, &text),
    };
    let body = serde_json::to_vec(&error.body()).expect("json");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits for
/// the connections in progress (each is bounded by `limits`).
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    stats: Arc<ConnectionStats>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    // One warning per burst: the burst ends once a tenth of the cap is free again.
    let mut at_cap = false;
    let headroom = (limits.max_connections / 10).max(1);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if at_cap && permits.available_permits() >= headroom {
                    tracing::info!("HTTP connections below the cap again");
                    at_cap = false;
                }
                permit
            }
            Err(_) => {
                if !at_cap {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "HTTP connection cap reached; not accepting until a connection closes"
                    );
                    at_cap = true;
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: wait rather than spin (as axum::serve does).
                    tracing::error!(error = %e, "accepting an HTTP connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let open = stats.opened();
        connections.spawn(connection(
            stream,
            app.clone(),
            limits.clone(),
            shutdown.clone(),
            stats.clone(),
            (open, permit),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Where a connection is, and so which timeout applies.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for (the rest of) a request head, since then: header timeout.
    Head(Instant),
    /// Between requests, since then: idle timeout.
    Idle(Instant),
    /// A request is being handled, since then: answered `408` by the
    /// request timeout layer of [`with_edge`]; only as a backstop (an app
    /// without that layer) is the connection closed at twice the timeout.
    Handling(Instant),
    /// The response is being written (until hyper has flushed all of it);
    /// the client last took bytes then: request timeout.
    Writing(Instant),
}

/// Whether what hyper writes belongs to a response of our service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exchange {
    /// No request reached the service since the last response was flushed:
    /// anything hyper writes now is its own answer to a request it could
    /// not parse.
    None,
    /// From the service call until hyper has taken the whole response body.
    Open,
    /// The body is taken; its last bytes go out by the next flush.
    BodyDone,
}

struct ConnState {
    phase: Phase,
    exchange: Exchange,
}

struct Watchdog {
    state: Mutex<ConnState>,
    changed: Notify,
}

impl Watchdog {
    fn new() -> Watchdog {
        Watchdog {
            state: Mutex::new(ConnState {
                phase: Phase::Head(Instant::now()),
                exchange: Exchange::None,
            }),
            changed: Notify::new(),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut ConnState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn phase(&self) -> Phase {
        self.update(|s| s.phase)
    }

    fn set_phase(&self, phase: Phase) {
        self.update(|s| s.phase = phase);
        self.changed.notify_one();
    }

    /// A request head reached the service.
    fn request_started(&self) {
        self.update(|s| {
            s.phase = Phase::Handling(Instant::now());
            s.exchange = Exchange::Open;
        });
        self.changed.notify_one();
    }

    /// hyper dropped the response body: its bytes are all buffered.
    fn response_buffered(&self) {
        self.update(|s| {
            if s.exchange == Exchange::Open {
                s.exchange = Exchange::BodyDone;
            }
        });
    }

    /// The client took response bytes: the write timeout counts from now.
    fn wrote(&self) {
        self.update(|s| {
            if let Phase::Writing(_) = s.phase {
                s.phase = Phase::Writing(Instant::now());
            }
        });
    }

    /// hyper flushed everything it had buffered: after a finished response,
    /// the connection is idle.
    fn flushed(&self) {
        let idle = self.update(|s| {
            let done = s.exchange == Exchange::BodyDone;
            if done {
                s.exchange = Exchange::None;
                s.phase = Phase::Idle(Instant::now());
            }
            done
        });
        if idle {
            self.changed.notify_one();
        }
    }

    fn exchange(&self) -> Exchange {
        self.update(|s| s.exchange)
    }

    /// No request in progress and nothing of the last response left to send.
    fn between_requests(&self) -> bool {
        self.update(|s| matches!(s.phase, Phase::Head(_) | Phase::Idle(_)) && s.exchange == Exchange::None)
    }

    /// Bytes arrived: on an idle connection, a next request has begun.
    fn bytes_read(&self) {
        let began = self.update(|s| {
            let idle = matches!(s.phase, Phase::Idle(_));
            if idle {
                s.phase = Phase::Head(Instant::now());
            }
            idle
        });
        if began {
            self.changed.notify_one();
        }
    }

    /// When the connection is closed unless something happens first, and why.
    fn deadline(&self, limits: &HttpLimits) -> (Instant, &'static str) {
        match self.phase() {
            Phase::Head(since) => (since + limits.header_read_timeout, "header read"),
            Phase::Idle(since) => (since + limits.idle_timeout, "idle"),
            Phase::Handling(since) => (since + 2 * limits.request_timeout, "request (backstop)"),
            Phase::Writing(since) => (since + limits.request_timeout, "response write"),
        }
    }
}

/// The socket, telling the watchdog when bytes arrive and when hyper has
/// flushed; and replacing hyper's own bodiless answer to an unparseable
/// request (`400`, `414`, `431`, written without ever calling the service)
/// by the JSON envelope.
struct Watched {
    stream: TcpStream,
    watchdog: Arc<Watchdog>,
    /// The envelope being written instead of hyper's answer, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// `Some` when this write is (the rest of) hyper's own error answer.
    fn replace(&mut self, cx: &mut Context<'_>, head: &[u8], len: usize) -> Option<Poll<io::Result<usize>>> {
        if self.replacement.is_none() {
            if self.watchdog.exchange() != Exchange::None {
                return None;
            }
            let status = head
                .strip_prefix(b"HTTP/1.1 ")
                .or_else(|| head.strip_prefix(b"HTTP/1.0 "))
                .and_then(|rest| StatusCode::from_bytes(rest.get(..3)?).ok())?;
            self.replacement = Some((parse_error_response(status), 0));
        }
        let (bytes, written) = self.replacement.as_mut().expect("set above");
        while *written < bytes.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => *written += n,
                other => return Some(other),
            }
        }
        // hyper's bytes count as written; the connection closes after them.
        Some(Poll::Ready(Ok(len)))
    }
}

/// The envelope for a request hyper refused before routing (malformed
/// request line or header, URI or header section too long).
fn parse_error_response(status: StatusCode) -> Vec<u8> {
    let message = match status {
        StatusCode::URI_TOO_LONG => "the request URI is too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "the request header section is too large",
        _ => "malformed HTTP request",
    };
    let error = ApiError::new(status, crate::error::code_for_status(status), message);
    let body = serde_json::to_vec(&error.body()).expect("json");
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watchdog.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(done) = self.replace(cx, buf, buf.len()) {
            return done;
        }
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.watchdog.wrote();
        }
        result
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let head = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        let len = bufs.iter().map(|b| b.len()).sum();
        if let Some(done) = self.replace(cx, head, len) {
            return done;
        }
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.watchdog.wrote();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper writes all it buffered before flushing the socket.
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        if matches!(result, Poll::Ready(Ok(()))) {
            self.watchdog.flushed();
        }
        result
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that tells the watchdog when hyper has taken all of it
/// (the connection is idle once those bytes are flushed).
struct WatchedBody {
    body: Body,
    watchdog: Arc<Watchdog>,
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.watchdog.response_buffered();
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<WatchedBody>, Infallible>> + Send>>;

/// One connection, until the client closes it, a timeout closes it, or the
/// node shuts down. `_held` keeps its place in the gauge and under the cap.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    stats: Arc<ConnectionStats>,
    _held: (OpenConnection, OwnedSemaphorePermit),
) {
    let watchdog = Arc::new(Watchdog::new());
    let io = TokioIo::new(Watched {
        stream,
        watchdog: watchdog.clone(),
        replacement: None,
    });
    let service = {
        let watchdog = watchdog.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| -> ResponseFuture {
            watchdog.request_started();
            let watchdog = watchdog.clone();
            let app = app.clone();
            Box::pin(async move {
                let response = app.oneshot(request.map(Body::new)).await?;
                watchdog.set_phase(Phase::Writing(Instant::now()));
                Ok(response.map(|body| WatchedBody { body, watchdog }))
            })
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        // Off: the watchdog keeps the header and idle timeouts (module doc).
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut draining = false;
    let ended_by_http = loop {
        let (deadline, _) = watchdog.deadline(&limits);
        let changed = watchdog.changed.notified();
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break true;
            }
            () = changed => {}
            () = tokio::time::sleep_until(deadline) => {
                let (at, what) = watchdog.deadline(&limits);
                if at <= Instant::now() {
                    stats.timed_out.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(timeout = what, "closing HTTP connection: timed out");
                    break false;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                if watchdog.between_requests() {
                    break false;
                }
                // Finish the request in progress, then close.
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if ended_by_http {
        linger(conn.into_parts().io.into_inner().stream).await;
    }
}

/// Lingering close (nginx's `lingering_close`): after the last response,
/// send FIN, then read and discard what the client still sends until it
/// closes, for at most [`LINGER_TIME`] / [`LINGER_MAX_BYTES`]. Closing a
/// socket with unread request bytes (a `413` or `401` answered before the
/// body was read) makes the kernel send RST, and a client still sending its
/// body would then lose the response it was about to read.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut discarded = 0;
    while discarded <= LINGER_MAX_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}
