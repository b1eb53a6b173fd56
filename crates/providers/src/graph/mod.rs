//! `graph:TENANT_ID` — a tenant read and written through Microsoft Graph.
//!
//! Tokens come from OAuth2 client credentials ([`token`]); every request
//! spends the tenant's shared budget and is retried on 429/503
//! ([`client`]); every collection, nested ones included, is read to its
//! last `@odata.nextLink`. A type whose pages did not all arrive is an
//! error, never fewer items.

pub mod budget;
mod client;
mod token;

use crate::{Directory, DirectoryEntry, DirectoryKind, Page, Policy, PolicyType, Provider, ProviderError};
use async_trait::async_trait;
use budget::{BudgetLimits, Budgets, LocalBudget, RequestBudget};
use client::{Access, GraphClient};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/beta";

/// A secret (the client secret, an access token). Its `Debug` shows `***`,
/// it has no `Display` and no `Serialize`: it can reach a log line, an
/// error or a JSON answer only through [`Secret::expose`], which only the
/// token request and the `Authorization` header call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `text` with every occurrence of the secret replaced by `***`.
pub(crate) fn scrub(text: &str, secret: &Secret) -> String {
    if secret.0.is_empty() {
        text.to_owned()
    } else {
        text.replace(&secret.0, "***")
    }
}

/// Retries of 429 and 503 inside one call, before the caller's own retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one request (the first included).
    pub max_attempts: u32,
    /// First backoff when Graph gave no `Retry-After`; doubles per attempt.
    pub base_delay: Duration,
    /// Backoff cap, and the longest `Retry-After` waited for in here.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// How `graph:` tenants are reached (`OPSLEDGER_GRAPH_*`, read by the cli).
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Token endpoints are `{authority}/{TENANT_ID}/oauth2/v2.0/token`.
    pub authority: String,
    /// Every collection is relative to it.
    pub graph_url: String,
    /// This node's slices of the shared request budget.
    pub budgets: Arc<Budgets>,
    pub retry: RetryPolicy,
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            client_id: None,
            client_secret: None,
            authority: DEFAULT_AUTHORITY.to_owned(),
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
            budgets: Arc::new(Budgets::new(
                Arc::new(LocalBudget::default()),
                BudgetLimits::default(),
            )),
            retry: RetryPolicy::default(),
        }
    }
}

impl GraphSettings {
    /// The same settings spending `source` (shared by every node) with
    /// `limits`; a fresh local slice state (one per node).
    pub fn with_budget(mut self, source: Arc<dyn RequestBudget>, limits: BudgetLimits) -> GraphSettings {
        self.budgets = Arc::new(Budgets::new(source, limits));
        self
    }
}

/// Types whose policies have no assignments in Graph.
fn has_assignments(key: &str) -> bool {
    !matches!(
        key,
        "conditionalAccessPolicies" | "namedLocations" | "assignmentFilters"
    )
}

/// The body key of a type's `/assign` action (Graph names it per type).
fn assign_key(key: &str) -> &'static str {
    match key {
        "deviceManagementScripts" => "deviceManagementScriptAssignments",
        "deviceHealthScripts" => "deviceHealthScriptAssignments",
        "deviceEnrollmentConfigurations" => "enrollmentConfigurationAssignments",
        _ => "assignments",
    }
}

/// Read-only and server-set properties a create or update must not send.
const SERVER_SET: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "modifiedDateTime",
    "version",
    "assignments",
    "settingCount",
    "isAssigned",
];

/// A body Graph accepts for a create or update: no id, server-set
/// properties or annotations. `@odata.type` stays: Graph needs it to know
/// which derived type to create (a Windows 10 profile, an IP named location).
fn writable(body: &Value) -> Value {
    fn clean(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    // Bindings (`definition@odata.bind`) say which object a
                    // value is for: Graph needs them, like `@odata.type`.
                    .filter(|(k, _)| {
                        *k == "@odata.type" || k.ends_with("@odata.bind") || !k.contains("@odata.")
                    })
                    .map(|(k, v)| (k.clone(), clean(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            other => other.clone(),
        }
    }
    let mut out = clean(body);
    if let Value::Object(m) = &mut out {
        for k in SERVER_SET {
            m.remove(*k);
        }
    }
    out
}

/// A definition value of an Administrative Template as Graph creates it:
/// no ids on it or its presentation values.
/// A definition (or presentation) read with `$expand` becomes the binding
/// Graph wants on a write: `definition: {"id": X}` → `definition@odata.bind`.
fn bind_expanded(v: &mut Value, member: &str, url_of: impl Fn(&str) -> String) {
    let Value::Object(m) = v else { return };
    let bind = format!("{member}@odata.bind");
    if let Some(expanded) = m.remove(member)
        && !m.contains_key(&bind)
        && let Some(id) = expanded.get("id").and_then(Value::as_str)
    {
        m.insert(bind, Value::String(url_of(id)));
    }
}

fn writable_definition_value(client: &client::GraphClient, dv: &Value) -> Value {
    let mut dv = dv.clone();
    let definition = dv
        .get("definition")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    bind_expanded(&mut dv, "definition", |id| {
        client.url(&format!("deviceManagement/groupPolicyDefinitions('{id}')"))
    });
    let mut dv = writable(&dv);
    if let Some(Value::Array(pvs)) = dv.get_mut("presentationValues") {
        for pv in pvs.iter_mut() {
            if let Some(def) = &definition {
                bind_expanded(pv, "presentation", |id| {
                    client.url(&format!(
                        "deviceManagement/groupPolicyDefinitions('{def}')/presentations('{id}')"
                    ))
                });
            }
            *pv = writable(pv);
        }
    }
    dv
}

/// A mail nickname Graph accepts for a group name: ASCII letters and digits.
fn mail_nickname(display_name: &str) -> String {
    let nick: String = display_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(56)
        .collect();
    if nick.is_empty() {
        format!("group{:08x}", rand::random::<u32>())
    } else {
        nick
    }
}

fn display_name(v: &Value) -> String {
    v.get("displayName")
        .or_else(|| v.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn policy_of(v: Value, what: &str) -> Result<Policy, ProviderError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Malformed(format!("{what}: an item without an `id`")))?
        .to_owned();
    Ok(Policy {
        display_name: display_name(&v),
        id,
        payload: v,
    })
}

/// The provider of one `graph:TENANT_ID` tenant.
#[derive(Debug)]
pub struct GraphProvider {
    client: GraphClient,
}

impl GraphProvider {
    /// `tenant` is the spec's argument: a tenant id (GUID) or a verified domain.
    pub fn open(tenant: &str, settings: &GraphSettings) -> Result<GraphProvider, ProviderError> {
        if tenant.is_empty()
            || tenant.len() > 253
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ProviderError::Unavailable(format!(
                "`{tenant}` is not a tenant id or domain"
            )));
        }
        let client_id = settings
            .client_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::Unavailable("OPSLEDGER_GRAPH_CLIENT_ID is not set".into()))?;
        let secret = settings
            .client_secret
            .clone()
            .filter(|s| !s.expose().is_empty())
            .ok_or_else(|| {
                ProviderError::Unavailable(
                    "neither OPSLEDGER_GRAPH_CLIENT_SECRET nor OPSLEDGER_GRAPH_CLIENT_SECRET_FILE is set"
                        .into(),
                )
            })?;
        Ok(GraphProvider {
            client: GraphClient::new(tenant, settings, client_id, secret),
        })
    }

    fn path_of(policy_type: &str) -> Result<&'static str, ProviderError> {
        opsledger_core::policy_types::lookup(policy_type)
            .map(|t| t.graph_path)
            .ok_or_else(|| ProviderError::UnknownType(policy_type.to_owned()))
    }

    fn item_url(&self, policy_type: &str, id: &str) -> Result<String, ProviderError> {
        Ok(self
            .client
            .url(&format!("{}/{}", Self::path_of(policy_type)?, encode(id))))
    }

    async fn read_item(&self, policy_type: &str, id: &str) -> Result<Policy, ProviderError> {
        let url = self.item_url(policy_type, id)?;
        let v = self.client.get(&url).await?;
        policy_of(v, policy_type)
    }
}

/// An id as one path segment (ids are GUIDs or `[A-Za-z0-9_.-]`; anything
/// else is percent-encoded rather than allowed to change the path).
fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Provider for GraphProvider {
    /// A token is the proof: consent and the secret hold. Nothing else is
    /// read (a type the app may not read is that type's failure later).
    async fn check_access(&self) -> Result<(), ProviderError> {
        self.client.token().await.map(|_| ())
    }

    async fn policy_types(&self) -> Result<Vec<PolicyType>, ProviderError> {
        Ok(opsledger_core::policy_types::POLICY_TYPES
            .iter()
            .map(PolicyType::from_info)
            .collect())
    }

    async fn list_page(&self, policy_type: &str, page: Option<&str>) -> Result<Page, ProviderError> {
        let url = match page {
            // The page token is the nextLink Graph gave; checked to be on Graph.
            Some(link) => link.to_owned(),
            None => self.client.url(Self::path_of(policy_type)?),
        };
        let (items, next) = self.client.page(&url).await?;
        let items = items
            .into_iter()
            .map(|v| policy_of(v, policy_type))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next,
            failures: Vec::new(),
        })
    }

    async fn get_policy(&self, policy_type: &str, id: &str) -> Result<Policy, ProviderError> {
        let mut policy = self.read_item(policy_type, id).await?;
        let base = self.item_url(policy_type, id)?;
        let Value::Object(payload) = &mut policy.payload else {
            return Err(ProviderError::Malformed(format!(
                "{policy_type}/{id} is not an object"
            )));
        };
        match policy_type {
            "configurationPolicies" | "intents" => {
                let settings = self.client.get_all(&format!("{base}/settings")).await?;
                payload.insert("settings".into(), Value::Array(settings));
            }
            "groupPolicyConfigurations" => {
                // Expanded, so each value says which setting it is for.
                let mut values = self
                    .client
                    .get_all(&format!("{base}/definitionValues?$expand=definition"))
                    .await?;
                for dv in values.iter_mut() {
                    let dv_id = dv
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ProviderError::Malformed(format!(
                                "{policy_type}/{id}: a definition value without an id"
                            ))
                        })?
                        .to_owned();
                    let pvs = self
                        .client
                        .get_all(&format!(
                            "{base}/definitionValues/{}/presentationValues?$expand=presentation",
                            encode(&dv_id)
                        ))
                        .await?;
                    if let Value::Object(m) = dv {
                        m.insert("presentationValues".into(), Value::Array(pvs));
                    }
                }
                payload.insert("definitionValues".into(), Value::Array(values));
            }
            _ => {}
        }
        if has_assignments(policy_type) {
            let assignments = self.client.get_all(&format!("{base}/assignments")).await?;
            payload.insert("assignments".into(), Value::Array(assignments));
        }
        // Annotations of the nested reads Graph put on the item itself.
        payload.retain(|k, _| k == "@odata.type" || !k.contains("@odata."));
        Ok(policy)
    }

    async fn directory(&self) -> Result<Directory, ProviderError> {
        let mut dir = Directory::default();
        let sources = [
            (DirectoryKind::Group, "groups?$select=id,displayName"),
            (
                DirectoryKind::NamedLocation,
                "identity/conditionalAccess/namedLocations",
            ),
            (
                DirectoryKind::AssignmentFilter,
                "deviceManagement/assignmentFilters",
            ),
        ];
        for (kind, path) in sources {
            for v in self.client.get_all(&self.client.url(path)).await? {
                let Some(id) = v.get("id").and_then(Value::as_str) else {
                    return Err(ProviderError::Malformed(format!(
                        "{path}: an object without an `id`"
                    )));
                };
                dir.insert(DirectoryEntry {
                    kind,
                    id: id.to_owned(),
                    display_name: display_name(&v),
                });
            }
        }
        Ok(dir)
    }

    async fn create_directory_object(
        &self,
        kind: DirectoryKind,
        display_name: &str,
    ) -> Result<DirectoryEntry, ProviderError> {
        if kind != DirectoryKind::Group {
            return Err(ProviderError::UnsupportedType(format!(
                "a {} is a policy type: create it as a policy",
                kind.as_str()
            )));
        }
        let body = json!({
            "displayName": display_name,
            "mailEnabled": false,
            "securityEnabled": true,
            "mailNickname": mail_nickname(display_name),
        });
        let created = self
            .client
            .send(
                Method::POST,
                &self.client.url("groups"),
                Some(&body),
                Access::Write,
            )
            .await?
            .ok_or_else(|| ProviderError::Malformed("POST groups: no body".into()))?;
        let id = created
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Malformed("POST groups: the created group has no id".into()))?;
        Ok(DirectoryEntry {
            kind,
            id: id.to_owned(),
            display_name: self::display_name(&created),
        })
    }

    async fn create_policy(&self, policy_type: &str, body: &Value) -> Result<Policy, ProviderError> {
        let path = Self::path_of(policy_type)?;
        let mut create = writable(body);
        // Administrative Templates take their definition values one by one
        // once the policy exists.
        let definition_values = match (policy_type, &mut create) {
            ("groupPolicyConfigurations", Value::Object(m)) => match m.remove("definitionValues") {
                Some(Value::Array(dvs)) => dvs,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let created = self
            .client
            .send(Method::POST, &self.client.url(path), Some(&create), Access::Write)
            .await?
            .ok_or_else(|| ProviderError::Malformed(format!("POST {path}: no body")))?;
        let policy = policy_of(created, policy_type)?;
        let base = self.item_url(policy_type, &policy.id)?;
        for dv in &definition_values {
            self.client
                .send(
                    Method::POST,
                    &format!("{base}/definitionValues"),
                    Some(&writable_definition_value(&self.client, dv)),
                    Access::Write,
                )
                .await?;
        }
        Ok(policy)
    }

    async fn update_policy(
        &self,
        policy_type: &str,
        id: &str,
        body: &Value,
    ) -> Result<Policy, ProviderError> {
        let url = self.item_url(policy_type, id)?;
        let mut update = writable(body);
        match policy_type {
            // A settings catalog policy is replaced whole, settings included
            // (Graph's PUT); PATCH would leave its settings as they were.
            "configurationPolicies" => {
                self.client
                    .send(Method::PUT, &url, Some(&update), Access::Write)
                    .await?;
            }
            "groupPolicyConfigurations" => {
                let wanted = match &mut update {
                    Value::Object(m) => m.remove("definitionValues"),
                    _ => None,
                };
                self.client
                    .send(Method::PATCH, &url, Some(&update), Access::Write)
                    .await?;
                if let Some(Value::Array(wanted)) = wanted {
                    // Definition values are replaced through Graph's action:
                    // the current ones deleted, the body's added, in one call.
                    let current = self.client.get_all(&format!("{url}/definitionValues")).await?;
                    let deleted: Vec<Value> = current.iter().filter_map(|dv| dv.get("id").cloned()).collect();
                    let added: Vec<Value> = wanted
                        .iter()
                        .map(|dv| writable_definition_value(&self.client, dv))
                        .collect();
                    let action = json!({"added": added, "updated": [], "deletedIds": deleted});
                    self.client
                        .send(
                            Method::POST,
                            &format!("{url}/updateDefinitionValues"),
                            Some(&action),
                            Access::Write,
                        )
                        .await?;
                }
            }
            _ => {
                self.client
                    .send(Method::PATCH, &url, Some(&update), Access::Write)
                    .await?;
            }
        }
        self.read_item(policy_type, id).await
    }

    async fn assign(&self, policy_type: &str, id: &str, assignments: &[Value]) -> Result<(), ProviderError> {
        Self::path_of(policy_type)?;
        if !has_assignments(policy_type) {
            return Err(ProviderError::UnsupportedType(format!(
                "{policy_type} has no assignments in Graph"
            )));
        }
        let url = self.item_url(policy_type, id)?;
        let assignments: Vec<Value> = assignments.iter().map(writable).collect();
        if policy_type == "windowsAutopilotDeploymentProfiles" {
            // Autopilot profiles have no `/assign` action: the current
            // assignments are deleted and the new ones created one by one.
            for old in self.client.get_all(&format!("{url}/assignments")).await? {
                if let Some(old_id) = old.get("id").and_then(Value::as_str) {
                    self.client
                        .send(
                            Method::DELETE,
                            &format!("{url}/assignments/{}", encode(old_id)),
                            None,
                            Access::Write,
                        )
                        .await?;
                }
            }
            for a in &assignments {
                self.client
                    .send(
                        Method::POST,
                        &format!("{url}/assignments"),
                        Some(a),
                        Access::Write,
                    )
                    .await?;
            }
            return Ok(());
        }
        let mut body = Map::new();
        body.insert(assign_key(policy_type).into(), Value::Array(assignments));
        self.client
            .send(
                Method::POST,
                &format!("{url}/assign"),
                Some(&Value::Object(body)),
                Access::Write,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_and_bodies_are_writable() {
        let s = Secret::new("hunter2-secret");
        assert_eq!(format!("{s:?}"), "***");
        let settings = GraphSettings {
            client_secret: Some(s.clone()),
            client_id: Some("app".into()),
            ..GraphSettings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(
            scrub("said hunter2-secret twice hunter2-secret", &s),
            "said *** twice ***"
        );
        let body = json!({
            "id": "x", "@odata.type": "#microsoft.graph.ipNamedLocation",
            "@odata.context": "c", "createdDateTime": "t", "displayName": "n",
            "assignments": [], "settings@odata.context": "s",
            "ranges": [{"@odata.type": "#r", "@odata.etag": "e", "v": 1}]
        });
        assert_eq!(
            writable(&body),
            json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": "n",
                   "ranges": [{"@odata.type": "#r", "v": 1}]})
        );
        assert_eq!(mail_nickname("All Staff (EU) – Ω"), "AllStaffEU");
        assert!(mail_nickname("Ω").starts_with("group"));
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn open_wants_credentials_and_a_tenant() {
        let mut s = GraphSettings::default();
        assert!(
            matches!(GraphProvider::open("t", &s), Err(ProviderError::Unavailable(m)) if m.contains("CLIENT_ID"))
        );
        s.client_id = Some("app".into());
        assert!(
            matches!(GraphProvider::open("t", &s), Err(ProviderError::Unavailable(m)) if m.contains("SECRET"))
        );
        s.client_secret = Some(Secret::new("x"));
        assert!(GraphProvider::open("contoso.onmicrosoft.com", &s).is_ok());
        assert!(matches!(
            GraphProvider::open("a/b", &s),
            Err(ProviderError::Unavailable(_))
        ));
    }
}
