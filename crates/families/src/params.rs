//! Start parameters: validated at the boundary (API, CLI) so a bad start is a
//! 400 with a clear message, never a run that fails later.

use opsledger_core::RunType;
use serde::Serialize;
use serde_json::{Map, Value};

/// One parameter a type accepts, as listed by `GET /api/v1/operation-types`.
#[derive(Debug, Clone, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub required: bool,
    pub default: Option<&'static str>,
    pub description: &'static str,
}

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
    #[error("parameter `{param}`: {message}")]
    Invalid { param: &'static str, message: String },
}

pub fn specs(t: RunType) -> &'static [ParamSpec] {
    match t {
        RunType::InventorySync => &[ParamSpec {
            name: "policy_types",
            kind: "string[]",
            required: false,
            default: Some("every policy type the provider exposes"),
            description: "policy types to read, e.g. [\"deviceConfigurations\"]",
        }],
        RunType::BackupSetAddPolicies => &[ParamSpec {
            name: "policy_ids",
            kind: "string[]",
            required: false,
            default: Some("every inventoried policy of the tenant"),
            description: "policies to capture as `TYPE/ID`, e.g. [\"deviceConfigurations/1b2c…\"]",
        }],
        _ => &[],
    }
}

fn is_name(s: &str) -> bool {
    !s.trim().is_empty()
}

fn is_type_and_id(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(t, id)| !t.trim().is_empty() && !id.trim().is_empty())
}

/// A list of distinct strings, in first-seen order, each of the expected shape.
fn distinct_strings(
    param: &'static str,
    shape: &str,
    v: &Value,
    valid: fn(&str) -> bool,
) -> Result<Vec<String>, ParamError> {
    let list = v.as_array().ok_or_else(|| ParamError::Invalid {
        param,
        message: "must be a list of strings".into(),
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let s = item
            .as_str()
            .filter(|s| valid(s))
            .ok_or_else(|| ParamError::Invalid {
                param,
                message: format!("every entry must be {shape}, got {item}"),
            })?;
        if seen.insert(s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

/// Checks `params` against the type's specs; returns them normalized.
pub fn validate(t: RunType, params: &Value) -> Result<Value, ParamError> {
    let map = match params {
        Value::Null => return Ok(Value::Object(Map::new())),
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
    let mut out = map.clone();
    let list_param = match t {
        RunType::InventorySync => Some(("policy_types", "a policy type name", is_name as fn(&str) -> bool)),
        RunType::BackupSetAddPolicies => {
            Some(("policy_ids", "`TYPE/ID`", is_type_and_id as fn(&str) -> bool))
        }
        _ => None,
    };
    if let Some((param, shape, valid)) = list_param
        && let Some(v) = map.get(param)
    {
        out.insert(param.into(), distinct_strings(param, shape, v, valid)?.into());
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_params_are_fine() {
        assert_eq!(validate(RunType::InventorySync, &Value::Null).unwrap(), json!({}));
        assert_eq!(validate(RunType::InventorySync, &json!({})).unwrap(), json!({}));
    }

    #[test]
    fn policy_types_are_deduplicated_in_order() {
        let v = validate(RunType::InventorySync, &json!({"policy_types": ["b", "a", "b"]})).unwrap();
        assert_eq!(v, json!({"policy_types": ["b", "a"]}));
    }

    #[test]
    fn policy_ids_need_type_and_id() {
        let v = validate(
            RunType::BackupSetAddPolicies,
            &json!({"policy_ids": ["a/1", "a/1", "b/2"]}),
        )
        .unwrap();
        assert_eq!(v, json!({"policy_ids": ["a/1", "b/2"]}));
        let e = validate(RunType::BackupSetAddPolicies, &json!({"policy_ids": ["nope"]})).unwrap_err();
        assert!(e.to_string().contains("`TYPE/ID`"), "{e}");
    }

    #[test]
    fn bad_params_are_named() {
        let e = validate(RunType::InventorySync, &json!({"total": 3})).unwrap_err();
        assert!(e.to_string().contains("`total`"), "{e}");
        assert!(validate(RunType::InventorySync, &json!({"policy_types": "x"})).is_err());
        assert!(validate(RunType::InventorySync, &json!({"policy_types": [""]})).is_err());
        assert_eq!(
            validate(RunType::InventorySync, &json!([1])),
            Err(ParamError::NotAnObject)
        );
    }
}
