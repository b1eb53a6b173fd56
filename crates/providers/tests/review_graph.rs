//! A hostile review of the `graph:` provider against a Graph that
//! misbehaves in ways the fake does not: a nextLink that loops, an absurd
//! `Retry-After`, a page that is not JSON. A raw HTTP server on loopback
//! answers each request with what the test's function says.

use opsledger_providers::graph::RetryPolicy;
use opsledger_providers::{GraphSettings, Provider, ProviderError, ProviderSettings, Secret};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANT: &str = "contoso.onmicrosoft.com";

type Answer = (u16, Vec<(&'static str, String)>, String);

/// Serves `answer(path_and_query, base)` for every request but the token's.
async fn serve(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    serve_token(
        r#"{"access_token":"tok","token_type":"Bearer","expires_in":3600}"#,
        answer,
    )
    .await
}

/// The same, with the token endpoint answering `token`.
async fn serve_token(
    token: &'static str,
    answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let (answer, b, c) = (Arc::new(answer), base.clone(), count.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (answer, base, count) = (answer.clone(), b.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (status, headers, body) = if target.contains("/oauth2/v2.0/token") {
                        (200, vec![], token.to_owned())
                    } else {
                        count.fetch_add(1, Ordering::SeqCst);
                        answer(&target, &base)
                    };
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, count)
}

fn provider(base: &str) -> Arc<dyn Provider> {
    let s = ProviderSettings {
        graph: GraphSettings {
            client_id: Some("app".into()),
            client_secret: Some(Secret::new("secret-value")),
            authority: base.to_owned(),
            graph_url: format!("{base}/beta"),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(2),
            },
            ..GraphSettings::default()
        },
        ..ProviderSettings::default()
    };
    opsledger_providers::open(&format!("graph:{TENANT}"), "t", "t", &s).unwrap()
}

/// A Graph that answers every page with a link to the same page: a nested
/// list (a settings catalog policy's settings) must stop well before it
/// has spent thousands of the tenant's requests.
#[tokio::test]
async fn a_next_link_to_the_same_page_stops_at_once() {
    let (base, count) = serve(|target, base| {
        if target.contains("/settings") {
            let link = format!("{base}{target}");
            (
                200,
                vec![],
                format!(r#"{{"value":[{{"id":"s"}}],"@odata.nextLink":"{link}"}}"#),
            )
        } else {
            (200, vec![], r#"{"id":"p1","displayName":"p"}"#.to_owned())
        }
    })
    .await;
    let p = provider(&base);
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        p.get_policy("configurationPolicies", "p1"),
    )
    .await
    .expect("the read ends")
    .unwrap_err();
    assert!(matches!(e, ProviderError::Malformed(_)), "{e:?}");
    assert!(
        count.load(Ordering::SeqCst) < 10,
        "{} requests spent on one looping list",
        count.load(Ordering::SeqCst)
    );
}

/// The same through the pager callers use for policy lists: a page whose
/// next token is the page itself is refused, not handed back for ever.
#[tokio::test]
async fn a_policy_list_page_linking_to_itself_is_refused() {
    let (base, _) = serve(|target, base| {
        let link = format!("{base}{target}");
        (
            200,
            vec![],
            format!(r#"{{"value":[{{"id":"a","displayName":"a"}}],"@odata.nextLink":"{link}"}}"#),
        )
    })
    .await;
    let p = provider(&base);
    match p.list_page("deviceConfigurations", None).await {
        Err(e) => assert!(matches!(e, ProviderError::Malformed(_)), "{e:?}"),
        Ok(first) => assert_ne!(
            first.next.as_deref(),
            Some(format!("{base}/beta/deviceManagement/deviceConfigurations").as_str()),
            "a page that links to itself: a caller that follows `next` reads for ever"
        ),
    }
}

/// What held: a huge or negative `Retry-After`, and a page that is not JSON.
#[tokio::test]
async fn odd_answers_are_errors_with_codes() {
    let (base, _) = serve(|target, _| {
        if target.contains("deviceConfigurations") {
            (
                429,
                vec![("retry-after", "18446744073709551615".to_owned())],
                "{}".to_owned(),
            )
        } else if target.contains("deviceCompliancePolicies") {
            (429, vec![("retry-after", "-5".to_owned())], "{}".to_owned())
        } else {
            (200, vec![], "<html>not json</html>".to_owned())
        }
    })
    .await;
    let p = provider(&base);
    let e = p.list_page("deviceConfigurations", None).await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    eprintln!("huge Retry-After reaches the caller as {:?}", e.retry_after());
    let e = p.list_page("deviceCompliancePolicies", None).await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    let e = p.list_page("configurationPolicies", None).await.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed(_)), "{e:?}");
    assert!(!format!("{e}").contains("secret-value"));
}

/// A token endpoint saying its token never expires (`expires_in` at the
/// top of u64) must not crash the process: the refresh time overflowed
/// `Instant` (a panic in the worker or the API handler).
#[tokio::test]
async fn a_token_that_never_expires_does_not_crash() {
    let (base, _) = serve_token(
        r#"{"access_token":"tok","token_type":"Bearer","expires_in":18446744073709551615}"#,
        |_, _| (200, vec![], r#"{"value":[]}"#.to_owned()),
    )
    .await;
    let p = provider(&base);
    let read = tokio::spawn(async move { p.list_page("deviceConfigurations", None).await.map(|_| ()) });
    let got = read.await;
    assert!(got.is_ok(), "the read panicked: {got:?}");
    got.unwrap().unwrap();
}
