//! The HTTP edge of a node, over real sockets: slow clients cannot hold it
//! (header, idle and request timeouts, the connection cap), and every error
//! answer is the JSON envelope.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use opsledger_core::access::Role;
use opsledger_server::http::{ConnectionStats, serve_app, with_edge};
use opsledger_server::{AppState, HttpLimits, MAX_BODY_BYTES, app};
use opsledger_store::testing::{self, TestStore};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Node {
    addr: SocketAddr,
    url: String,
    ws: String,
    token: String,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _db: TestStore,
}

async fn start(limits: HttpLimits) -> Node {
    let db = testing::sqlite().await;
    let store = db.store.clone();
    let ws = store.create_workspace("edge").await.unwrap().id;
    let user = store.upsert_user("operator@edge.test", "unused").await.unwrap();
    store.set_membership(&ws, &user, Role::Operator).await.unwrap();
    let token = store.issue_token(&user, "edge").await.unwrap();
    let state = AppState {
        files: None,
        evidence_key: None,
        store,
        registry: opsledger_families::registry(Default::default()),
        wake: Arc::new(tokio::sync::Notify::new()),
        providers: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ConnectionStats::default());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_app(
        listener,
        app(state, &limits),
        limits,
        shutdown.clone(),
        stats.clone(),
    ));
    Node {
        addr,
        url: format!("http://{addr}"),
        ws,
        token,
        stats,
        shutdown,
        server,
        _db: db,
    }
}

fn limits(header_ms: u64, idle_ms: u64, request_ms: u64, max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_read_timeout: ms(header_ms),
        idle_timeout: ms(idle_ms),
        request_timeout: ms(request_ms),
        max_connections,
    }
}

/// Reads until the server closes the connection (EOF or reset), at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(ms(5)).await;
    }
}

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 response (with a `content-length`) read off a raw socket;
/// bytes past it (a next, pipelined response) stay in `buf`.
async fn read_response_buffered(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> RawResponse {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read response body");
        assert!(n > 0, "connection closed inside a response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    RawResponse {
        status,
        headers,
        body,
    }
}

/// [`read_response_buffered`] where no second response follows.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    let mut buf = Vec::new();
    let response = read_response_buffered(stream, &mut buf).await;
    assert!(
        buf.is_empty(),
        "unexpected bytes after a response: {:?}",
        String::from_utf8_lossy(&buf)
    );
    response
}

fn assert_envelope(status: u16, content_type: Option<&str>, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(content_type, Some("application/json"), "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn assert_envelope_of(response: reqwest::Response, want_status: u16, want_code: &str) -> Value {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON body");
    assert_envelope(status, content_type.as_deref(), &body, want_status, want_code);
    body
}

const HALF_HEADER: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_at_the_header_timeout_while_others_are_served() {
    let node = start(limits(500, 60_000, 30_000, 1024)).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..350 {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        if i < 300 {
            stream.write_all(HALF_HEADER).await.unwrap();
        }
        slow.push(stream);
    }
    let stats = node.stats.clone();
    wait_until("350 accepted connections", ms(2000), || stats.open() >= 350).await;

    // While they hang, the node answers promptly.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let t = Instant::now();
        let response = client
            .get(format!("{}/api/v1/health", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), r#"{"status":"ok"}"#);
        assert!(t.elapsed() < ms(250), "health took {:?}", t.elapsed());
    }
    assert!(
        node.stats.open() >= 350,
        "the slow connections were still open meanwhile"
    );

    // Every slow connection is closed by the server, at the header timeout.
    let closings: Vec<_> = slow
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(5)).await }))
        .collect();
    for closing in closings {
        closing.await.unwrap().expect("closed by the server");
        let since_connect = started.elapsed();
        assert!(
            since_connect < Duration::from_secs(3),
            "closed after {since_connect:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= ms(450),
        "closed before the header timeout: {elapsed:?}"
    );
    assert!(node.stats.timed_out() >= 350);
    drop(client);
    wait_until("no open connections", ms(2000), || stats.open() == 0).await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let node = start(limits(300, 1_200, 30_000, 1024)).await;
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 200);
    let idle = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed by the server");
    assert!(
        idle >= ms(1_000),
        "closed after {idle:?}, before the idle timeout"
    );
    assert!(idle < ms(2_500), "closed after {idle:?}");
}

#[tokio::test]
async fn a_next_request_head_gets_the_header_timeout_from_its_first_byte() {
    let node = start(limits(400, 5_000, 30_000, 1024)).await;
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    tokio::time::sleep(ms(200)).await;
    stream.write_all(HALF_HEADER).await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed by the server");
    assert!(closed >= ms(300), "closed after {closed:?}");
    assert!(
        closed < ms(2_000),
        "closed after {closed:?}, not at the header timeout"
    );
}

#[tokio::test]
async fn at_the_connection_cap_the_node_waits_for_a_connection_to_close() {
    let node = start(limits(10_000, 60_000, 30_000, 5)).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(node.addr).await.unwrap());
    }
    let stats = node.stats.clone();
    wait_until("5 accepted connections", ms(2000), || stats.open() == 5).await;

    let url = format!("{}/api/v1/health", node.url);
    let mut sixth = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    assert!(
        tokio::time::timeout(ms(400), &mut sixth).await.is_err(),
        "a 6th connection was served while 5 were held"
    );
    assert_eq!(node.stats.open(), 5);

    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(3), sixth)
        .await
        .expect("served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(node.stats.peak(), 5, "never more than the cap");
}

#[tokio::test]
async fn errors_are_the_json_envelope() {
    let node = start(HttpLimits::default()).await;
    let client = reqwest::Client::new();
    let ops = format!("{}/api/v1/workspaces/{}/operations", node.url, node.ws);

    let response = client
        .delete(format!("{}/api/v1/health", node.url))
        .send()
        .await
        .unwrap();
    let allow = response.headers().get("allow").cloned();
    assert_envelope_of(response, 405, "method_not_allowed").await;
    assert!(allow.is_some_and(|a| a.to_str().unwrap().contains("GET")));

    let response = client
        .get(format!("{}/api/v1/nope", node.url))
        .send()
        .await
        .unwrap();
    assert_envelope_of(response, 404, "not_found").await;

    // 2 MiB with a Content-Length: refused up front.
    let response = client
        .post(&ops)
        .bearer_auth(&node.token)
        .body(vec![b' '; 2 * MAX_BODY_BYTES])
        .send()
        .await
        .unwrap();
    let body = assert_envelope_of(response, 413, "body_too_large").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1048576"),
        "{body}"
    );

    // A path parameter that is not UTF-8.
    let response = client
        .get(format!("{}/api/v1/workspaces/%FF/operations", node.url))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_envelope_of(response, 400, "invalid_path").await;

    // The scheme of Authorization is case-insensitive; a wrong token is a 401 envelope.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = client
            .get(&ops)
            .header("authorization", format!("{scheme} {}", node.token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "scheme {scheme}");
    }
    let response = client
        .get(&ops)
        .header("authorization", "bearer nope")
        .send()
        .await
        .unwrap();
    assert_envelope_of(response, 401, "unauthenticated").await;
    let response = client
        .get(&ops)
        .header("authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    assert_envelope_of(response, 401, "unauthenticated").await;
}

/// Sends `head`, then `body` from a separate task (so that an early answer
/// is read while the body is still going out), and reads the answer.
async fn raw_exchange(addr: SocketAddr, head: String, body: Vec<u8>) -> RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        for chunk in body.chunks(64 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
        }
        write
    });
    let response = tokio::time::timeout(Duration::from_secs(5), read_response(&mut read))
        .await
        .expect("an answer");
    drop(writer);
    response
}

#[tokio::test]
async fn oversized_bodies_without_or_with_a_lying_content_length_are_413() {
    let node = start(HttpLimits::default()).await;
    let path = format!("/api/v1/workspaces/{}/operations", node.ws);

    // Chunked, no Content-Length: counted while read.
    let mut chunked = Vec::new();
    for _ in 0..(2 * MAX_BODY_BYTES / (64 * 1024)) {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        node.token
    );
    let response = raw_exchange(node.addr, head, chunked).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        413,
        "body_too_large",
    );

    // A Content-Length past the limit with a short body: refused at once, not after a timeout.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        node.token,
        2 * MAX_BODY_BYTES
    );
    let t = Instant::now();
    let response = raw_exchange(node.addr, head, b"{}".to_vec()).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        413,
        "body_too_large",
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn malformed_http_is_answered_with_the_envelope_too() {
    let node = start(HttpLimits::default()).await;
    let health = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n";

    // Pipelined requests: both are the service's answers, untouched.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(format!("{health}{health}").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        let response = read_response_buffered(&mut stream, &mut buf).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
    }
    assert!(buf.is_empty());

    // A header line without a colon, after a good request on the same connection.
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        400,
        "bad_request",
    );

    // A Content-Length shorter than what follows: the body is the first 2
    // bytes (a start without `type`), the rest is an unparseable next request.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/v1/workspaces/{}/operations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\n\r\n{{}}\"type\":\"inventory.sync\"}}\r\n\r\n",
                node.ws, node.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let response = read_response_buffered(&mut stream, &mut buf).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        400,
        "invalid_body",
    );
    let response = read_response_buffered(&mut stream, &mut buf).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        400,
        "bad_request",
    );

    // A header section larger than hyper buffers.
    let head = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let response = raw_exchange(node.addr, head, Vec::new()).await;
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        431,
        "headers_too_large",
    );
}

#[tokio::test]
async fn a_slow_body_is_answered_408_at_the_request_timeout() {
    let node = start(limits(5_000, 60_000, 500, 1024)).await;
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/v1/workspaces/{}/operations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"type\"",
                node.ws, node.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let t = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(3), read_response(&mut stream))
        .await
        .expect("an answer");
    assert!(t.elapsed() >= ms(400), "answered after {:?}", t.elapsed());
    assert_envelope(
        response.status,
        response.header("content-type"),
        &response.json(),
        408,
        "request_timeout",
    );
}

async fn boom() -> &'static str {
    panic!("boom")
}

/// The safety net on extractors and panics the API's routes do not reach
/// today: JSON bodies, typed queries, a panicking handler.
#[tokio::test]
async fn extractor_rejections_and_panics_are_the_json_envelope() {
    #[derive(serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }
    let probe = with_edge(
        Router::new()
            .route("/json", post(|_: axum::Json<Value>| async { "ok" }))
            .route("/query", get(|_: axum::extract::Query<Page>| async { "ok" }))
            .route("/path/{n}", get(|_: axum::extract::Path<u32>| async { "ok" }))
            .route("/panic", get(boom)),
        &HttpLimits::default(),
    );
    let call = |request: Request<Body>| {
        let probe = probe.clone();
        async move {
            let response = probe.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let body: Value = serde_json::from_slice(&body).expect("JSON");
            (status, content_type, body)
        }
    };
    let cases = [
        (
            Request::post("/json").body(Body::from("{}")).unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            Request::post("/json")
                .header("content-type", "application/json")
                .body(Body::from("{nope"))
                .unwrap(),
            400,
            "invalid_body",
        ),
        (
            Request::get("/query?limit=x").body(Body::empty()).unwrap(),
            400,
            "invalid_query",
        ),
        (
            Request::get("/path/x").body(Body::empty()).unwrap(),
            400,
            "invalid_path",
        ),
        (
            Request::get("/panic").body(Body::empty()).unwrap(),
            500,
            "internal",
        ),
    ];
    for (request, status, code) in cases {
        let (got, content_type, body) = call(request).await;
        assert_envelope(got, content_type.as_deref(), &body, status, code);
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_dropped() {
    const SIZE: usize = 64 * 1024 * 1024;
    let limits = limits(5_000, 60_000, 500, 1024);
    let big = with_edge(
        Router::new().route("/big", get(|| async { vec![b'x'; SIZE] })),
        &limits,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ConnectionStats::default());
    let shutdown = CancellationToken::new();
    let _server = tokio::spawn(serve_app(listener, big, limits, shutdown.clone(), stats.clone()));
    let _stop = shutdown.drop_guard();

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Not reading: the socket buffers fill, the server's writes stall.
    wait_until("the stalled response to time out", Duration::from_secs(5), || {
        stats.timed_out() == 1
    })
    .await;
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received < SIZE, "the whole response went out");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_or_slow_connections() {
    let node = start(limits(10_000, 60_000, 30_000, 1024)).await;
    let mut held = Vec::new();
    for i in 0..10 {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(HALF_HEADER).await.unwrap();
        }
        held.push(stream);
    }
    let stats = node.stats.clone();
    wait_until("10 accepted connections", ms(2000), || stats.open() == 10).await;
    node.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), node.server)
        .await
        .expect("serve returned promptly")
        .unwrap()
        .unwrap();
    assert_eq!(node.stats.open(), 0);
}
