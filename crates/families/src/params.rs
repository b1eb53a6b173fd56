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
        _ => &[],
    }
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
    if t == RunType::InventorySync
        && let Some(v) = map.get("policy_types")
    {
        {
            let list = v.as_array().ok_or(ParamError::Invalid {
                param: "policy_types",
                message: "must be a list of policy type names".into(),
            })?;
            let mut names: Vec<String> = Vec::new();
            for item in list {
                let name = item
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or(ParamError::Invalid {
                        param: "policy_types",
                        message: "every entry must be a non-empty string".into(),
                    })?;
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            out.insert("policy_types".into(), names.into());
        }
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
