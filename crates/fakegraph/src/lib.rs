//! A fake Microsoft Graph on loopback, for tests and development.
//!
//! It serves tenants from an in-memory model (plain JSON: policies with
//! their `settings`, `definitionValues`/`presentationValues` and
//! `assignments` embedded; groups), the way Graph does: a client-credentials
//! token endpoint per tenant, the Intune collections under `/beta`, the
//! tenant known from the bearer token, every list paged (25 by default,
//! `$top` ignored) with absolute `@odata.nextLink`s. On cue it throttles
//! (429 with `Retry-After`, 503 without), fails pages, expires tokens and
//! refuses types; it counts requests per tenant and fixed window, and
//! records every write in order.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One tenant's data.
#[derive(Debug, Clone, Default)]
pub struct Tenant {
    /// Graph collection path (`deviceManagement/configurationPolicies`) →
    /// its objects, nested lists embedded.
    pub collections: BTreeMap<String, Vec<Value>>,
    pub groups: Vec<Value>,
    /// Collections answered 403 (a permission the app lacks for them).
    pub forbidden: Vec<String>,
}

impl Tenant {
    pub fn with(mut self, collection: &str, items: Vec<Value>) -> Tenant {
        self.collections
            .entry(collection.to_owned())
            .or_default()
            .extend(items);
        self
    }

    pub fn with_groups(mut self, groups: Vec<Value>) -> Tenant {
        self.groups.extend(groups);
        self
    }
}

/// What the fake serves and how.
#[derive(Debug, Clone)]
pub struct Model {
    pub tenants: BTreeMap<String, Tenant>,
    /// The one app the token endpoint accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Items per page of every list.
    pub page_size: usize,
    /// The window requests are counted in (aligned to the Unix epoch, like
    /// the store's budget windows).
    pub window: Duration,
    /// `expires_in` of issued tokens.
    pub token_expires_in: Duration,
    /// Tokens older than this are refused with 401 (whatever `expires_in` said).
    pub token_ttl: Option<Duration>,
    /// A refused secret is quoted in the token error's description: a
    /// hostile token endpoint, to prove clients never repeat what it says
    /// with the secret in it.
    pub echo_secret_in_errors: bool,
}

impl Model {
    pub fn new(client_id: &str, client_secret: &str) -> Model {
        Model {
            tenants: BTreeMap::new(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            page_size: 25,
            window: Duration::from_secs(20),
            token_expires_in: Duration::from_secs(3600),
            token_ttl: None,
            echo_secret_in_errors: false,
        }
    }

    pub fn tenant(mut self, id: &str, tenant: Tenant) -> Model {
        self.tenants.insert(id.to_owned(), tenant);
        self
    }
}

/// A failure served on cue.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Requests whose path and query (after `/beta/`, decoded) contain this.
    pub matching: String,
    pub status: u16,
    /// `Retry-After` in seconds, if any.
    pub retry_after: Option<u64>,
    /// How many matching requests fail; `None`: every one.
    pub times: Option<u32>,
}

impl Fault {
    /// 429 with `Retry-After`, `times` times.
    pub fn throttle(matching: &str, retry_after_s: u64, times: u32) -> Fault {
        Fault {
            matching: matching.to_owned(),
            status: 429,
            retry_after: Some(retry_after_s),
            times: Some(times),
        }
    }

    /// 503 without `Retry-After` (what Conditional Access does), `times` times.
    pub fn unavailable(matching: &str, times: u32) -> Fault {
        Fault {
            matching: matching.to_owned(),
            status: 503,
            retry_after: None,
            times: Some(times),
        }
    }

    /// A status every time.
    pub fn always(matching: &str, status: u16) -> Fault {
        Fault {
            matching: matching.to_owned(),
            status,
            retry_after: None,
            times: None,
        }
    }
}

/// A write the fake accepted, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub tenant: String,
    pub method: String,
    /// Path after `/beta/`.
    pub path: String,
}

#[derive(Debug)]
struct Inner {
    model: Model,
    base: String,
    tokens: HashMap<String, (String, Instant)>,
    token_requests: HashMap<String, u32>,
    /// (tenant, window index) → requests.
    windows: HashMap<(String, u64), u32>,
    faults: Vec<Fault>,
    writes: Vec<Write>,
    next_id: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake Graph; stops when dropped.
#[derive(Debug)]
pub struct FakeGraph {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGraph {
    /// Serves `model` on a free loopback port.
    pub async fn start(model: Model) -> std::io::Result<FakeGraph> {
        FakeGraph::serve(model, "127.0.0.1:0").await
    }

    /// Serves `model` on `listen`.
    pub async fn serve(model: Model, listen: &str) -> std::io::Result<FakeGraph> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner {
            model,
            base: format!("http://{addr}/beta"),
            tokens: HashMap::new(),
            token_requests: HashMap::new(),
            windows: HashMap::new(),
            faults: Vec::new(),
            writes: Vec::new(),
            next_id: 0,
        }));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .fallback(graph)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGraph { addr, inner, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `OPSLEDGER_GRAPH_AUTHORITY` should be.
    pub fn authority(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `OPSLEDGER_GRAPH_URL` should be.
    pub fn graph_url(&self) -> String {
        format!("http://{}/beta", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake graph lock")
    }

    pub fn add_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Tokens older than `ttl` are refused from now on.
    pub fn set_token_ttl(&self, ttl: Option<Duration>) {
        self.lock().model.token_ttl = ttl;
    }

    /// Token requests for `tenant` so far (refused ones included).
    pub fn token_requests(&self, tenant: &str) -> u32 {
        self.lock().token_requests.get(tenant).copied().unwrap_or(0)
    }

    /// Graph requests for `tenant` so far (answered or refused).
    pub fn requests(&self, tenant: &str) -> u32 {
        self.lock()
            .windows
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The most requests `tenant` sent in any one window.
    pub fn max_requests_per_window(&self, tenant: &str) -> u32 {
        self.lock()
            .windows
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// Every write accepted, in the order it was served.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// A tenant's objects of a collection as they are now.
    pub fn objects(&self, tenant: &str, collection: &str) -> Vec<Value> {
        let inner = self.lock();
        let Some(t) = inner.model.tenants.get(tenant) else {
            return Vec::new();
        };
        if collection == "groups" {
            return t.groups.clone();
        }
        t.collections.get(collection).cloned().unwrap_or_default()
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn token(State(inner): State<Shared>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url_decode_form(&body);
    let mut inner = inner.lock().expect("fake graph lock");
    *inner.token_requests.entry(tenant.clone()).or_default() += 1;
    if !inner.model.tenants.contains_key(&tenant) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request",
                "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")})),
        )
            .into_response();
    }
    let id_ok = form.get("client_id") == Some(&inner.model.client_id);
    let secret = form.get("client_secret").cloned().unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("https://graph.microsoft.com/.default")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": "grant_type or scope"})),
        )
            .into_response();
    }
    if !id_ok || secret != inner.model.client_secret {
        let said = if inner.model.echo_secret_in_errors {
            format!("AADSTS7000215: Invalid client secret provided: '{secret}'.")
        } else {
            "AADSTS7000215: Invalid client secret provided.".to_owned()
        };
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": said})),
        )
            .into_response();
    }
    inner.next_id += 1;
    let value = format!("fake-token-{tenant}-{}-{}", inner.next_id, now_ms());
    inner.tokens.insert(value.clone(), (tenant, Instant::now()));
    let expires_in = inner.model.token_expires_in.as_secs();
    axum::Json(json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": value}))
        .into_response()
}

/// `application/x-www-form-urlencoded` into a map (enough for a token request).
fn url_decode_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lists embedded in an object that Graph serves at paths of their own.
const NESTED: &[&str] = &["settings", "assignments", "definitionValues"];

fn without_nested(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for k in NESTED {
            m.remove(*k);
        }
        m.remove("presentationValues");
    }
    v
}

async fn graph(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().expect("fake graph lock");
    let Some(rest) = uri.path().strip_prefix("/beta/") else {
        return error(StatusCode::NOT_FOUND, "BadRequest", "not a Graph path");
    };
    let path = percent_decode(rest);
    let query = uri.query().map(percent_decode).unwrap_or_default();
    let bearer = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let Some((tenant, issued)) = inner.tokens.get(&bearer).cloned() else {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty or invalid.",
        );
    };
    // Every request with a token counts, whatever it is answered: Graph's
    // throttling counts them all.
    let window = u64::try_from(inner.model.window.as_millis().max(1)).unwrap_or(u64::MAX);
    *inner
        .windows
        .entry((tenant.clone(), now_ms() / window))
        .or_default() += 1;
    if inner.model.token_ttl.is_some_and(|ttl| issued.elapsed() > ttl) {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        );
    }
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    if let Some(f) = inner
        .faults
        .iter_mut()
        .find(|f| target.contains(&f.matching) && f.times != Some(0))
    {
        if let Some(n) = f.times.as_mut() {
            *n -= 1;
        }
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = error(status, "FakeFault", "served on cue");
        if let Some(s) = f.retry_after {
            r.headers_mut()
                .insert("retry-after", s.to_string().parse().expect("a number"));
        }
        return r;
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let inner = &mut *inner;
    serve(inner, &tenant, &method, &path, &query, body)
}

/// Where a path points in a tenant.
fn split_collection<'a>(tenant: &Tenant, path: &'a str) -> Option<(String, Vec<&'a str>)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let known = |c: &str| {
        c == "groups"
            || tenant.collections.contains_key(c)
            || opsledger_core::policy_types::POLICY_TYPES
                .iter()
                .any(|t| t.graph_path == c)
    };
    // The longest known prefix: `identity/conditionalAccess/policies` has three segments.
    (1..=segments.len().min(3)).rev().find_map(|n| {
        let c = segments[..n].join("/");
        known(&c).then(|| (c, segments[n..].to_vec()))
    })
}

fn serve(
    inner: &mut Inner,
    tenant_id: &str,
    method: &Method,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> Response {
    let page_size = inner.model.page_size.max(1);
    let base = inner.base.clone();
    inner.next_id += 1;
    let new_id = format!("00000000-0000-4000-8000-{:012}", inner.next_id);
    let Some(tenant) = inner.model.tenants.get_mut(tenant_id) else {
        return error(StatusCode::NOT_FOUND, "TenantNotFound", tenant_id);
    };
    let Some((collection, rest)) = split_collection(tenant, path) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Resource not found for the segment '{path}'."),
        );
    };
    if tenant.forbidden.contains(&collection) {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Application is not authorized to perform this operation.",
        );
    }
    let list_page = |items: Vec<Value>| -> Response {
        let skip: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("$skiptoken="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let select: Option<Vec<&str>> = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("$select="))
            .map(|s| s.split(',').collect());
        let page: Vec<Value> = items
            .iter()
            .skip(skip)
            .take(page_size)
            .map(|v| match (&select, v) {
                (Some(fields), Value::Object(m)) => Value::Object(
                    m.iter()
                        .filter(|(k, _)| fields.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => without_nested(v),
            })
            .collect();
        let mut answer = json!({"@odata.context": format!("{base}/$metadata#{path}"), "value": page});
        if skip + page_size < items.len() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("$skiptoken="))
                .collect();
            let mut q = kept.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            answer["@odata.nextLink"] = json!(format!("{base}/{path}?{q}$skiptoken={}", skip + page_size));
        }
        axum::Json(answer).into_response()
    };
    let items: &mut Vec<Value> = if collection == "groups" {
        &mut tenant.groups
    } else {
        tenant.collections.entry(collection.clone()).or_default()
    };
    let is_write = *method != Method::GET;
    let record = Write {
        tenant: tenant_id.to_owned(),
        method: method.to_string(),
        path: path.to_owned(),
    };
    let find = |items: &mut Vec<Value>, id: &str| -> Option<usize> {
        items
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(id))
    };
    let response = match (method.clone(), rest.as_slice()) {
        (Method::GET, []) => return list_page(items.clone()),
        (Method::POST, []) => {
            let Some(Value::Object(mut m)) = body else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "a JSON object is required");
            };
            if m.contains_key("id") {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "id is read-only");
            }
            m.insert("id".into(), json!(new_id));
            m.insert("createdDateTime".into(), json!("2026-01-01T00:00:00Z"));
            let v = Value::Object(m);
            items.push(v.clone());
            (StatusCode::CREATED, axum::Json(without_nested(&v))).into_response()
        }
        (m, [id, tail @ ..]) => {
            let Some(i) = find(items, id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    &format!("{collection}/{id} not found"),
                );
            };
            let item = &mut items[i];
            match (m, tail) {
                (Method::GET, []) => return axum::Json(without_nested(item)).into_response(),
                (Method::PATCH, []) | (Method::PUT, []) => {
                    let Some(Value::Object(patch)) = body else {
                        return error(StatusCode::BAD_REQUEST, "BadRequest", "a JSON object is required");
                    };
                    let obj = item.as_object_mut().expect("objects only");
                    if *method == Method::PUT {
                        // A replacement keeps what the server owns.
                        let keep: Map<String, Value> = obj
                            .iter()
                            .filter(|(k, _)| matches!(k.as_str(), "id" | "createdDateTime" | "assignments"))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        *obj = keep;
                    }
                    for (k, v) in patch {
                        obj.insert(k, v);
                    }
                    StatusCode::NO_CONTENT.into_response()
                }
                (Method::GET, [nested]) if NESTED.contains(nested) => {
                    return list_page(list_of(item, nested));
                }
                (Method::GET, ["definitionValues", dv, "presentationValues"]) => {
                    let dvs = list_of(item, "definitionValues");
                    let Some(dv) = dvs
                        .iter()
                        .find(|v| v.get("id").and_then(Value::as_str) == Some(*dv))
                    else {
                        return error(
                            StatusCode::NOT_FOUND,
                            "ResourceNotFound",
                            "definition value not found",
                        );
                    };
                    return list_page(list_of(dv, "presentationValues"));
                }
                (Method::POST, ["assign"]) => {
                    let given = body.as_ref().and_then(Value::as_object).and_then(|m| {
                        m.iter()
                            .find(|(k, _)| k.ends_with("ssignments"))
                            .map(|(_, v)| v.clone())
                    });
                    let Some(Value::Array(list)) = given else {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "an assignments list is required",
                        );
                    };
                    let list: Vec<Value> = list
                        .into_iter()
                        .enumerate()
                        .map(|(n, mut a)| {
                            a["id"] = json!(format!("{id}_{n}"));
                            a
                        })
                        .collect();
                    item["assignments"] = Value::Array(list);
                    StatusCode::NO_CONTENT.into_response()
                }
                (Method::POST, [nested @ ("definitionValues" | "assignments")]) => {
                    let Some(Value::Object(mut m)) = body else {
                        return error(StatusCode::BAD_REQUEST, "BadRequest", "a JSON object is required");
                    };
                    m.insert("id".into(), json!(new_id));
                    let v = Value::Object(m);
                    push(item, nested, v.clone());
                    (StatusCode::CREATED, axum::Json(v)).into_response()
                }
                (Method::DELETE, ["assignments", aid]) => {
                    if let Some(Value::Array(list)) = item.get_mut("assignments") {
                        list.retain(|a| a.get("id").and_then(Value::as_str) != Some(*aid));
                    }
                    StatusCode::NO_CONTENT.into_response()
                }
                (Method::POST, ["updateDefinitionValues"]) => {
                    let b = body.unwrap_or(Value::Null);
                    let deleted: Vec<Value> = b
                        .get("deletedIds")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let mut dvs = list_of(item, "definitionValues");
                    dvs.retain(|dv| !deleted.contains(dv.get("id").unwrap_or(&Value::Null)));
                    for (n, mut dv) in b
                        .get("added")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                    {
                        dv["id"] = json!(format!("{new_id}-{n}"));
                        dvs.push(dv);
                    }
                    item["definitionValues"] = Value::Array(dvs);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("{method} {path} is not served"),
                    );
                }
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("{method} {path} is not served"),
            );
        }
    };
    if is_write {
        inner.writes.push(record);
    }
    response
}

fn list_of(v: &Value, key: &str) -> Vec<Value> {
    v.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}

fn push(v: &mut Value, key: &str, item: Value) {
    if let Value::Object(m) = v {
        match m
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(item),
            other => *other = Value::Array(vec![item]),
        }
    }
}
