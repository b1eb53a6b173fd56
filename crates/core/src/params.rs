//! Start parameters: validated at the boundary (API, CLI) so a bad start is a
//! 400 with a clear message, never a run that fails later. A type lists its
//! parameters in its catalog entry ([`crate::catalog::TypeSpec::params`]);
//! each parameter's [`ParamKind`] says how it is checked and normalized, so
//! a new type declares parameters and writes no validation of its own.

use crate::RunType;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// How a parameter's value is checked and normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A non-empty list of distinct policy type keys of the catalog.
    PolicyTypes,
    /// A non-empty list of distinct `TYPE/ID` references.
    PolicyRefs,
    /// One `TYPE/ID` reference.
    PolicyRef,
    /// The id of an opsledger artifact (a backup set…): a lower-case
    /// hyphenated UUID, as opsledger issues them. Whether it exists, and in
    /// the caller's scope, is checked by the API before any run exists.
    ArtifactId,
    /// A non-empty list of distinct artifact ids (items of a backup set…).
    ArtifactIds,
    /// `true` or `false`; `false` is the default, so it is dropped (a start
    /// saying `false` and one saying nothing are the same work).
    Flag,
    /// `true` or `false`, both kept: `false` is a value here (unlock), not a
    /// default — leaving the parameter out means "unchanged".
    Bool,
    /// `true` or `false`; `true` is the default, so it is dropped (an option
    /// that is on unless turned off: a start saying `true` and one saying
    /// nothing are the same work).
    FlagOn,
    /// Text people read (a name, a label): trimmed, then `min` to `max`
    /// characters, without control, invisible or direction-changing
    /// characters (they make look-alike names). With `min` 0, `""` is a
    /// value (it clears), not a default.
    DisplayText { min: usize, max: usize },
}

impl ParamKind {
    /// The type as `GET /api/v1/operation-types` names it.
    pub fn type_name(self) -> &'static str {
        match self {
            ParamKind::PolicyTypes | ParamKind::PolicyRefs | ParamKind::ArtifactIds => "string[]",
            ParamKind::PolicyRef | ParamKind::ArtifactId | ParamKind::DisplayText { .. } => "string",
            ParamKind::Flag | ParamKind::Bool | ParamKind::FlagOn => "boolean",
        }
    }
}

fn kind_name<S: Serializer>(kind: &ParamKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.type_name())
}

/// One parameter a type accepts, as listed by `GET /api/v1/operation-types`.
#[derive(Debug, Clone, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    #[serde(rename = "type", serialize_with = "kind_name")]
    pub kind: ParamKind,
    pub required: bool,
    /// What an absent optional parameter means.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// The parameters of the catalog, named once and shared by the types that take them.
pub mod catalog {
    use super::{ParamKind, ParamSpec};

    pub const POLICY_TYPES: ParamSpec = ParamSpec {
        name: "policy_types",
        kind: ParamKind::PolicyTypes,
        required: false,
        default: Some("every policy type the provider exposes"),
        description: "policy types to read, e.g. [\"deviceConfigurations\"]",
    };
    pub const POLICY_IDS: ParamSpec = ParamSpec {
        name: "policy_ids",
        kind: ParamKind::PolicyRefs,
        required: false,
        default: Some("every inventoried policy of the tenant"),
        description: "policies to capture as `TYPE/ID`, e.g. [\"deviceConfigurations/1b2c…\"]",
    };
    pub const BACKUP_SET_ID: ParamSpec = ParamSpec {
        name: "backup_set_id",
        kind: ParamKind::ArtifactId,
        required: false,
        default: Some("the target tenant's latest complete backup set"),
        description: "the backup set to restore: a set of any tenant of the workspace",
    };
    pub const ITEM_IDS: ParamSpec = ParamSpec {
        name: "item_ids",
        kind: ParamKind::ArtifactIds,
        required: false,
        default: Some("every item of the backup set"),
        description: "the backup items to restore (ids from GET …/backup-sets/{id}); only these are touched",
    };
    pub const DRY_RUN: ParamSpec = ParamSpec {
        name: "dry_run",
        kind: ParamKind::Flag,
        required: false,
        default: Some("false"),
        description: "write nothing to the tenant; record per item what would be created, updated or left unchanged",
    };
    pub const SCHEDULE_ID: ParamSpec = ParamSpec {
        name: "schedule_id",
        kind: ParamKind::ArtifactId,
        required: true,
        default: None,
        description: "the schedule the run executes (the scheduler names it; GET …/schedules lists them)",
    };
    /// The set `backup_set.update` and `backup_set.delete` act on (their dedup key).
    pub const BACKUP_SET_OF_TENANT: ParamSpec = ParamSpec {
        name: "backup_set_id",
        kind: ParamKind::ArtifactId,
        required: true,
        default: None,
        description: "the backup set, a set of the run's tenant (ids from GET …/backup-sets)",
    };
    pub const SET_NAME: ParamSpec = ParamSpec {
        name: "name",
        kind: ParamKind::DisplayText {
            min: 1,
            max: super::MAX_DISPLAY_TEXT_CHARS,
        },
        required: false,
        default: Some("unchanged"),
        description: "the set's new name: 1 to 200 characters, no control or invisible characters \
                      (an update gives at least one of `name`, `label`, `retention_locked`)",
    };
    pub const SET_LABEL: ParamSpec = ParamSpec {
        name: "label",
        kind: ParamKind::DisplayText {
            min: 0,
            max: super::MAX_DISPLAY_TEXT_CHARS,
        },
        required: false,
        default: Some("unchanged"),
        description: "a label: 0 to 200 characters, \"\" clears it",
    };
    pub const RETENTION_LOCKED: ParamSpec = ParamSpec {
        name: "retention_locked",
        kind: ParamKind::Bool,
        required: false,
        default: Some("unchanged"),
        description: "true: the set cannot be deleted until an update sets it false again",
    };
    /// What a `backup_set.update` may change: it must change at least one.
    pub const BACKUP_SET_CHANGES: &[&str] = &["name", "label", "retention_locked"];
    /// The profile a capture fills, or whose latest snapshot a compare reads.
    pub const PROFILE: ParamSpec = ParamSpec {
        name: "profile",
        kind: ParamKind::DisplayText {
            min: 1,
            max: super::MAX_DISPLAY_TEXT_CHARS,
        },
        required: false,
        default: Some("the tenant's default profile (made by its first capture)"),
        description: "a baseline profile's name (GET …/baseline-profiles)",
    };
    pub const BASELINE_SNAPSHOT_ID: ParamSpec = ParamSpec {
        name: "baseline_snapshot_id",
        kind: ParamKind::ArtifactId,
        required: false,
        default: Some("the latest snapshot of `profile`, else of the tenant's default profile"),
        description: "the sealed snapshot to compare against: a snapshot of any tenant of the workspace (a golden tenant)",
    };
    pub const COMPARE_BACKUP_SET_ID: ParamSpec = ParamSpec {
        name: "backup_set_id",
        kind: ParamKind::ArtifactId,
        required: false,
        default: Some("none: a snapshot is the baseline"),
        description: "compare against a backup set instead (\"what changed since Tuesday's backup\"): a set of any tenant of the workspace",
    };
    /// What a compare compares against: at most one of these.
    pub const COMPARE_BASELINES: &[&str] = &["baseline_snapshot_id", "profile", "backup_set_id"];
    pub const CREATE_MISSING_GROUPS: ParamSpec = ParamSpec {
        name: "create_missing_groups",
        kind: ParamKind::Flag,
        required: false,
        default: Some("false: a reference to a group the target lacks fails its item (`reference_unmapped`)"),
        description: "create, by name, the groups the restored items refer to and the target lacks, before the policies",
    };
    /// `review_pack.generate`: the policy types the pack covers.
    pub const PACK_TYPES: ParamSpec = ParamSpec {
        name: "types",
        kind: ParamKind::PolicyTypes,
        required: false,
        default: Some("every policy type of the tenant's inventory"),
        description: "policy types the review pack covers, e.g. [\"deviceConfigurations\"]",
    };
    pub const PACK_INCLUDE_POLICIES: ParamSpec = ParamSpec {
        name: "include_policies",
        kind: ParamKind::FlagOn,
        required: false,
        default: Some("true"),
        description: "one JSON file per policy (its settings) under `policies/`",
    };
    pub const PACK_INCLUDE_ASSIGNMENTS: ParamSpec = ParamSpec {
        name: "include_assignments",
        kind: ParamKind::FlagOn,
        required: false,
        default: Some("true"),
        description: "`assignments.csv`, and each policy file with its assignments",
    };
    pub const PACK_INCLUDE_FINDINGS: ParamSpec = ParamSpec {
        name: "include_findings",
        kind: ParamKind::FlagOn,
        required: false,
        default: Some("true"),
        description: "the latest compare's findings (`findings.csv`, `findings.json`), when the tenant has one",
    };
    pub const PACK_REDACT: ParamSpec = ParamSpec {
        name: "redact",
        kind: ParamKind::FlagOn,
        required: false,
        default: Some("true"),
        description: "replace secret-bearing values (Wi-Fi pre-shared keys, certificate blobs, passwords in OMA-URI settings…) with \"[redacted]\"",
    };
}

/// Most policy types one start may name (the catalog has fewer; a longer
/// list can only repeat itself).
pub const MAX_POLICY_TYPES: usize = 64;
/// Most policies one backup may name; a whole tenant is the default, no list.
pub const MAX_POLICY_IDS: usize = 10_000;
/// Longest id inside a parameter (INTERFACE.md: `[A-Za-z0-9_.-]{1,128}`).
pub const MAX_ID_LEN: usize = 128;
/// Longest display text (a backup set's name or label), in characters.
pub const MAX_DISPLAY_TEXT_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("params must be a JSON object")]
    NotAnObject,
    #[error("unknown parameter `{param}` for {run_type} (accepted: {accepted})")]
    Unknown {
        run_type: RunType,
        param: String,
        accepted: String,
    },
    #[error("parameter `{param}` is required for {run_type}: {description}")]
    Missing {
        run_type: RunType,
        param: &'static str,
        description: &'static str,
    },
    #[error("parameter `{param}`: {message}")]
    Invalid { param: String, message: String },
    #[error(
        "parameter `{param}` is an empty list: name at least one, or leave it out for the default ({default})"
    )]
    EmptySelection {
        param: &'static str,
        default: &'static str,
    },
    #[error("parameter `{param}` has {got} entries; the limit is {limit}")]
    TooMany {
        param: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("{run_type} needs at least one of {}", .params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))]
    NoneOf {
        run_type: RunType,
        params: &'static [&'static str],
    },
    #[error("{run_type} takes at most one of {}; got {}", .params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "), .given.join(" and "))]
    MoreThanOneOf {
        run_type: RunType,
        params: &'static [&'static str],
        given: Vec<String>,
    },
}

impl ParamError {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            ParamError::NotAnObject | ParamError::Invalid { .. } | ParamError::MoreThanOneOf { .. } => {
                "invalid_params"
            }
            ParamError::Unknown { .. } => "unknown_param",
            ParamError::Missing { .. } | ParamError::NoneOf { .. } => "missing_param",
            ParamError::EmptySelection { .. } => "empty_selection",
            ParamError::TooMany { .. } => "param_limit_exceeded",
        }
    }
}

/// The parameters `t` accepts.
pub fn specs(t: RunType) -> &'static [ParamSpec] {
    t.spec().params
}

/// Parameters each optional alone of which a start of `t` must give at
/// least one: an update that changes nothing is no work, refused at start.
pub fn at_least_one_of(t: RunType) -> &'static [&'static str] {
    match t {
        RunType::BackupSetUpdate => catalog::BACKUP_SET_CHANGES,
        _ => &[],
    }
}

/// Parameters of which a start of `t` may give at most one: alternatives
/// (a compare's baseline is a snapshot, a profile or a backup set).
pub fn at_most_one_of(t: RunType) -> &'static [&'static str] {
    match t {
        RunType::BaselineCompare => catalog::COMPARE_BASELINES,
        _ => &[],
    }
}

/// Characters a display text may not hold besides control characters:
/// invisible ones and direction overrides, which make two different texts
/// look the same (the rule tenant names follow too).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}'
        // Fillers that render as blank space (Hangul, Braille).
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}')
}

/// `s` trimmed, if it is `min` to `max` characters of readable text; or why not.
pub fn check_display_text(s: &str, min: usize, max: usize) -> Result<String, String> {
    let text = s.trim();
    let chars = text.chars().count();
    if chars < min {
        return Err(if min == 1 {
            "must not be empty or blank".to_owned()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if chars > max {
        return Err(format!("is {chars} characters; at most {max} are allowed"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not hold control characters (newlines, tabs, NUL…)".to_owned());
    }
    if text.chars().any(is_invisible) {
        return Err("must not hold invisible or direction-changing characters".to_owned());
    }
    Ok(text.to_owned())
}

/// An id as INTERFACE.md allows it inside parameters: `[A-Za-z0-9_.-]{1,128}`.
/// Nothing invisible, no whitespace, no direction overrides, no separators.
pub fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An opsledger id: a lower-case hyphenated UUID (what opsledger issues;
/// any other spelling of one would be a second name for it).
pub fn is_artifact_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fn check_artifact_id(s: &str) -> Result<(), String> {
    if is_artifact_id(s) {
        Ok(())
    } else {
        Err("is not an id opsledger issued (a lower-case hyphenated UUID)".into())
    }
}

/// A value quoted for an error message: escaped, and cut short.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 40 => {
            format!("{:?}…", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

/// A policy type key of the catalog, or why not.
fn check_policy_type(s: &str) -> Result<(), String> {
    if crate::policy_types::lookup(s).is_some() {
        return Ok(());
    }
    let hint = crate::policy_types::POLICY_TYPES
        .iter()
        .find(|t| t.key.eq_ignore_ascii_case(s))
        .map(|t| format!(" (did you mean `{}`? type keys are case-sensitive)", t.key))
        .unwrap_or_else(|| " (GET /api/v1/operation-types lists them under `policy_types`)".into());
    Err(format!("is not a policy type opsledger knows{hint}"))
}

/// `TYPE/ID` with a known type and a valid id, or why not.
fn check_policy_ref(s: &str) -> Result<(), String> {
    let (t, id) = s
        .split_once('/')
        .ok_or_else(|| "must be `TYPE/ID`, e.g. `deviceConfigurations/0a1b…`".to_owned())?;
    check_policy_type(t).map_err(|e| format!("its type {e}"))?;
    if !is_valid_id(id) {
        return Err(format!(
            "its id must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 _ . - (no spaces or invisible characters)"
        ));
    }
    Ok(())
}

/// A non-empty list of at most `limit` distinct strings, each passing
/// `check`, in first-seen order (exact repeats dropped). Two entries that
/// differ only in letter case are refused: ids are compared without case by
/// Microsoft Graph, so they would name one object twice.
fn distinct_strings(
    param: &'static str,
    v: &Value,
    limit: usize,
    default: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ParamError> {
    let invalid = |message: String| ParamError::Invalid {
        param: param.to_owned(),
        message,
    };
    let list = v
        .as_array()
        .ok_or_else(|| invalid(format!("must be a list of strings, got {}", shown(v))))?;
    if list.is_empty() {
        return Err(ParamError::EmptySelection { param, default });
    }
    if list.len() > limit {
        return Err(ParamError::TooMany {
            param,
            got: list.len(),
            limit,
        });
    }
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = |message: String| ParamError::Invalid {
            param: format!("{param}[{i}]"),
            message,
        };
        let s = item
            .as_str()
            .ok_or_else(|| at(format!("must be a string, got {}", shown(item))))?;
        check(s).map_err(|e| at(format!("{} {e}", shown(item))))?;
        match seen.get(&s.to_ascii_lowercase()) {
            Some(first) if *first == s => {}
            Some(first) => {
                return Err(at(format!(
                    "{} names the same object as {first:?} (ids are compared without letter case)",
                    shown(item)
                )));
            }
            None => {
                seen.insert(s.to_ascii_lowercase(), s);
                out.push(s.to_owned());
            }
        }
    }
    Ok(out)
}

/// Checks `params` against the type's specs; returns them normalized.
pub fn validate(t: RunType, params: &Value) -> Result<Value, ParamError> {
    let empty = Map::new();
    let map = match params {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => return Err(ParamError::NotAnObject),
    };
    let specs = specs(t);
    for key in map.keys() {
        if !specs.iter().any(|s| s.name == key) {
            let accepted = if specs.is_empty() {
                "none".to_owned()
            } else {
                specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            };
            return Err(ParamError::Unknown {
                run_type: t,
                param: key.clone(),
                accepted,
            });
        }
    }
    let mut out = Map::new();
    for spec in specs {
        match map.get(spec.name) {
            None | Some(Value::Null) if spec.required => {
                return Err(ParamError::Missing {
                    run_type: t,
                    param: spec.name,
                    description: spec.description,
                });
            }
            None | Some(Value::Null) => {}
            Some(v) => match normalized(spec, v)? {
                // A flag's default: the same work as leaving it out.
                Value::Bool(false) if spec.kind == ParamKind::Flag => {}
                Value::Bool(true) if spec.kind == ParamKind::FlagOn => {}
                v => {
                    out.insert(spec.name.into(), v);
                }
            },
        }
    }
    let group = at_least_one_of(t);
    if !group.is_empty() && !group.iter().any(|p| out.contains_key(*p)) {
        return Err(ParamError::NoneOf {
            run_type: t,
            params: group,
        });
    }
    let alternatives = at_most_one_of(t);
    let given: Vec<String> = alternatives
        .iter()
        .filter(|p| out.contains_key(**p))
        .map(|p| format!("`{p}`"))
        .collect();
    if given.len() > 1 {
        return Err(ParamError::MoreThanOneOf {
            run_type: t,
            params: alternatives,
            given,
        });
    }
    Ok(Value::Object(out))
}

/// One present value of `spec`, checked and normalized.
fn normalized(spec: &ParamSpec, v: &Value) -> Result<Value, ParamError> {
    let default = spec.default.unwrap_or("none");
    Ok(match spec.kind {
        // Sets, sorted: the same selection in another order is the same work
        // (and the same parameters for deduplicated starts).
        ParamKind::PolicyTypes => {
            let mut list = distinct_strings(spec.name, v, MAX_POLICY_TYPES, default, check_policy_type)?;
            list.sort();
            list.into()
        }
        ParamKind::PolicyRefs => {
            let mut list = distinct_strings(spec.name, v, MAX_POLICY_IDS, default, check_policy_ref)?;
            list.sort();
            list.into()
        }
        ParamKind::PolicyRef => {
            let s = v.as_str().ok_or_else(|| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("must be a string, got {}", shown(v)),
            })?;
            check_policy_ref(s).map_err(|e| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("{} {e}", shown(v)),
            })?;
            Value::String(s.to_owned())
        }
        ParamKind::ArtifactId => {
            let s = v.as_str().ok_or_else(|| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("must be a string, got {}", shown(v)),
            })?;
            check_artifact_id(s).map_err(|e| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("{} {e}", shown(v)),
            })?;
            Value::String(s.to_owned())
        }
        ParamKind::ArtifactIds => {
            let mut list = distinct_strings(spec.name, v, MAX_POLICY_IDS, default, check_artifact_id)?;
            list.sort();
            list.into()
        }
        ParamKind::Flag | ParamKind::Bool | ParamKind::FlagOn => match v {
            Value::Bool(b) => Value::Bool(*b),
            other => {
                return Err(ParamError::Invalid {
                    param: spec.name.to_owned(),
                    message: format!("must be true or false, got {}", shown(other)),
                });
            }
        },
        ParamKind::DisplayText { min, max } => {
            let s = v.as_str().ok_or_else(|| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("must be a string, got {}", shown(v)),
            })?;
            let text = check_display_text(s, min, max).map_err(|e| ParamError::Invalid {
                param: spec.name.to_owned(),
                message: format!("{} {e}", shown(v)),
            })?;
            Value::String(text)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(t: RunType, params: Value) -> ParamError {
        validate(t, &params).unwrap_err()
    }

    #[test]
    fn empty_params_are_fine() {
        assert_eq!(validate(RunType::InventorySync, &Value::Null).unwrap(), json!({}));
        assert_eq!(validate(RunType::InventorySync, &json!({})).unwrap(), json!({}));
    }

    #[test]
    fn policy_types_are_deduplicated_and_sorted() {
        let v = validate(
            RunType::InventorySync,
            &json!({"policy_types": ["namedLocations", "deviceConfigurations", "namedLocations"]}),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"policy_types": ["deviceConfigurations", "namedLocations"]})
        );
    }

    #[test]
    fn policy_types_must_be_known_exactly() {
        let e = err(RunType::InventorySync, json!({"policy_types": ["nope"]}));
        assert_eq!(e.code(), "invalid_params");
        assert!(e.to_string().contains("`policy_types[0]`"), "{e}");
        let e = err(
            RunType::InventorySync,
            json!({"policy_types": ["DeviceConfigurations"]}),
        );
        assert!(
            e.to_string().contains("did you mean `deviceConfigurations`"),
            "{e}"
        );
        let e = err(RunType::InventorySync, json!({"policy_types": []}));
        assert_eq!(e.code(), "empty_selection");
        let many: Vec<_> = (0..=MAX_POLICY_TYPES).map(|_| "namedLocations").collect();
        let e = err(RunType::InventorySync, json!({ "policy_types": many }));
        assert_eq!(e.code(), "param_limit_exceeded");
        assert!(e.to_string().contains("64"), "{e}");
    }

    #[test]
    fn policy_ids_need_known_type_and_strict_id() {
        let v = validate(
            RunType::BackupSetAddPolicies,
            &json!({"policy_ids": ["namedLocations/1", "namedLocations/1", "deviceConfigurations/a-b_c.d"]}),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"policy_ids": ["deviceConfigurations/a-b_c.d", "namedLocations/1"]})
        );
        for bad in [
            "nope",
            "nope/1",
            "namedLocations/",
            "namedLocations/a b",
            "namedLocations/a\u{0}b",
            "namedLocations/ab\u{202e}",
            " namedLocations/1",
            "namedLocations/1/2",
            "namedLocations/é",
        ] {
            let e = err(RunType::BackupSetAddPolicies, json!({ "policy_ids": [bad] }));
            assert_eq!(e.code(), "invalid_params", "{bad:?}");
            assert!(e.to_string().contains("`policy_ids[0]`"), "{e}");
            assert!(
                !e.to_string().contains('\u{202e}'),
                "control characters are escaped: {e}"
            );
        }
        let long = format!("namedLocations/{}", "a".repeat(MAX_ID_LEN + 1));
        assert_eq!(
            err(RunType::BackupSetAddPolicies, json!({ "policy_ids": [long] })).code(),
            "invalid_params"
        );
        let ok = format!("namedLocations/{}", "a".repeat(MAX_ID_LEN));
        assert!(validate(RunType::BackupSetAddPolicies, &json!({ "policy_ids": [ok] })).is_ok());
    }

    #[test]
    fn case_variant_ids_are_refused() {
        let e = err(
            RunType::BackupSetAddPolicies,
            json!({"policy_ids": ["namedLocations/abc", "namedLocations/ABC"]}),
        );
        assert!(e.to_string().contains("`policy_ids[1]`"), "{e}");
        assert!(e.to_string().contains("letter case"), "{e}");
    }

    #[test]
    fn listed_parameters_are_typed_by_their_kind() {
        let listed = serde_json::to_value(specs(RunType::InventorySync)).unwrap();
        assert_eq!(listed[0]["name"], "policy_types");
        assert_eq!(listed[0]["type"], "string[]");
        // Null is the default: dropped, so it equals leaving the parameter out.
        assert_eq!(
            validate(RunType::InventorySync, &json!({"policy_types": null})).unwrap(),
            json!({})
        );
    }

    #[test]
    fn restore_params_are_ids_and_flags() {
        let set = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let v = validate(
            RunType::BackupSetRestore,
            &json!({"backup_set_id": set, "item_ids": [set, set], "dry_run": true, "create_missing_groups": false}),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"backup_set_id": set, "item_ids": [set], "dry_run": true}),
            "false is the default, so it is dropped"
        );
        assert_eq!(
            validate(RunType::BackupSetRestore, &json!({"dry_run": false})).unwrap(),
            validate(RunType::BackupSetRestore, &json!({})).unwrap()
        );
        for bad in [
            json!({"backup_set_id": set.to_uppercase()}),
            json!({"backup_set_id": "x"}),
            json!({"backup_set_id": 1}),
            json!({"item_ids": ["nope"]}),
            json!({"dry_run": "true"}),
            json!({"dry_run": 1}),
        ] {
            assert_eq!(
                err(RunType::BackupSetRestore, bad.clone()).code(),
                "invalid_params",
                "{bad}"
            );
        }
        assert_eq!(
            err(RunType::BackupSetRestore, json!({"item_ids": []})).code(),
            "empty_selection"
        );
    }

    #[test]
    fn backup_set_updates_keep_false_and_empty_and_need_a_change() {
        let set = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let v = validate(
            RunType::BackupSetUpdate,
            &json!({"backup_set_id": set, "name": "  Quarterly  ", "label": "", "retention_locked": false}),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"backup_set_id": set, "name": "Quarterly", "label": "", "retention_locked": false}),
            "false unlocks and \"\" clears: neither is a default to drop; names are trimmed"
        );
        let e = err(RunType::BackupSetUpdate, json!({"backup_set_id": set}));
        assert_eq!(e.code(), "missing_param");
        assert!(
            e.to_string().contains("`name`, `label`, `retention_locked`"),
            "{e}"
        );
        // Nulls are "unchanged": still nothing to do.
        let e = err(
            RunType::BackupSetUpdate,
            json!({"backup_set_id": set, "name": null}),
        );
        assert_eq!(e.code(), "missing_param");
        assert_eq!(
            err(RunType::BackupSetUpdate, json!({"name": "x"})).code(),
            "missing_param"
        );
        assert_eq!(
            err(RunType::BackupSetDelete, json!({})).code(),
            "missing_param",
            "a delete names its set"
        );
        assert_eq!(
            validate(RunType::BackupSetDelete, &json!({"backup_set_id": set})).unwrap(),
            json!({"backup_set_id": set})
        );
        assert_eq!(
            err(
                RunType::BackupSetDelete,
                json!({"backup_set_id": set, "name": "x"})
            )
            .code(),
            "unknown_param"
        );
    }

    #[test]
    fn display_texts_are_bounded_and_readable() {
        let set = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let update = |field: &str, v: Value| {
            validate(RunType::BackupSetUpdate, &json!({"backup_set_id": set, field: v}))
        };
        let max = "é".repeat(MAX_DISPLAY_TEXT_CHARS);
        assert_eq!(
            update("name", json!(max)).unwrap()["name"],
            json!(max),
            "characters, not bytes"
        );
        assert_eq!(
            update("label", json!("   ")).unwrap()["label"],
            "",
            "blank clears a label"
        );
        for bad in [
            json!(""),
            json!("   "),
            json!("é".repeat(MAX_DISPLAY_TEXT_CHARS + 1)),
            json!("a\nb"),
            json!("a\u{0}b"),
            json!("a\u{7f}b"),
            json!("evil\u{202e}txt.exe"),
            json!("zero\u{200b}width"),
            json!("soft\u{00ad}hyphen"),
            json!("line\u{2028}separator"),
            json!("tag\u{e0041}"),
            json!(1),
            json!(["a"]),
        ] {
            let e = update("name", bad.clone()).unwrap_err();
            assert_eq!(e.code(), "invalid_params", "{bad}");
            assert!(e.to_string().contains("`name`"), "{e}");
            assert!(!e.to_string().contains('\u{202e}'), "shown escaped: {e}");
        }
        assert_eq!(
            update("label", json!("x".repeat(MAX_DISPLAY_TEXT_CHARS + 1)))
                .unwrap_err()
                .code(),
            "invalid_params"
        );
        for bad in [json!("true"), json!(0), json!(null)] {
            // null is "unchanged": with nothing else, nothing to do.
            let e = update("retention_locked", bad.clone()).unwrap_err();
            assert!(
                matches!(e.code(), "invalid_params" | "missing_param"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            update("retention_locked", json!(true)).unwrap()["retention_locked"],
            true
        );
        let listed = serde_json::to_value(specs(RunType::BackupSetUpdate)).unwrap();
        let types: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["string", "string", "string", "boolean"]);
    }

    #[test]
    fn bad_params_are_named() {
        let e = err(RunType::InventorySync, json!({"total": 3}));
        assert_eq!(e.code(), "unknown_param");
        assert!(e.to_string().contains("`total`"), "{e}");
        assert!(validate(RunType::InventorySync, &json!({"policy_types": "x"})).is_err());
        assert!(validate(RunType::InventorySync, &json!({"policy_types": [""]})).is_err());
        assert!(validate(RunType::InventorySync, &json!({"policy_types": [1]})).is_err());
        assert_eq!(
            validate(RunType::InventorySync, &json!([1])),
            Err(ParamError::NotAnObject)
        );
        let huge = "x".repeat(2_000_000);
        let e = err(RunType::InventorySync, json!({ "policy_types": [huge] }));
        assert!(e.to_string().len() < 400, "errors never echo a whole input");
    }
}

#[cfg(test)]
mod blank_fillers {
    use super::check_display_text;

    #[test]
    fn fillers_that_render_blank_are_refused() {
        for c in ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'] {
            assert!(check_display_text(&format!("g{c}"), 1, 200).is_err(), "{:?}", c);
        }
        assert_eq!(check_display_text(" gold ", 1, 200).unwrap(), "gold");
    }
}
