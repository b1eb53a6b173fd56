//! Drift: a baseline's policies compared with a tenant's current policies.
//! Pure: the caller reads both sides, normalizes each policy with its own
//! tenant's directory ([`crate::normalize::normalize`] with that tenant's
//! [`Names`](crate::normalize::Names)), and hands the normalized values here.
//! References then read `"<kind>:<name>"` on both sides, so a group with
//! another id but the same name is the same group; an id no directory knows
//! stays an id.
//!
//! # Matching ([`compare`])
//!
//! A policy's identity is its type and its [`match_key`]: its `displayName`,
//! or `name` (settings catalog), trimmed and lowercase — falling back to the
//! [`Evidence::display_name`], trimmed and lowercase. Only types in the
//! `types` set are compared (both sides). An identity held by two or more
//! policies of one side is never guessed at: it yields an [`Ambiguity`] for
//! each side where it is ambiguous, and no finding. Otherwise a baseline
//! policy without a current one is [`FindingKind::Missing`], a current policy
//! without a baseline one is [`FindingKind::Unexpected`], and a pair whose
//! [`diff`] is not empty is [`FindingKind::Changed`].
//!
//! # What counts as a change ([`diff`])
//!
//! 1. objects are compared member by member, members sorted by name; a
//!    member only on one side is a [`Change`] with `None` on the other side;
//! 2. the policy's own name is not content: the top-level `displayName` and
//!    `name` are skipped when they are equal case-insensitively after trim
//!    (the matcher already matched them) — a name differing only in case or
//!    surrounding whitespace is never a change;
//! 3. an array whose elements all have a non-empty
//!    [`natural_key`](crate::normalize::natural_key), no key twice on a side
//!    (settings by `settingDefinitionId`, assignments by `target`, template
//!    values by definition), is matched element by element by that key; an
//!    element only on one side is a change with `None` on the other side;
//!    any other array is compared whole (the normalizer has sorted it): equal,
//!    or one change at the array's path;
//! 4. scalars (and values of different JSON types) that differ are one change;
//! 5. a path is the `/`-separated member names from the policy's top level,
//!    with `[<natural key>]` for a matched array element, the key as
//!    `natural_key` writes it: `passwordMinimumLength`,
//!    `conditions/users/includeGroups`,
//!    `settings[setting:device_vendor_msft_x]/settingInstance/simpleSettingValue/value`,
//!    `assignments[target:{"groupId":"group:Pilot"}]`; changes come in that
//!    traversal order (members by name, matched elements by key, depth first);
//! 6. at most [`MAX_CHANGES`] changes are listed per policy; past that the
//!    list ends with one change whose path is [`MORE_CHANGES`] and whose
//!    sides are both `None`.

use crate::normalize::natural_key;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many changes are listed for one policy (rule 6).
pub const MAX_CHANGES: usize = 200;

/// The path of the change that ends a list cut at [`MAX_CHANGES`].
pub const MORE_CHANGES: &str = "(more changes not listed)";

/// The top-level members that name a policy (rule 2).
const NAME_MEMBERS: &[&str] = &["displayName", "name"];

/// One path that differs between two normalized policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub baseline: Option<Value>,
    pub current: Option<Value>,
}

/// The differences between two NORMALIZED values, in path order; empty when equal.
pub fn diff(baseline: &Value, current: &Value) -> Vec<Change> {
    let mut out = Changes::default();
    match (baseline, current) {
        (Value::Object(b), Value::Object(c)) => diff_members("", b, c, true, &mut out),
        _ => diff_at("", baseline, current, &mut out),
    }
    out.list
}

/// The changes found so far, cut at [`MAX_CHANGES`].
#[derive(Default)]
struct Changes {
    list: Vec<Change>,
    full: bool,
}

impl Changes {
    fn push(&mut self, path: &str, baseline: Option<&Value>, current: Option<&Value>) {
        if self.full {
            return;
        }
        if self.list.len() == MAX_CHANGES {
            self.list.push(Change {
                path: MORE_CHANGES.into(),
                baseline: None,
                current: None,
            });
            self.full = true;
            return;
        }
        self.list.push(Change {
            path: path.to_owned(),
            baseline: baseline.cloned(),
            current: current.cloned(),
        });
    }
}

fn member_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}/{name}")
    }
}

fn same_name(b: Option<&Value>, c: Option<&Value>) -> bool {
    match (b, c) {
        (Some(Value::String(b)), Some(Value::String(c))) => {
            b.trim().to_lowercase() == c.trim().to_lowercase()
        }
        _ => false,
    }
}

fn diff_members(path: &str, b: &Map<String, Value>, c: &Map<String, Value>, top: bool, out: &mut Changes) {
    let names: BTreeSet<&String> = b.keys().chain(c.keys()).collect();
    for name in names {
        if out.full {
            return;
        }
        let (bv, cv) = (b.get(name), c.get(name));
        if top && NAME_MEMBERS.contains(&name.as_str()) && same_name(bv, cv) {
            continue;
        }
        let p = member_path(path, name);
        match (bv, cv) {
            (Some(bv), Some(cv)) => diff_at(&p, bv, cv, out),
            _ => out.push(&p, bv, cv),
        }
    }
}

fn diff_at(path: &str, b: &Value, c: &Value, out: &mut Changes) {
    match (b, c) {
        (Value::Object(bm), Value::Object(cm)) => diff_members(path, bm, cm, false, out),
        (Value::Array(ba), Value::Array(ca)) => match (keyed(ba), keyed(ca)) {
            (Some(bk), Some(ck)) => {
                let keys: BTreeSet<&String> = bk.keys().chain(ck.keys()).collect();
                for key in keys {
                    if out.full {
                        return;
                    }
                    let p = format!("{path}[{key}]");
                    match (bk.get(key), ck.get(key)) {
                        (Some(bv), Some(cv)) => diff_at(&p, bv, cv, out),
                        (bv, cv) => out.push(&p, bv.copied(), cv.copied()),
                    }
                }
            }
            _ if ba == ca => {}
            _ => out.push(path, Some(b), Some(c)),
        },
        _ if b == c => {}
        _ => out.push(path, Some(b), Some(c)),
    }
}

/// An array's elements by natural key, when every element has one and no
/// key is there twice (rule 3).
fn keyed(items: &[Value]) -> Option<BTreeMap<String, &Value>> {
    let mut out = BTreeMap::new();
    for v in items {
        let key = natural_key(v);
        if key.is_empty() || out.insert(key, v).is_some() {
            return None;
        }
    }
    Some(out)
}

/// The name a policy is matched by, as written (trimmed): its `displayName`,
/// or `name` (settings catalog).
fn match_name(payload: &Value) -> Option<&str> {
    NAME_MEMBERS.iter().find_map(|m| {
        payload
            .get(m)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    })
}

/// How a policy is matched across tenants: its `displayName`, or `name`
/// (settings catalog), trimmed, lowercase. None when it has neither
/// (non-empty after trim).
pub fn match_key(payload: &Value) -> Option<String> {
    match_name(payload).map(str::to_lowercase)
}

/// One policy of one side, as read and normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    /// The policy normalized with its own tenant's directory.
    pub normalized: Value,
}

impl Evidence {
    /// The name this policy is matched by, as written: [`match_key`]'s
    /// member, else the evidence's display name; trimmed.
    fn name(&self) -> &str {
        match_name(&self.normalized).unwrap_or_else(|| self.display_name.trim())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Missing,
    Unexpected,
    Changed,
}

impl FindingKind {
    /// The serialized name: `missing`, `unexpected`, `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Unexpected => "unexpected",
            FindingKind::Changed => "changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub policy_type: String,
    /// The name the policy was matched by, as written (trimmed) on the
    /// baseline side (the current side for `unexpected`); lowercase, it is
    /// the match key.
    pub display_name: String,
    pub baseline_external_id: Option<String>,
    pub current_external_id: Option<String>,
    /// Empty unless `changed`.
    pub changes: Vec<Change>,
}

impl Finding {
    /// A stable key, unique within one comparison: `"<kind>/<policy_type>/<match key>"`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.policy_type, self.match_key())
    }

    fn match_key(&self) -> String {
        self.display_name.trim().to_lowercase()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Baseline,
    Current,
}

/// Two or more policies of one side share a type and match key: never
/// guessed, no finding for that identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ambiguity {
    pub side: Side,
    pub policy_type: String,
    pub match_key: String,
    /// Sorted.
    pub external_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub findings: Vec<Finding>,
    pub ambiguous: Vec<Ambiguity>,
    pub compared: u64,
}

/// Matches by (policy_type, match_key(normalized) — fall back to display_name
/// trimmed lowercase); an identity ambiguous on either side yields an
/// Ambiguity (one per side that is ambiguous) and no finding.
/// Only types in `types` are compared (the caller passes the baseline's
/// readable types; policies of other types are ignored on both sides).
/// Findings sorted by (policy_type, match key, kind); ambiguities by
/// (policy_type, match key, side). `compared` = number of distinct
/// identities considered.
pub fn compare(baseline: &[Evidence], current: &[Evidence], types: &BTreeSet<String>) -> Comparison {
    type Sides<'a> = (Vec<&'a Evidence>, Vec<&'a Evidence>);
    let mut identities: BTreeMap<(&str, String), Sides> = BTreeMap::new();
    fn identity(e: &Evidence) -> (&str, String) {
        (e.policy_type.as_str(), e.name().to_lowercase())
    }
    for e in baseline.iter().filter(|e| types.contains(&e.policy_type)) {
        identities.entry(identity(e)).or_default().0.push(e);
    }
    for e in current.iter().filter(|e| types.contains(&e.policy_type)) {
        identities.entry(identity(e)).or_default().1.push(e);
    }

    let mut out = Comparison {
        compared: identities.len() as u64,
        ..Comparison::default()
    };
    for ((policy_type, key), (b, c)) in identities {
        let mut ambiguous = false;
        for (side, list) in [(Side::Baseline, &b), (Side::Current, &c)] {
            if list.len() > 1 {
                ambiguous = true;
                let mut external_ids: Vec<String> = list.iter().map(|e| e.external_id.clone()).collect();
                external_ids.sort();
                out.ambiguous.push(Ambiguity {
                    side,
                    policy_type: policy_type.to_owned(),
                    match_key: key.clone(),
                    external_ids,
                });
            }
        }
        if ambiguous {
            continue;
        }
        let finding = |kind, named: &Evidence, changes| Finding {
            kind,
            policy_type: policy_type.to_owned(),
            display_name: named.name().to_owned(),
            baseline_external_id: b.first().map(|e| e.external_id.clone()),
            current_external_id: c.first().map(|e| e.external_id.clone()),
            changes,
        };
        match (b.first(), c.first()) {
            (Some(be), None) => out.findings.push(finding(FindingKind::Missing, be, Vec::new())),
            (None, Some(ce)) => out
                .findings
                .push(finding(FindingKind::Unexpected, ce, Vec::new())),
            (Some(be), Some(ce)) => {
                let changes = diff(&be.normalized, &ce.normalized);
                if !changes.is_empty() {
                    out.findings.push(finding(FindingKind::Changed, be, changes));
                }
            }
            (None, None) => {}
        }
    }
    out.findings.sort_by(|x, y| {
        (&x.policy_type, x.match_key(), x.kind).cmp(&(&y.policy_type, y.match_key(), y.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{Names, normalize};
    use serde_json::json;

    fn ev(policy_type: &str, id: &str, payload: Value) -> Evidence {
        let normalized = normalize(&payload, &Names::default());
        Evidence {
            policy_type: policy_type.into(),
            external_id: id.into(),
            display_name: payload["displayName"]
                .as_str()
                .or(payload["name"].as_str())
                .unwrap_or("")
                .into(),
            normalized,
        }
    }

    fn types(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_values_have_no_changes() {
        let v = json!({"displayName": "x", "a": 1, "b": {"c": [1, 2]}, "settings": [{"settingDefinitionId": "s", "value": 1}]});
        assert!(diff(&v, &v.clone()).is_empty());
    }

    #[test]
    fn one_scalar_changed_is_one_change() {
        let b = json!({"displayName": "x", "passwordMinimumLength": 8, "other": true});
        let c = json!({"displayName": "x", "passwordMinimumLength": 12, "other": true});
        assert_eq!(
            diff(&b, &c),
            vec![Change {
                path: "passwordMinimumLength".into(),
                baseline: Some(json!(8)),
                current: Some(json!(12)),
            }]
        );
        let b = json!({"conditions": {"users": {"includeGroups": ["group:A"]}}});
        let c = json!({"conditions": {"users": {"includeGroups": ["group:B"]}}});
        let changes = diff(&b, &c);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "conditions/users/includeGroups");
        assert_eq!(changes[0].baseline, Some(json!(["group:A"])));
    }

    #[test]
    fn a_member_on_one_side_is_a_change_with_none() {
        let b = json!({"a": 1, "b": 2});
        let c = json!({"b": 2, "c": 3});
        let changes = diff(&b, &c);
        assert_eq!(changes.len(), 2);
        assert_eq!((changes[0].path.as_str(), &changes[0].current), ("a", &None));
        assert_eq!((changes[1].path.as_str(), &changes[1].baseline), ("c", &None));
    }

    fn catalog(value: &str, extra: Option<&str>) -> Value {
        let setting = |def: &str, v: &str| {
            json!({"id": "0", "settingInstance": {
                "@odata.type": "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance",
                "settingDefinitionId": def,
                "simpleSettingValue": {"value": v}}})
        };
        let mut settings = vec![
            setting("device_vendor_msft_x", value),
            setting("device_vendor_msft_y", "same"),
        ];
        if let Some(e) = extra {
            settings.push(setting("device_vendor_msft_z", e));
        }
        json!({"name": "Catalog", "settings": settings})
    }

    #[test]
    fn a_setting_changed_in_a_catalog_has_its_key_in_the_path() {
        let n = |v: &Value| normalize(v, &Names::default());
        let changes = diff(&n(&catalog("1", None)), &n(&catalog("2", None)));
        assert_eq!(
            changes,
            vec![Change {
                path: "settings[setting:device_vendor_msft_x]/settingInstance/simpleSettingValue/value"
                    .into(),
                baseline: Some(json!("1")),
                current: Some(json!("2")),
            }]
        );
        let changes = diff(&n(&catalog("1", None)), &n(&catalog("1", Some("z"))));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "settings[setting:device_vendor_msft_z]");
        assert_eq!(changes[0].baseline, None);
        assert!(changes[0].current.is_some());
    }

    #[test]
    fn arrays_without_keys_or_with_duplicate_keys_compare_whole() {
        let b = json!({"l": [{"v": 1}, {"v": 2}]});
        let c = json!({"l": [{"v": 1}, {"v": 3}]});
        assert_eq!(diff(&b, &c).len(), 1);
        assert_eq!(diff(&b, &c)[0].path, "l");
        let dup = |v: i64| json!({"settings": [{"settingDefinitionId": "a", "v": 1}, {"settingDefinitionId": "a", "v": v}]});
        let changes = diff(&dup(1), &dup(2));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "settings");
    }

    #[test]
    fn assignments_are_matched_by_target() {
        let names = {
            let mut n = Names::default();
            n.insert("g1", "group", "Pilot");
            n.insert("g2", "group", "All");
            n
        };
        let b = normalize(
            &json!({"assignments": [{"id": "1", "target": {"groupId": "g1"}}]}),
            &names,
        );
        let c = normalize(
            &json!({"assignments": [{"id": "9", "target": {"groupId": "g1"}}, {"target": {"groupId": "g2"}}]}),
            &names,
        );
        let changes = diff(&b, &c);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, r#"assignments[target:{"groupId":"group:all"}]"#);
        assert_eq!(changes[0].baseline, None);
    }

    #[test]
    fn the_name_differing_in_case_or_whitespace_is_not_a_change() {
        let b = json!({"displayName": "Baseline Policy", "name": "N", "a": 1});
        let c = json!({"displayName": " baseline policy ", "name": "n", "a": 1});
        assert!(diff(&b, &c).is_empty());
        // Another name is a change; so is a nested `displayName`.
        let c = json!({"displayName": "Baseline Policy", "name": "M", "a": 1});
        assert_eq!(diff(&b, &c)[0].path, "name");
        let b = json!({"x": {"displayName": "A"}});
        let c = json!({"x": {"displayName": "a"}});
        assert_eq!(diff(&b, &c)[0].path, "x/displayName");
    }

    #[test]
    fn changes_are_capped() {
        let b: Map<String, Value> = (0..300).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let c: Map<String, Value> = (0..300).map(|i| (format!("k{i:03}"), json!(i + 1))).collect();
        let changes = diff(&Value::Object(b), &Value::Object(c));
        assert_eq!(changes.len(), MAX_CHANGES + 1);
        assert_eq!(changes[MAX_CHANGES - 1].path, "k199");
        assert_eq!(
            changes[MAX_CHANGES],
            Change {
                path: MORE_CHANGES.into(),
                baseline: None,
                current: None
            }
        );
        // Exactly the cap: no marker.
        let b: Map<String, Value> = (0..200).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let c: Map<String, Value> = (0..200).map(|i| (format!("k{i:03}"), json!(i + 1))).collect();
        assert_eq!(diff(&Value::Object(b), &Value::Object(c)).len(), MAX_CHANGES);
    }

    #[test]
    fn match_key_is_display_name_or_name() {
        assert_eq!(
            match_key(&json!({"displayName": " A b ", "name": "x"})),
            Some("a b".into())
        );
        assert_eq!(
            match_key(&json!({"displayName": "  ", "name": "X"})),
            Some("x".into())
        );
        assert_eq!(match_key(&json!({"name": ""})), None);
        assert_eq!(match_key(&json!({"description": "d"})), None);
    }

    #[test]
    fn missing_unexpected_and_changed() {
        let t = "deviceConfiguration";
        let baseline = vec![
            ev(t, "b1", json!({"displayName": "Kept", "a": 1})),
            ev(t, "b2", json!({"displayName": "Gone", "a": 1})),
            ev(t, "b3", json!({"displayName": "Edited", "a": 1})),
        ];
        let current = vec![
            ev(t, "c3", json!({"displayName": "Edited", "a": 2})),
            ev(t, "c1", json!({"displayName": "kept ", "a": 1})),
            ev(t, "c4", json!({"displayName": "New", "a": 1})),
        ];
        let cmp = compare(&baseline, &current, &types(&[t]));
        assert_eq!(cmp.compared, 4);
        assert!(cmp.ambiguous.is_empty());
        let got: Vec<(String, Option<&str>, Option<&str>)> = cmp
            .findings
            .iter()
            .map(|f| {
                (
                    f.key(),
                    f.baseline_external_id.as_deref(),
                    f.current_external_id.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "changed/deviceConfiguration/edited".into(),
                    Some("b3"),
                    Some("c3")
                ),
                ("missing/deviceConfiguration/gone".into(), Some("b2"), None),
                ("unexpected/deviceConfiguration/new".into(), None, Some("c4")),
            ]
        );
        let changed = &cmp.findings[0];
        assert_eq!(changed.display_name, "Edited");
        assert_eq!(changed.changes.len(), 1);
        assert_eq!(changed.changes[0].path, "a");
        assert!(cmp.findings[1].changes.is_empty() && cmp.findings[2].changes.is_empty());
        assert_eq!(
            serde_json::to_value(FindingKind::Unexpected).unwrap(),
            json!("unexpected")
        );
    }

    #[test]
    fn the_same_name_in_two_types_is_two_identities() {
        let baseline = vec![ev("a", "1", json!({"displayName": "X"}))];
        let current = vec![ev("b", "2", json!({"displayName": "X"}))];
        let cmp = compare(&baseline, &current, &types(&["a", "b"]));
        assert_eq!(cmp.compared, 2);
        let kinds: Vec<String> = cmp.findings.iter().map(Finding::key).collect();
        assert_eq!(kinds, vec!["missing/a/x", "unexpected/b/x"]);
    }

    #[test]
    fn ambiguity_on_either_side_is_never_guessed() {
        let t = "compliance";
        let one = |id: &str, v: i64| ev(t, id, json!({"displayName": "Dup", "a": v}));
        // Baseline side ambiguous.
        let cmp = compare(&[one("b1", 1), one("b2", 2)], &[one("c1", 3)], &types(&[t]));
        assert!(cmp.findings.is_empty());
        assert_eq!(
            cmp.ambiguous,
            vec![Ambiguity {
                side: Side::Baseline,
                policy_type: t.into(),
                match_key: "dup".into(),
                external_ids: vec!["b1".into(), "b2".into()],
            }]
        );
        assert_eq!(cmp.compared, 1);
        // Current side ambiguous, even without a baseline policy.
        let cmp = compare(&[], &[one("c2", 1), one("c1", 1)], &types(&[t]));
        assert!(cmp.findings.is_empty());
        assert_eq!(cmp.ambiguous.len(), 1);
        assert_eq!(cmp.ambiguous[0].side, Side::Current);
        assert_eq!(cmp.ambiguous[0].external_ids, vec!["c1", "c2"]);
        // Both sides: one ambiguity per side.
        let cmp = compare(
            &[one("b1", 1), one("b2", 1)],
            &[one("c1", 1), one("c2", 1)],
            &types(&[t]),
        );
        assert!(cmp.findings.is_empty());
        let sides: Vec<Side> = cmp.ambiguous.iter().map(|a| a.side).collect();
        assert_eq!(sides, vec![Side::Baseline, Side::Current]);
    }

    #[test]
    fn a_display_name_case_difference_is_no_finding() {
        let t = "deviceConfiguration";
        let cmp = compare(
            &[ev(t, "b", json!({"displayName": "BitLocker Policy", "a": 1}))],
            &[ev(t, "c", json!({"displayName": "bitlocker policy  ", "a": 1}))],
            &types(&[t]),
        );
        assert_eq!(cmp.findings, vec![]);
        assert_eq!(cmp.compared, 1);
    }

    #[test]
    fn only_the_given_types_are_compared() {
        let baseline = vec![
            ev("a", "1", json!({"displayName": "X", "v": 1})),
            ev("skipped", "2", json!({"displayName": "Y"})),
        ];
        let current = vec![
            ev("a", "3", json!({"displayName": "X", "v": 2})),
            ev("other", "4", json!({"displayName": "Z"})),
            ev("other", "5", json!({"displayName": "Z"})),
        ];
        let cmp = compare(&baseline, &current, &types(&["a"]));
        assert_eq!(cmp.compared, 1);
        assert!(cmp.ambiguous.is_empty());
        assert_eq!(cmp.findings.len(), 1);
        assert_eq!(cmp.findings[0].key(), "changed/a/x");
        assert!(compare(&baseline, &current, &types(&[])).findings.is_empty());
    }

    #[test]
    fn a_policy_without_a_name_falls_back_to_its_display_name() {
        let nameless = |id: &str, v: i64| Evidence {
            policy_type: "t".into(),
            external_id: id.into(),
            display_name: " Shown ".into(),
            normalized: json!({"v": v}),
        };
        let cmp = compare(&[nameless("1", 1)], &[nameless("2", 2)], &types(&["t"]));
        assert_eq!(cmp.findings.len(), 1);
        assert_eq!(cmp.findings[0].key(), "changed/t/shown");
        assert_eq!(cmp.findings[0].display_name, "Shown");
    }
}
