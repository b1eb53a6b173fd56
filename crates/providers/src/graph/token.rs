//! OAuth2 client-credentials tokens, cached per process.
//!
//! Every provider instance of a tenant and app shares one cached token (a
//! provider is opened per job; a token request per job would be wasteful
//! and, at scale, throttled by Entra). A token is refreshed before it
//! expires (its `expires_in` less a margin), or once when Graph answers 401
//! to it; concurrent callers wait for one refresh instead of each asking.

use super::{Secret, scrub};
use crate::ProviderError;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest a token is kept before its stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    token_url: String,
    client_id: String,
}

/// A token in hand: its value and which fetch it came from.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: Secret,
    pub generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct TokenSlot {
    current: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    token: Token,
    refresh_at: Instant,
}

/// The process's slot for this token endpoint (which names the tenant) and app.
pub(crate) fn slot(token_url: &str, client_id: &str) -> Arc<TokenSlot> {
    static SLOTS: OnceLock<Mutex<HashMap<Key, Arc<TokenSlot>>>> = OnceLock::new();
    let key = Key {
        token_url: token_url.to_owned(),
        client_id: client_id.to_owned(),
    };
    SLOTS
        .get_or_init(Default::default)
        .lock()
        .expect("token slots lock")
        .entry(key)
        .or_default()
        .clone()
}

/// What a token request needs.
pub(crate) struct Credentials<'a> {
    pub http: &'a reqwest::Client,
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub secret: &'a Secret,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenRefusal {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSlot {
    /// A valid token: the cached one, or a new one when it is near expiry.
    pub async fn get(&self, creds: &Credentials<'_>) -> Result<Token, ProviderError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        self.fetch_into(&mut current, creds).await
    }

    /// A new token after Graph refused `stale`; when another caller already
    /// replaced it, that newer token (one refresh per expiry, not per caller).
    pub async fn refresh(&self, stale: &Token, creds: &Credentials<'_>) -> Result<Token, ProviderError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && c.token.generation != stale.generation
        {
            return Ok(c.token.clone());
        }
        self.fetch_into(&mut current, creds).await
    }

    async fn fetch_into(
        &self,
        current: &mut Option<Cached>,
        creds: &Credentials<'_>,
    ) -> Result<Token, ProviderError> {
        let generation = current.as_ref().map_or(0, |c| c.token.generation) + 1;
        let started = Instant::now();
        let (value, expires_in) = fetch(creds).await?;
        // Short-lived tokens (tests, some clouds) keep half their life.
        let margin = REFRESH_MARGIN.min(expires_in / 2);
        let token = Token { value, generation };
        // An `expires_in` past what an Instant holds (a token endpoint's
        // "never") is as good as a year: refreshed on a 401 all the same.
        let refresh_at = started
            .checked_add(expires_in - margin)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
        *current = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }
}

/// One token request. Nothing of the secret reaches an error: Entra's
/// descriptions do not echo it, and they are scrubbed all the same.
async fn fetch(creds: &Credentials<'_>) -> Result<(Secret, Duration), ProviderError> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", creds.client_id),
        ("client_secret", creds.secret.expose()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let clean = |s: &str| scrub(s, creds.secret);
    let answer = creds
        .http
        .post(creds.token_url)
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            ProviderError::Transient(clean(&format!(
                "token request to {}: {}",
                creds.token_url,
                e.without_url()
            )))
        })?;
    let status = answer.status();
    let body = answer
        .bytes()
        .await
        .map_err(|e| ProviderError::Transient(clean(&format!("token answer: {}", e.without_url()))))?;
    if status.is_success() {
        let t: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Malformed(format!("token answer is not a token: {e}")))?;
        let expires_in = Duration::from_secs(t.expires_in.unwrap_or(3600).max(1));
        return Ok((Secret::new(t.access_token), expires_in));
    }
    let refusal: Option<TokenRefusal> = serde_json::from_slice(&body).ok();
    let said = refusal
        .map(|r| {
            format!(
                "{}: {}",
                r.error.unwrap_or_default(),
                r.error_description.unwrap_or_default()
            )
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    let said = clean(&said);
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(ProviderError::Service {
            status: status.as_u16(),
            message: format!("token endpoint: {said}"),
            retry_after: None,
        });
    }
    // 400 (invalid_client, unauthorized_client, bad tenant) and 401: the
    // credentials themselves are refused; retrying will not help.
    Err(ProviderError::AuthFailed(format!(
        "no token for client {} from {}: {said}",
        creds.client_id, creds.token_url
    )))
}
