//! A hostile review of the normalizer: two policies that mean different
//! things must not hash equal (a false "unchanged"), and two reads of one
//! policy must not hash apart (a false drift).

use opsledger_core::normalize::{Names, content_hash, normalize};
use serde_json::json;

/// An Administrative Template's definition value says *which* setting it
/// sets only through `definition@odata.bind` (IntuneManagement's
/// `_Settings.json`, and what Graph needs to create it). Dropping it as an
/// annotation makes "Turn off Autoplay = enabled" equal "Allow Cortana =
/// enabled".
#[test]
fn admx_values_for_different_definitions_are_different() {
    let names = Names::default();
    let bind = |def: &str| {
        json!({"definitionValues": [{
            "enabled": true,
            "definition@odata.bind": format!("https://graph.microsoft.com/beta/deviceManagement/groupPolicyDefinitions('{def}')"),
            "presentationValues": [{
                "@odata.type": "#microsoft.graph.groupPolicyPresentationValueText",
                "value": "1",
                "presentation@odata.bind": format!("https://graph.microsoft.com/beta/deviceManagement/groupPolicyDefinitions('{def}')/presentations('p1')")
            }]
        }]})
    };
    assert_ne!(
        content_hash(&bind("aaaaaaaa-0000-0000-0000-000000000001"), &names),
        content_hash(&bind("bbbbbbbb-0000-0000-0000-000000000002"), &names),
        "two templates setting different definitions hash equal: {}",
        normalize(&bind("a"), &names)
    );
}

/// Graph types a number by its property, not by how it was written: `1` and
/// `1.0` are one value (PowerShell's ConvertTo-Json and other exporters
/// write integral doubles either way).
#[test]
fn one_and_one_point_zero_are_the_same_value() {
    let names = Names::default();
    assert_eq!(
        content_hash(&json!({"passwordMinimumLength": 1}), &names),
        content_hash(&json!({"passwordMinimumLength": 1.0}), &names)
    );
}

/// An authentication strength is referenced by its `id` alone in the
/// bodies Graph accepts (`grantControls.authenticationStrength: {"id": …}`):
/// two Conditional Access policies requiring different strengths differ.
#[test]
fn a_reference_held_only_by_an_id_member_is_content() {
    let names = Names::default();
    let ca = |strength: &str| {
        json!({"displayName": "Require MFA", "grantControls": {
            "operator": "OR", "authenticationStrength": {"id": strength}}})
    };
    assert_ne!(
        content_hash(&ca("00000000-0000-0000-0000-000000000002"), &names), // multifactor
        content_hash(&ca("00000000-0000-0000-0000-000000000004"), &names), // phishing-resistant
    );
}

/// Order matters in some lists (a settings catalog collection of Edge
/// startup URLs, DNS servers): the README says arrays are order-insensitive,
/// which makes a reorder invisible. Recorded as a known limit.
#[test]
#[ignore = "design limit: arrays are order-insensitive by rule 6"]
fn the_order_of_a_simple_collection_is_content() {
    let names = Names::default();
    let v = |a: &str, b: &str| json!({"simpleSettingCollectionValue": [{"value": a}, {"value": b}]});
    assert_ne!(
        content_hash(&v("https://a", "https://b"), &names),
        content_hash(&v("https://b", "https://a"), &names)
    );
}

/// What held: a value nested deeper than serde_json lets a file be (128;
/// a template's companion merged into its policy adds two levels) normalizes
/// without overflowing the stack. (Values thousands of levels deep, which no
/// input can produce, do overflow it: the normalizer recurses.)
#[test]
fn deep_values_normalize() {
    let names = Names::default();
    let mut v = json!(1);
    for _ in 0..150 {
        v = json!([{"a": v}]);
    }
    let _ = content_hash(&v, &names);
}
