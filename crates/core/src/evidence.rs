//! Evidence snapshots (`evidence.snapshot.generate`), the pure parts: the
//! items a snapshot holds, how each is hashed, the message a snapshot is
//! signed over, signing and verification, and the reconciliation decision.
//!
//! The signing key never lives in the database (`OPSLEDGER_EVIDENCE_KEY` or
//! `OPSLEDGER_EVIDENCE_KEY_FILE`, the same on every node), so whoever can
//! edit the database cannot alter an item and recompute the proof: the item
//! hashes are recomputed from the payloads at verification (an edited
//! payload is caught even when its stored hash was edited to match), and the
//! HMAC over the snapshot's id, workspace, tenant, time and every item's key
//! and hash in order cannot be recomputed without the key (another
//! snapshot's items and signature name another id).

use crate::normalize::{canonical_json, sha256_hex};
use crate::reconcile::{AdapterResult, Verdict};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Fewest key bytes accepted (a 256-bit HMAC key).
pub const MIN_KEY_BYTES: usize = 32;
/// Most key bytes accepted.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the evidence key must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; it holds {0}")]
    Length(usize),
}

/// The secret evidence snapshots are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct EvidenceKey(Vec<u8>);

impl EvidenceKey {
    /// The key's bytes (as read from the environment or its file, surrounding
    /// whitespace trimmed by the caller).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<EvidenceKey, KeyError> {
        let bytes = bytes.into();
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(KeyError::Length(bytes.len()));
        }
        Ok(EvidenceKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for EvidenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvidenceKey(..)")
    }
}

// ------------------------------------------------------------------ items

/// Most items one snapshot holds: a tenant has a few dozen evidence facts
/// plus one per Conditional Access policy; past this the run refuses to
/// plan rather than write an unbounded snapshot.
pub const MAX_ITEMS: usize = 5_000;
/// Longest item key (`conditional_access/<id>` with a Graph id is far shorter).
pub const MAX_ITEM_KEY: usize = 300;
/// Largest canonical payload of one item.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Longest text copied from the database into an item (a policy's name).
pub const MAX_TEXT: usize = 400;

/// Types whose policies have no assignments (Conditional Access is targeted
/// by its conditions; named locations and filters are what others refer
/// to): they get no assignment coverage item.
pub const UNASSIGNED_TYPES: &[&str] = &["conditionalAccessPolicies", "namedLocations", "assignmentFilters"];
/// The Conditional Access policy type.
pub const CONDITIONAL_ACCESS: &str = "conditionalAccessPolicies";

/// Where an item's fact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Inventory,
    Backup,
    BaselineCompare,
    ConditionalAccess,
    Assignments,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Inventory => "inventory",
            Source::Backup => "backup",
            Source::BaselineCompare => "baseline_compare",
            Source::ConditionalAccess => "conditional_access",
            Source::Assignments => "assignments",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "inventory" => Source::Inventory,
            "backup" => Source::Backup,
            "baseline_compare" => Source::BaselineCompare,
            "conditional_access" => Source::ConditionalAccess,
            "assignments" => Source::Assignments,
            _ => return None,
        })
    }
}

/// One fact of a snapshot: a stable key (the run's unit key), its source
/// and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub source: Source,
    pub payload: Value,
}

/// SHA-256 (hex) of the canonical JSON of `{"key", "source", "payload"}`:
/// the key and source are hashed with the payload, so moving a payload
/// under another key or source changes the hash too.
pub fn item_sha256(key: &str, source: Source, payload: &Value) -> String {
    let whole = json!({"key": key, "source": source.as_str(), "payload": payload});
    sha256_hex(canonical_json(&whole).as_bytes())
}

impl Item {
    pub fn sha256(&self) -> String {
        item_sha256(&self.key, self.source, &self.payload)
    }
}

/// Why a set of items cannot be a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemsError {
    #[error("the evidence holds {0} items, more than the {MAX_ITEMS} a snapshot may hold")]
    TooMany(usize),
    #[error("evidence item key `{0}` is empty, too long or not printable")]
    BadKey(String),
    #[error("evidence item key `{0}` appears twice")]
    Duplicate(String),
    #[error("evidence item `{key}` is {bytes} bytes, more than {MAX_PAYLOAD_BYTES}")]
    TooLarge { key: String, bytes: usize },
}

/// Checks the bounds every snapshot keeps: at most [`MAX_ITEMS`], keys
/// unique, printable and at most [`MAX_ITEM_KEY`] bytes, payloads at most
/// [`MAX_PAYLOAD_BYTES`].
pub fn check_items(items: &[Item]) -> Result<(), ItemsError> {
    if items.len() > MAX_ITEMS {
        return Err(ItemsError::TooMany(items.len()));
    }
    let mut seen = BTreeSet::new();
    for i in items {
        if i.key.is_empty() || i.key.len() > MAX_ITEM_KEY || i.key.chars().any(char::is_control) {
            return Err(ItemsError::BadKey(i.key.chars().take(64).collect()));
        }
        if !seen.insert(i.key.as_str()) {
            return Err(ItemsError::Duplicate(i.key.clone()));
        }
        let bytes = canonical_json(&i.payload).len();
        if bytes > MAX_PAYLOAD_BYTES {
            return Err(ItemsError::TooLarge {
                key: i.key.clone(),
                bytes,
            });
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ sources

/// What the inventory holds of one policy type of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryType {
    pub policy_type: String,
    pub items: u64,
    /// The newest inventory sync that read the type whole, if any.
    pub read_by_run_id: Option<String>,
    /// When an item of the type was last seen (ms since the Unix epoch).
    pub last_seen_at: Option<i64>,
}

/// The tenant's newest completed inventory sync and what it says of each
/// type it attempted (`covered`, `partial`, `failed`, `blocked`, `skipped`):
/// a type read whole with no item leaves no inventory row to say so.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryRun {
    pub run_id: String,
    pub completed_at: Option<i64>,
    pub coverage: BTreeMap<String, String>,
}

/// A backup set, as evidence of backup recency and completeness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFact {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub complete: bool,
    pub items: u64,
}

/// A recorded baseline compare of the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareFact {
    pub run_id: String,
    pub recorded_at: i64,
    pub findings: u64,
    /// As the compare recorded it ([`crate::baseline::drift_found`]):
    /// `None` when not every type was compared whole.
    pub drift_found: Option<bool>,
    pub baseline_snapshot_id: Option<String>,
    pub backup_set_id: Option<String>,
}

/// A Conditional Access policy of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPolicy {
    pub external_id: String,
    pub display_name: String,
    /// `enabled`, `disabled`, `enabledForReportingButNotEnforced`; `None`
    /// when the stored payload does not say.
    pub state: Option<String>,
}

/// Whether a stored policy is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Assigned,
    Unassigned,
    /// The stored payload carries no `assignments` (a list read without them).
    Unknown,
}

/// What a policy's payload says of its assignments.
pub fn assignment_of(payload: &Value) -> Assignment {
    match payload.get("assignments").and_then(Value::as_array) {
        Some(a) if a.is_empty() => Assignment::Unassigned,
        Some(_) => Assignment::Assigned,
        None => Assignment::Unknown,
    }
}

/// A Conditional Access policy's `state`, if its payload says.
pub fn ca_state(payload: &Value) -> Option<String> {
    payload
        .get("state")
        .and_then(Value::as_str)
        .map(|s| clip(s).to_owned())
}

/// Assignment coverage of one policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AssignmentTally {
    pub policies: u64,
    pub assigned: u64,
    pub unassigned: u64,
    pub unknown: u64,
}

impl AssignmentTally {
    pub fn add(&mut self, a: Assignment) {
        self.policies += 1;
        match a {
            Assignment::Assigned => self.assigned += 1,
            Assignment::Unassigned => self.unassigned += 1,
            Assignment::Unknown => self.unknown += 1,
        }
    }
}

/// Everything a snapshot is made from, as read from the database.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sources {
    /// Per policy type present in the inventory (known types absent here
    /// still get an item: zero items, never read).
    pub inventory: Vec<InventoryType>,
    pub latest_inventory_sync: Option<InventoryRun>,
    pub latest_backup: Option<BackupFact>,
    pub latest_complete_backup: Option<BackupFact>,
    pub latest_compare: Option<CompareFact>,
    pub conditional_access: Vec<CaPolicy>,
    /// Per policy type of the inventory.
    pub assignments: BTreeMap<String, AssignmentTally>,
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn backup_json(b: &Option<BackupFact>, missing: &str) -> Value {
    match b {
        Some(b) => json!({
            "present": true, "backup_set_id": b.id, "name": clip(&b.name),
            "created_at": b.created_at, "complete": b.complete, "items": b.items,
        }),
        None => json!({"present": false, "status": missing}),
    }
}

/// The items of a snapshot, in their signed order: inventory coverage per
/// type (every known type, then any other the inventory holds), backup
/// recency and completeness, baseline compare status, Conditional Access
/// (a summary, then each policy with its state) and assignment coverage
/// per assignable type. A tenant with nothing yet still yields every
/// summary item, each saying what is missing — never an empty snapshot.
pub fn items_of(s: &Sources) -> Result<Vec<Item>, ItemsError> {
    let mut items = Vec::new();
    let stored: BTreeMap<&str, &InventoryType> =
        s.inventory.iter().map(|t| (t.policy_type.as_str(), t)).collect();
    let mut types: Vec<&str> = crate::policy_types::POLICY_TYPES.iter().map(|t| t.key).collect();
    let mut others: Vec<&str> = stored.keys().copied().filter(|k| !types.contains(k)).collect();
    others.sort_unstable();
    types.extend(others);
    let sync = s.latest_inventory_sync.as_ref();
    for t in &types {
        let inv = stored.get(t);
        let status = sync.and_then(|r| r.coverage.get(*t)).map(|c| clip(c));
        // Read whole: an item says which sync read its type, or the latest
        // sync covered the type (an empty type leaves no item to say so).
        let read_by = inv.and_then(|i| i.read_by_run_id.clone()).or_else(|| {
            matches!(status, Some("covered" | "partial"))
                .then(|| sync.map(|r| r.run_id.clone()))
                .flatten()
        });
        items.push(Item {
            key: format!("inventory/{t}"),
            source: Source::Inventory,
            payload: json!({
                "policy_type": t,
                "items": inv.map_or(0, |i| i.items),
                "read_by_inventory_run": read_by.is_some(),
                "read_by_run_id": read_by,
                "last_seen_at": inv.and_then(|i| i.last_seen_at),
                "latest_sync_status": status,
            }),
        });
    }
    items.push(Item {
        key: "inventory/latest_sync".into(),
        source: Source::Inventory,
        payload: match sync {
            Some(r) => json!({
                "present": true, "run_id": r.run_id, "completed_at": r.completed_at,
                "types": r.coverage.len(),
                "covered": r.coverage.values().filter(|c| c.as_str() == "covered").count(),
            }),
            None => json!({"present": false, "status": "never_synced"}),
        },
    });
    items.push(Item {
        key: "backup/latest".into(),
        source: Source::Backup,
        payload: backup_json(&s.latest_backup, "no_backup"),
    });
    items.push(Item {
        key: "backup/latest_complete".into(),
        source: Source::Backup,
        payload: backup_json(&s.latest_complete_backup, "no_complete_backup"),
    });
    items.push(Item {
        key: "baseline_compare/latest".into(),
        source: Source::BaselineCompare,
        payload: match &s.latest_compare {
            Some(c) => json!({
                "present": true, "run_id": c.run_id, "recorded_at": c.recorded_at,
                "findings": c.findings, "drift_found": c.drift_found,
                "baseline_snapshot_id": c.baseline_snapshot_id, "backup_set_id": c.backup_set_id,
            }),
            None => json!({"present": false, "status": "never_compared"}),
        },
    });
    let mut ca: Vec<&CaPolicy> = s.conditional_access.iter().collect();
    ca.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &ca {
        *by_state
            .entry(p.state.as_deref().unwrap_or("unknown"))
            .or_default() += 1;
    }
    let ca_read = stored
        .get(CONDITIONAL_ACCESS)
        .is_some_and(|i| i.read_by_run_id.is_some());
    items.push(Item {
        key: "conditional_access/summary".into(),
        source: Source::ConditionalAccess,
        payload: json!({
            "policies": ca.len(), "by_state": by_state, "read_by_inventory_run": ca_read,
            "status": if ca.is_empty() { "no_policies" } else { "policies" },
        }),
    });
    for p in ca {
        items.push(Item {
            key: format!("conditional_access/policy/{}", p.external_id),
            source: Source::ConditionalAccess,
            payload: json!({"external_id": p.external_id, "name": clip(&p.display_name), "state": p.state}),
        });
    }
    for t in types.iter().filter(|t| !UNASSIGNED_TYPES.contains(t)) {
        let a = s.assignments.get(*t).copied().unwrap_or_default();
        items.push(Item {
            key: format!("assignments/{t}"),
            source: Source::Assignments,
            payload: json!({
                "policy_type": t, "policies": a.policies, "assigned": a.assigned,
                "unassigned": a.unassigned, "unknown": a.unknown,
            }),
        });
    }
    check_items(&items)?;
    Ok(items)
}

// ------------------------------------------------------------------ signing

/// Domain tag of the signed message (a new layout gets a new tag).
const MESSAGE_TAG: &[u8] = b"opsledger.evidence_snapshot.v1";

/// The signature of a snapshot over `items` as planned (their hashes
/// computed from the content read from the sources, in memory): stored
/// with the plan, it is what the seal must reproduce from the stored items,
/// so content altered in the database between plan and seal is never
/// signed ([`sign`] over [`signing_message`]).
pub fn plan_signature(key: &EvidenceKey, head: Signed<'_>, items: &[Item]) -> String {
    let hashes: Vec<String> = items.iter().map(Item::sha256).collect();
    sign(
        key,
        &signing_message(
            head,
            items
                .iter()
                .zip(&hashes)
                .map(|(i, h)| (i.key.as_str(), h.as_str())),
        ),
    )
}

/// What a snapshot's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub snapshot_id: &'a str,
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
    /// ms since the Unix epoch.
    pub generated_at: i64,
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// The signed message: the tag, then the snapshot's id, workspace, tenant
/// and time, the item count, and each item's key and SHA-256 in order —
/// every field length-prefixed, so no two different snapshots (a key
/// ending where another begins, items moved between positions) share one.
pub fn signing_message<'a>(s: Signed<'_>, items: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let items: Vec<(&str, &str)> = items.into_iter().collect();
    let mut out = Vec::with_capacity(128 + items.len() * 128);
    push_field(&mut out, MESSAGE_TAG);
    push_field(&mut out, s.snapshot_id.as_bytes());
    push_field(&mut out, s.workspace_id.as_bytes());
    push_field(&mut out, s.tenant_id.as_bytes());
    out.extend_from_slice(&s.generated_at.to_be_bytes());
    out.extend_from_slice(&(items.len() as u64).to_be_bytes());
    for (key, sha) in items {
        push_field(&mut out, key.as_bytes());
        push_field(&mut out, sha.as_bytes());
    }
    out
}

fn mac(key: &EvidenceKey) -> Hmac<sha2::Sha256> {
    // HMAC takes a key of any length; ours is 32..=1024 bytes.
    <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length")
}

/// HMAC-SHA256 of `message` under `key`, hex.
pub fn sign(key: &EvidenceKey, message: &[u8]) -> String {
    let mut m = mac(key);
    m.update(message);
    hex::encode(m.finalize().into_bytes())
}

/// Whether `signature` (hex) is `message`'s under `key`, compared in
/// constant time (a timing side channel must not leak a valid signature).
pub fn signature_holds(key: &EvidenceKey, message: &[u8], signature: &str) -> bool {
    let Ok(bytes) = hex::decode(signature) else {
        return false;
    };
    let mut m = mac(key);
    m.update(message);
    m.verify_slice(&bytes).is_ok()
}

// ------------------------------------------------------------------ verification

/// A snapshot as stored, for verification.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub generated_at: i64,
    /// How many items were planned into it.
    pub item_count: u64,
    pub signature: Option<String>,
    /// In their stored order.
    pub items: Vec<StoredItem>,
}

/// An item as stored: `sha256` is `None` until its unit recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub key: String,
    pub source: String,
    /// `None` when the stored text is not JSON.
    pub payload: Option<Value>,
    pub sha256: Option<String>,
}

/// Why a snapshot does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    #[error("{recorded} of its {planned} items are recorded: the snapshot is incomplete")]
    Incomplete { recorded: u64, planned: u64 },
    #[error("the snapshot was never signed")]
    Unsigned,
    #[error("item `{key}` does not match its recorded hash: it was altered")]
    ItemAltered { key: String },
    #[error("the signature does not hold over the stored snapshot and items")]
    SignatureMismatch,
}

impl VerifyFailure {
    /// A stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyFailure::Incomplete { .. } => "snapshot_incomplete",
            VerifyFailure::Unsigned => "snapshot_unsigned",
            VerifyFailure::ItemAltered { .. } => "item_altered",
            VerifyFailure::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// The SHA-256 an item's stored content hashes to, or `None` when its
/// source or payload is not one a snapshot writes.
pub fn content_sha256(item: &StoredItem) -> Option<String> {
    Some(item_sha256(
        &item.key,
        Source::parse(&item.source)?,
        item.payload.as_ref()?,
    ))
}

/// Verifies a stored snapshot under `key`: complete (every planned item
/// recorded), signed, each item's content still hashing to its recorded
/// SHA-256, and the signature holding over the message rebuilt from the
/// hashes **recomputed** from the content — so an item altered together
/// with its stored hash fails on the signature.
pub fn verify(key: &EvidenceKey, s: &StoredSnapshot) -> Result<(), VerifyFailure> {
    let recorded = s.items.iter().filter(|i| i.sha256.is_some()).count() as u64;
    if recorded != s.item_count || s.items.len() as u64 != s.item_count {
        return Err(VerifyFailure::Incomplete {
            recorded,
            planned: s.item_count,
        });
    }
    let Some(signature) = s.signature.as_deref() else {
        return Err(VerifyFailure::Unsigned);
    };
    let mut hashes = Vec::with_capacity(s.items.len());
    for i in &s.items {
        match content_sha256(i) {
            Some(h) if Some(&h) == i.sha256.as_ref() => hashes.push(h),
            _ => return Err(VerifyFailure::ItemAltered { key: i.key.clone() }),
        }
    }
    let message = signing_message(
        Signed {
            snapshot_id: &s.id,
            workspace_id: &s.workspace_id,
            tenant_id: &s.tenant_id,
            generated_at: s.generated_at,
        },
        s.items
            .iter()
            .zip(&hashes)
            .map(|(i, h)| (i.key.as_str(), h.as_str())),
    );
    if signature_holds(key, &message, signature) {
        Ok(())
    } else {
        Err(VerifyFailure::SignatureMismatch)
    }
}

// ------------------------------------------------------------------ reconciliation

/// The run a stale `evidence.snapshot.generate` is reconciled for.
#[derive(Debug, Clone, Copy)]
pub struct RunScope<'a> {
    pub run_id: &'a str,
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
}

/// A snapshot that claims the run: linked to it (`created_by_run_id`) or
/// named by its `context.evidence_snapshot.id`.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotProof {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub created_by_run_id: String,
    pub item_count: u64,
    /// [`verify`] of the snapshot as stored.
    pub verified: Result<(), VerifyFailure>,
}

/// Reconciles a stale `evidence.snapshot.generate` (OPERATIONS.md §8): the
/// one snapshot linked to this run, of its workspace and tenant, with every
/// item recorded and its signature verifying → succeeded (all its items
/// done). Anything else never succeeds: another scope's or another run's
/// snapshot, two candidates, an incomplete, unsigned or altered snapshot →
/// failed with the reason; no snapshot → `stale_no_proof`.
pub fn reconcile(run: RunScope<'_>, candidates: &[SnapshotProof]) -> AdapterResult {
    if let Some(s) = candidates
        .iter()
        .find(|s| s.workspace_id != run.workspace_id || s.tenant_id != run.tenant_id)
    {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_wrong_scope",
            format!(
                "evidence snapshot {} claiming this run is of another tenant",
                s.id
            ),
        );
    }
    let ids: BTreeSet<&str> = candidates.iter().map(|s| s.id.as_str()).collect();
    if ids.len() > 1 {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_ambiguous",
            format!("{} evidence snapshots claim this run; none is trusted", ids.len()),
        );
    }
    if let Some(s) = candidates.iter().find(|s| s.created_by_run_id != run.run_id) {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_not_linked",
            format!(
                "evidence snapshot {} named by this run was generated by run {}",
                s.id, s.created_by_run_id
            ),
        );
    }
    let Some(s) = candidates.first() else {
        return AdapterResult::stale_no_proof("This evidence snapshot");
    };
    let artifact = json!({"kind": "evidence_snapshot", "id": s.id, "items": s.item_count});
    match &s.verified {
        Ok(()) => AdapterResult::new(
            Verdict::Succeeded,
            "snapshot_verified",
            format!(
                "evidence snapshot {} holds all {} items and its signature verifies",
                s.id, s.item_count
            ),
        )
        .with_units_succeeded(s.item_count)
        .with_artifact(artifact),
        Err(f) => AdapterResult::new(
            Verdict::Failed,
            f.code(),
            format!("evidence snapshot {} proves nothing: {f}", s.id),
        )
        .with_artifact(artifact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_and_a_key_never_prints() {
        assert_eq!(EvidenceKey::new(vec![1; 31]), Err(KeyError::Length(31)));
        let k = EvidenceKey::new(vec![7; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "EvidenceKey(..)");
    }

    fn key(b: u8) -> EvidenceKey {
        EvidenceKey::new(vec![b; 32]).unwrap()
    }

    fn sources() -> Sources {
        let mut assignments = BTreeMap::new();
        let mut t = AssignmentTally::default();
        t.add(Assignment::Assigned);
        t.add(Assignment::Unassigned);
        t.add(Assignment::Unknown);
        assignments.insert("deviceConfigurations".to_owned(), t);
        Sources {
            inventory: vec![
                InventoryType {
                    policy_type: "deviceConfigurations".into(),
                    items: 3,
                    read_by_run_id: Some("r1".into()),
                    last_seen_at: Some(5),
                },
                InventoryType {
                    policy_type: "zzCustom".into(),
                    items: 1,
                    read_by_run_id: None,
                    last_seen_at: Some(6),
                },
            ],
            latest_inventory_sync: None,
            latest_backup: Some(BackupFact {
                id: "b2".into(),
                name: "nightly".into(),
                created_at: 9,
                complete: false,
                items: 4,
            }),
            latest_complete_backup: None,
            latest_compare: None,
            conditional_access: vec![
                CaPolicy {
                    external_id: "ca-2".into(),
                    display_name: "Block legacy".into(),
                    state: Some("enabled".into()),
                },
                CaPolicy {
                    external_id: "ca-1".into(),
                    display_name: "MFA".into(),
                    state: None,
                },
            ],
            assignments,
        }
    }

    /// A stored, signed snapshot of `items` under `k`.
    fn stored(k: &EvidenceKey, id: &str, items: &[Item]) -> StoredSnapshot {
        let mut s = StoredSnapshot {
            id: id.into(),
            workspace_id: "ws".into(),
            tenant_id: "t1".into(),
            generated_at: 1_700_000_000_000,
            item_count: items.len() as u64,
            signature: None,
            items: items
                .iter()
                .map(|i| StoredItem {
                    key: i.key.clone(),
                    source: i.source.as_str().into(),
                    payload: Some(i.payload.clone()),
                    sha256: Some(i.sha256()),
                })
                .collect(),
        };
        let hashes: Vec<String> = items.iter().map(Item::sha256).collect();
        let msg = signing_message(
            Signed {
                snapshot_id: &s.id,
                workspace_id: &s.workspace_id,
                tenant_id: &s.tenant_id,
                generated_at: s.generated_at,
            },
            items
                .iter()
                .zip(&hashes)
                .map(|(i, h)| (i.key.as_str(), h.as_str())),
        );
        s.signature = Some(sign(k, &msg));
        s
    }

    #[test]
    fn every_source_yields_items_in_a_stable_order_even_for_an_empty_tenant() {
        let empty = items_of(&Sources::default()).unwrap();
        let known = crate::policy_types::POLICY_TYPES.len();
        let assignable = crate::policy_types::POLICY_TYPES
            .iter()
            .filter(|t| !UNASSIGNED_TYPES.contains(&t.key))
            .count();
        // inventory per type and its latest sync, two backup items, one
        // compare, the CA summary, assignments per type.
        assert_eq!(empty.len(), known + 1 + 2 + 1 + 1 + assignable);
        let by_key: BTreeMap<&str, &Item> = empty.iter().map(|i| (i.key.as_str(), i)).collect();
        assert_eq!(by_key["backup/latest"].payload["status"], "no_backup");
        assert_eq!(by_key["backup/latest_complete"].payload["present"], false);
        assert_eq!(
            by_key["baseline_compare/latest"].payload["status"],
            "never_compared"
        );
        assert_eq!(
            by_key["conditional_access/summary"].payload["status"],
            "no_policies"
        );
        assert_eq!(
            by_key["inventory/deviceConfigurations"].payload["read_by_inventory_run"],
            false
        );
        assert_eq!(by_key["inventory/latest_sync"].payload["status"], "never_synced");

        let full = items_of(&sources()).unwrap();
        assert_eq!(full, items_of(&sources()).unwrap(), "deterministic");
        let keys: Vec<&str> = full.iter().map(|i| i.key.as_str()).collect();
        let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert!(
            at("inventory/zzCustom") < at("backup/latest"),
            "unknown types after the known ones"
        );
        assert!(at("conditional_access/policy/ca-1") < at("conditional_access/policy/ca-2"));
        let inv = &full[at("inventory/deviceConfigurations")].payload;
        assert_eq!(
            (inv["items"].as_u64(), inv["read_by_inventory_run"].as_bool()),
            (Some(3), Some(true))
        );
        let ca = &full[at("conditional_access/summary")].payload;
        assert_eq!(ca["by_state"], json!({"enabled": 1, "unknown": 1}));
        let a = &full[at("assignments/deviceConfigurations")].payload;
        assert_eq!(
            (
                a["policies"].as_u64(),
                a["assigned"].as_u64(),
                a["unknown"].as_u64()
            ),
            (Some(3), Some(1), Some(1))
        );
        assert!(!keys.contains(&"assignments/conditionalAccessPolicies"));
        assert_eq!(full[at("backup/latest")].payload["complete"], false);
        // A type the latest sync covered with no item is read; one it failed is not.
        let mut s = sources();
        s.latest_inventory_sync = Some(InventoryRun {
            run_id: "sync".into(),
            completed_at: Some(7),
            coverage: [
                ("intents".to_owned(), "covered".to_owned()),
                ("namedLocations".to_owned(), "failed".to_owned()),
            ]
            .into(),
        });
        let with_sync = items_of(&s).unwrap();
        let get = |k: &str| &with_sync.iter().find(|i| i.key == k).unwrap().payload;
        assert_eq!(get("inventory/intents")["read_by_run_id"], "sync");
        assert_eq!(get("inventory/intents")["latest_sync_status"], "covered");
        assert_eq!(get("inventory/namedLocations")["read_by_inventory_run"], false);
        assert_eq!(get("inventory/namedLocations")["latest_sync_status"], "failed");
        assert_eq!(get("inventory/deviceConfigurations")["read_by_run_id"], "r1");
        assert_eq!(get("inventory/latest_sync")["covered"], 1);
    }

    #[test]
    fn bounds_are_enforced() {
        let item = |k: &str| Item {
            key: k.into(),
            source: Source::Inventory,
            payload: json!({}),
        };
        assert_eq!(
            check_items(&[item("a"), item("a")]),
            Err(ItemsError::Duplicate("a".into()))
        );
        assert!(matches!(check_items(&[item("")]), Err(ItemsError::BadKey(_))));
        assert!(matches!(check_items(&[item("a\nb")]), Err(ItemsError::BadKey(_))));
        let many: Vec<Item> = (0..=MAX_ITEMS).map(|i| item(&format!("k{i}"))).collect();
        assert_eq!(check_items(&many), Err(ItemsError::TooMany(MAX_ITEMS + 1)));
        let big = Item {
            payload: json!({"x": "y".repeat(MAX_PAYLOAD_BYTES)}),
            ..item("big")
        };
        assert!(matches!(check_items(&[big]), Err(ItemsError::TooLarge { .. })));
        let s = Sources {
            conditional_access: (0..MAX_ITEMS)
                .map(|i| CaPolicy {
                    external_id: format!("{i}"),
                    display_name: "x".into(),
                    state: None,
                })
                .collect(),
            ..Sources::default()
        };
        assert!(matches!(items_of(&s), Err(ItemsError::TooMany(_))));
    }

    #[test]
    fn item_hashes_are_canonical_and_cover_key_and_source() {
        let a = item_sha256("k", Source::Backup, &json!({"a": 1, "b": 2}));
        assert_eq!(a, item_sha256("k", Source::Backup, &json!({"b": 2, "a": 1})));
        assert_eq!(a.len(), 64);
        assert_ne!(a, item_sha256("k2", Source::Backup, &json!({"a": 1, "b": 2})));
        assert_ne!(a, item_sha256("k", Source::Inventory, &json!({"a": 1, "b": 2})));
        assert_ne!(a, item_sha256("k", Source::Backup, &json!({"a": 1, "b": 3})));
        for s in [
            Source::Inventory,
            Source::Backup,
            Source::BaselineCompare,
            Source::ConditionalAccess,
            Source::Assignments,
        ] {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn the_message_is_unambiguous() {
        let s = Signed {
            snapshot_id: "s",
            workspace_id: "w",
            tenant_id: "t",
            generated_at: 1,
        };
        // A key's end moved into the hash, or one item split in two: different messages.
        assert_ne!(
            signing_message(s, [("ab", "c")]),
            signing_message(s, [("a", "bc")])
        );
        assert_ne!(
            signing_message(s, [("a", "b")]),
            signing_message(s, [("a", "b"), ("", "")])
        );
        let other_time = Signed { generated_at: 2, ..s };
        assert_ne!(
            signing_message(s, [("a", "b")]),
            signing_message(other_time, [("a", "b")])
        );
        let other_tenant = Signed { tenant_id: "t2", ..s };
        assert_ne!(signing_message(s, []), signing_message(other_tenant, []));
    }

    #[test]
    fn a_signed_snapshot_verifies_and_every_alteration_fails() {
        let k = key(7);
        let items = items_of(&sources()).unwrap();
        let good = stored(&k, "snap-1", &items);
        assert_eq!(verify(&k, &good), Ok(()));

        // A payload altered: caught by its hash.
        let mut s = good.clone();
        s.items[3].payload = Some(json!({"tampered": true}));
        assert_eq!(
            verify(&k, &s),
            Err(VerifyFailure::ItemAltered {
                key: s.items[3].key.clone()
            })
        );
        // Altered with its stored hash recomputed: caught by the signature.
        s.items[3].sha256 = content_sha256(&s.items[3]);
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // A source altered (hash recomputed).
        let mut s = good.clone();
        s.items[0].source = "backup".into();
        s.items[0].sha256 = content_sha256(&s.items[0]);
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // Two items swapped.
        let mut s = good.clone();
        s.items.swap(0, 1);
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // An item removed (and the count with it).
        let mut s = good.clone();
        s.items.pop();
        s.item_count -= 1;
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // Another snapshot's items and signature under this snapshot's id.
        let other = stored(&k, "snap-2", &items_of(&Sources::default()).unwrap());
        let mut s = other.clone();
        s.id = good.id.clone();
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // The same items signed for another snapshot: its signature is no proof here.
        let twin = stored(&k, "snap-3", &items);
        let mut s = good.clone();
        s.signature = twin.signature.clone();
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // Another tenant, another time.
        let mut s = good.clone();
        s.tenant_id = "t2".into();
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        let mut s = good.clone();
        s.generated_at += 1;
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        // The wrong key, a malformed signature, none at all.
        assert_eq!(verify(&key(8), &good), Err(VerifyFailure::SignatureMismatch));
        let mut s = good.clone();
        s.signature = Some("not hex".into());
        assert_eq!(verify(&k, &s), Err(VerifyFailure::SignatureMismatch));
        s.signature = None;
        assert_eq!(verify(&k, &s), Err(VerifyFailure::Unsigned));
        // Incomplete: an item not recorded.
        let mut s = good.clone();
        s.items[2].sha256 = None;
        assert_eq!(
            verify(&k, &s),
            Err(VerifyFailure::Incomplete {
                recorded: s.item_count - 1,
                planned: s.item_count
            })
        );
        // A payload that is not JSON any more.
        let mut s = good;
        s.items[1].payload = None;
        assert!(matches!(verify(&k, &s), Err(VerifyFailure::ItemAltered { .. })));
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231's keys are shorter than ours; this vector was computed
        // independently, with Python's hmac module.
        let k = EvidenceKey::new(vec![0x0b; 32]).unwrap();
        let sig = sign(&k, b"Hi There");
        // Python: hmac.new(b"\x0b" * 32, b"Hi There", hashlib.sha256).hexdigest()
        assert_eq!(
            sig,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
        assert!(signature_holds(&k, b"Hi There", &sig));
        assert!(!signature_holds(&k, b"Hi there", &sig));
        assert!(!signature_holds(&k, b"Hi There", &sig[..62]));
    }

    fn proof(id: &str, run: &str, verified: Result<(), VerifyFailure>) -> SnapshotProof {
        SnapshotProof {
            id: id.into(),
            workspace_id: "ws".into(),
            tenant_id: "t1".into(),
            created_by_run_id: run.into(),
            item_count: 4,
            verified,
        }
    }

    #[test]
    fn only_the_runs_own_complete_verified_snapshot_is_success() {
        let scope = RunScope {
            run_id: "r",
            workspace_id: "ws",
            tenant_id: "t1",
        };
        let ok = reconcile(scope, &[proof("s", "r", Ok(()))]);
        assert_eq!(
            (ok.verdict, ok.reason_code.as_str()),
            (Verdict::Succeeded, "snapshot_verified")
        );
        assert_eq!(ok.units_succeeded, Some(4));
        // The same snapshot found twice (linked and named) is one candidate.
        let twice = reconcile(scope, &[proof("s", "r", Ok(())), proof("s", "r", Ok(()))]);
        assert_eq!(twice.verdict, Verdict::Succeeded);

        let code = |c: &[SnapshotProof]| {
            let r = reconcile(scope, c);
            assert_ne!(r.verdict, Verdict::Succeeded);
            assert_eq!(r.units_succeeded, None);
            r.reason_code
        };
        assert_eq!(code(&[]), "stale_no_proof");
        let incomplete = VerifyFailure::Incomplete {
            recorded: 2,
            planned: 4,
        };
        assert_eq!(code(&[proof("s", "r", Err(incomplete))]), "snapshot_incomplete");
        assert_eq!(
            code(&[proof("s", "r", Err(VerifyFailure::Unsigned))]),
            "snapshot_unsigned"
        );
        assert_eq!(
            code(&[proof("s", "r", Err(VerifyFailure::SignatureMismatch))]),
            "signature_mismatch"
        );
        let mut foreign = proof("s", "r", Ok(()));
        foreign.tenant_id = "t2".into();
        assert_eq!(code(&[foreign]), "proof_wrong_scope");
        let mut other_ws = proof("s", "r", Ok(()));
        other_ws.workspace_id = "ws2".into();
        assert_eq!(code(&[other_ws]), "proof_wrong_scope");
        assert_eq!(code(&[proof("s2", "other", Ok(()))]), "proof_not_linked");
        assert_eq!(
            code(&[proof("s", "r", Ok(())), proof("s2", "r", Ok(()))]),
            "proof_ambiguous"
        );
        // Its own snapshot and another run's named by its context: two candidates.
        assert_eq!(
            code(&[proof("s", "r", Ok(())), proof("s2", "other", Ok(()))]),
            "proof_ambiguous"
        );
    }
}
