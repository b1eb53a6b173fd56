//! One Graph request, done right: a budgeted slot, a bearer token, bounded
//! retries of 429 and 503 (after `Retry-After`, else exponential backoff
//! with jitter), one token refresh on 401, and the answer's status mapped to
//! a [`ProviderError`]. Collections are read to their last page here.

use super::budget::Budgets;
use super::token::{Credentials, Token, TokenSlot};
use super::{GraphSettings, RetryPolicy, Secret};
use crate::ProviderError;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Pages one collection may have before the read is refused as runaway (a
/// nextLink that loops would otherwise read forever).
const MAX_PAGES: usize = 10_000;

/// The process's HTTP client: one connection pool for every tenant.
pub(crate) fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client's settings are valid")
    })
}

#[derive(Debug)]
pub(crate) struct GraphClient {
    /// `OPSLEDGER_GRAPH_URL` without a trailing `/`.
    base: String,
    /// Scheme and authority of `base`: nextLinks must stay on it (they carry
    /// our bearer token).
    origin: String,
    token_url: String,
    client_id: String,
    secret: Secret,
    token: Arc<TokenSlot>,
    budgets: Arc<Budgets>,
    read_key: String,
    write_key: String,
    retry: RetryPolicy,
}

/// Whether a request spends the write budget as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl GraphClient {
    pub fn new(tenant: &str, settings: &GraphSettings, client_id: &str, secret: Secret) -> GraphClient {
        let base = settings.graph_url.trim_end_matches('/').to_owned();
        let origin = origin_of(&base);
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            settings.authority.trim_end_matches('/'),
            tenant
        );
        GraphClient {
            origin,
            token: super::token::slot(&token_url, client_id),
            token_url,
            client_id: client_id.to_owned(),
            secret,
            budgets: settings.budgets.clone(),
            // Microsoft counts per app and tenant.
            read_key: format!("graph:{client_id}:{tenant}"),
            write_key: format!("graph:{client_id}:{tenant}:write"),
            retry: settings.retry,
            base,
        }
    }

    fn creds(&self) -> Credentials<'_> {
        Credentials {
            http: http(),
            token_url: &self.token_url,
            client_id: &self.client_id,
            secret: &self.secret,
        }
    }

    /// A token for this tenant (what `check_access` proves).
    pub async fn token(&self) -> Result<Token, ProviderError> {
        self.token.get(&self.creds()).await
    }

    /// An absolute URL for a path relative to the Graph base.
    pub fn url(&self, relative: &str) -> String {
        format!("{}/{}", self.base, relative.trim_start_matches('/'))
    }

    /// A link Graph gave (a nextLink, a page token of ours) is followed only
    /// on Graph's own origin.
    pub fn check_link(&self, link: &str) -> Result<(), ProviderError> {
        if origin_of(link) == self.origin {
            Ok(())
        } else {
            Err(ProviderError::Malformed(format!(
                "next page link `{link}` is not on {}",
                self.origin
            )))
        }
    }

    pub async fn get(&self, url: &str) -> Result<Value, ProviderError> {
        self.send(Method::GET, url, None, Access::Read)
            .await
            .map(|v| v.unwrap_or(Value::Null))
    }

    /// Every item of a collection, following `@odata.nextLink` to the end.
    pub async fn get_all(&self, url: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut next = Some(url.to_owned());
        let mut pages = 0;
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ProviderError::Malformed(format!(
                    "{url}: more than {MAX_PAGES} pages"
                )));
            }
            if !seen.insert(url.clone()) {
                return Err(ProviderError::Malformed(format!(
                    "{}: `@odata.nextLink` leads back to a page already read",
                    self.shown(&url)
                )));
            }
            let (page, link) = self.page(&url).await?;
            items.extend(page);
            next = link;
        }
        Ok(items)
    }

    /// One page of a collection: its items and the next page's link.
    pub async fn page(&self, url: &str) -> Result<(Vec<Value>, Option<String>), ProviderError> {
        self.check_link(url)?;
        let body = self.get(url).await?;
        let Some(Value::Array(items)) = body.get("value").cloned() else {
            return Err(ProviderError::Malformed(format!(
                "{url}: the answer has no `value` list"
            )));
        };
        let next = match body.get("@odata.nextLink") {
            None | Some(Value::Null) => None,
            Some(Value::String(link)) => {
                self.check_link(link)?;
                if link == url {
                    // Followed, it would be read for ever.
                    return Err(ProviderError::Malformed(format!(
                        "{}: `@odata.nextLink` is the page itself",
                        self.shown(url)
                    )));
                }
                Some(link.clone())
            }
            Some(other) => {
                return Err(ProviderError::Malformed(format!(
                    "{url}: `@odata.nextLink` is not a link: {other}"
                )));
            }
        };
        Ok((items, next))
    }

    /// One request with its retries; `None` for an answer without a body (204).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        access: Access,
    ) -> Result<Option<Value>, ProviderError> {
        let what = format!("{method} {}", self.shown(url));
        let mut token = self.token().await?;
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if access == Access::Write {
                self.budgets.spend(&self.write_key, true).await?;
            }
            self.budgets.spend(&self.read_key, false).await?;
            let mut request = http()
                .request(method.clone(), url)
                .bearer_auth(token.value.expose())
                .header("Accept", "application/json");
            if let Some(b) = body {
                request = request.json(b);
            }
            let answer = match request.send().await {
                Ok(a) => a,
                Err(e) => {
                    // Connection refused or reset, timeouts: the caller's retry
                    // layer decides (a write may or may not have happened).
                    let kind = if e.is_timeout() { "timed out" } else { "no answer" };
                    return Err(ProviderError::Transient(format!(
                        "{what}: {kind}: {}",
                        e.without_url()
                    )));
                }
            };
            let status = answer.status();
            let retry_after = retry_after(answer.headers());
            tracing::debug!(request = %what, status = status.as_u16(), attempt, "graph");
            let bytes = answer.bytes().await.map_err(|e| {
                ProviderError::Transient(format!("{what}: reading the answer: {}", e.without_url()))
            })?;
            if status.is_success() {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                return serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ProviderError::Malformed(format!("{what}: the answer is not JSON: {e}")));
            }
            let said = graph_message(&bytes);
            match status {
                StatusCode::UNAUTHORIZED if !refreshed => {
                    // A token revoked or expired early: one refresh, then the
                    // same request again (not counted as an attempt).
                    refreshed = true;
                    attempt -= 1;
                    token = self.token.refresh(&token, &self.creds()).await?;
                    continue;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(ProviderError::AuthFailed(format!(
                        "{what}: 401 with a fresh token: {said}"
                    )));
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let final_error = || {
                        let message = format!("{what}: {} after {attempt} attempts: {said}", status.as_u16());
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            ProviderError::throttled(retry_after, message)
                        } else {
                            ProviderError::Service {
                                status: status.as_u16(),
                                message,
                                retry_after,
                            }
                        }
                    };
                    if attempt >= self.retry.max_attempts {
                        return Err(final_error());
                    }
                    let wait = match retry_after {
                        // An ask longer than we wait in here goes to the
                        // caller, whose retry layer decides.
                        Some(after) if after > self.retry.max_delay => return Err(final_error()),
                        Some(after) => after,
                        None => self.retry.backoff(attempt),
                    };
                    tracing::debug!(request = %what, status = status.as_u16(), ?wait, "graph asked to wait; retrying");
                    tokio::time::sleep(wait).await;
                }
                StatusCode::FORBIDDEN => return Err(ProviderError::Forbidden(format!("{what}: {said}"))),
                StatusCode::NOT_FOUND => return Err(ProviderError::NotFound(format!("{what}: {said}"))),
                _ => {
                    return Err(ProviderError::Service {
                        status: status.as_u16(),
                        message: format!("{what}: {said}"),
                        retry_after,
                    });
                }
            }
        }
    }

    /// A URL as shown in messages: relative to the base when it is under it.
    fn shown<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(self.base.as_str())
            .map(|s| s.trim_start_matches('/'))
            .unwrap_or(url)
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter in its upper half: `base · 2^(n-1)`,
    /// capped, then a random point between half of it and all of it.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }
}

/// `Retry-After` in seconds (Graph sends seconds; an HTTP date is ignored
/// and backoff applies), at most a day: more is a broken header.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(24 * 3600)))
}

/// Graph's own words from an error body (`{"error":{"code","message"}}`).
fn graph_message(bytes: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    match (
        e.and_then(|e| e.get("code")).and_then(Value::as_str),
        e.and_then(|e| e.get("message")).and_then(Value::as_str),
    ) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(m)) => m.to_owned(),
        (None, None) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() {
                "no details".to_owned()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}

/// `scheme://authority` of a URL, lower-cased.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_backoff() {
        assert_eq!(
            origin_of("https://Graph.microsoft.com/beta/x?y"),
            "https://graph.microsoft.com"
        );
        assert_ne!(
            origin_of("https://evil.test/beta"),
            origin_of("https://graph.microsoft.com/beta")
        );
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for attempt in 1..8 {
            let d = p.backoff(attempt);
            assert!(d <= Duration::from_millis(300), "{d:?}");
            assert!(d >= Duration::from_millis(50), "{d:?}");
        }
        assert_eq!(
            graph_message(br#"{"error":{"code":"Forbidden","message":"no"}}"#),
            "Forbidden: no"
        );
    }
}
