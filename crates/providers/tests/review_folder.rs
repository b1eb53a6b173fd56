//! A hostile review of the folder provider: inputs its authors had not
//! tried. Each test names the rule it holds the provider to.

use opsledger_providers::folder::FolderProvider;
use opsledger_providers::{ItemFailure, Policy, Provider};
use serde_json::{Value, json};
use std::path::Path;

async fn read_type(p: &dyn Provider, t: &str) -> (Vec<Policy>, Vec<ItemFailure>) {
    let (mut items, mut failures, mut page) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let got = p.list_page(t, page.as_deref()).await.unwrap();
        items.extend(got.items);
        failures.extend(got.failures);
        match got.next {
            Some(n) => page = Some(n),
            None => return (items, failures),
        }
    }
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Creating policies that share a display name (a restore of an export with
/// two "Baseline" profiles, or the same backup restored twice) must give each
/// its own file: none may overwrite another.
#[tokio::test]
async fn policies_with_one_display_name_never_overwrite_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let p = FolderProvider::new(tmp.path());
    let mut ids = Vec::new();
    for n in 0..4 {
        let body = json!({"@odata.type": "#microsoft.graph.conditionalAccessPolicy",
                          "displayName": "Baseline", "state": format!("s{n}")});
        ids.push(
            p.create_policy("conditionalAccessPolicies", &body)
                .await
                .unwrap()
                .id,
        );
    }
    let reread = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&reread, "conditionalAccessPolicies").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(items.len(), 4, "every created policy has its own file");
    for id in &ids {
        reread.get_policy("conditionalAccessPolicies", id).await.unwrap();
    }
}

/// A display name is cut to a file name the file system accepts: a long
/// name in a script with multi-byte characters (Japanese, Cyrillic…) is
/// still written.
#[tokio::test]
async fn a_long_non_ascii_display_name_can_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let p = FolderProvider::new(tmp.path());
    let name = "条件付きアクセス".repeat(12); // 96 characters, 288 bytes
    let body = json!({"@odata.type": "#microsoft.graph.conditionalAccessPolicy", "displayName": name});
    let created = p.create_policy("conditionalAccessPolicies", &body).await.unwrap();
    let back = FolderProvider::new(tmp.path())
        .get_policy("conditionalAccessPolicies", &created.id)
        .await
        .unwrap();
    assert_eq!(back.display_name, name);
    // An Administrative Template's companion adds `_Settings` to the name.
    let body = json!({"displayName": "Ω".repeat(140), "definitionValues": [{"enabled": true}]});
    p.create_policy("groupPolicyConfigurations", &body).await.unwrap();
}

/// "Every file is read or reported": a policy file deeper than the walk's
/// depth limit is not silently left out (the type would read as complete).
#[tokio::test]
async fn a_file_below_the_depth_limit_is_reported_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().join("ConditionalAccess");
    for n in 0..40 {
        dir = dir.join(format!("d{n}"));
    }
    write_json(&dir.join("deep.json"), &json!({"id": "a", "displayName": "deep"}));
    write_json(
        &tmp.path().join("ConditionalAccess/top.json"),
        &json!({"id": "b", "displayName": "top"}),
    );
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "conditionalAccessPolicies").await;
    let unattributed = p.unattributed_failures().await.unwrap();
    assert!(
        items.len() == 2 || !failures.is_empty() || !unattributed.is_empty(),
        "deep.json was neither read nor reported: items {items:?}"
    );
}

/// "Symlinks are not followed" must not mean "silently skipped": a linked
/// policy file is named as not read, so its type is not complete.
#[tokio::test]
async fn a_symlinked_policy_file_is_reported_not_silently_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_json(
        &outside.path().join("real.json"),
        &json!({"id": "a", "displayName": "linked"}),
    );
    write_json(
        &tmp.path().join("ConditionalAccess/plain.json"),
        &json!({"id": "b", "displayName": "plain"}),
    );
    std::os::unix::fs::symlink(
        outside.path().join("real.json"),
        tmp.path().join("ConditionalAccess/linked.json"),
    )
    .unwrap();
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "conditionalAccessPolicies").await;
    assert_eq!(items.len(), 1, "the link is not followed");
    assert_eq!(
        failures.iter().map(|f| f.source.as_str()).collect::<Vec<_>>(),
        ["ConditionalAccess/linked.json"],
        "the linked file is named as not read"
    );
}

/// What held: odd encodings are each reported with a code, never read as
/// an empty or half policy.
#[tokio::test]
async fn odd_encodings_are_each_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ConditionalAccess");
    std::fs::create_dir_all(&ca).unwrap();
    let text = r#"{"id": "x", "displayName": "y"}"#;
    let utf16_nobom: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut utf32 = vec![0xFF, 0xFE, 0, 0];
    for c in text.chars() {
        utf32.extend_from_slice(&(c as u32).to_le_bytes());
    }
    let mut bom_bad = vec![0xEF, 0xBB, 0xBF];
    bom_bad.extend_from_slice(b"{\"displayName\": \"\xC3\x28\"}");
    for (name, bytes) in [
        ("empty.json", Vec::new()),
        ("bom-only.json", vec![0xEF, 0xBB, 0xBF]),
        ("utf16-bom-only.json", vec![0xFF, 0xFE]),
        ("utf16-nobom.json", utf16_nobom),
        ("utf32.json", utf32),
        ("bom-bad.json", bom_bad),
        ("nul.json", b"{\"displayName\": \"a\0b\"}".to_vec()),
        (
            "deep.json",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ),
    ] {
        std::fs::write(ca.join(name), bytes).unwrap();
    }
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "conditionalAccessPolicies").await;
    assert!(items.is_empty(), "{items:?}");
    let mut got: Vec<(String, String)> = failures
        .iter()
        .map(|f| (f.source.clone(), f.code.clone()))
        .collect();
    got.sort();
    assert_eq!(got.len(), 8, "{got:?}");
}

/// What held: a display name that is a path is a file name, inside the
/// type's folder.
#[tokio::test]
async fn a_display_name_cannot_write_outside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tenant");
    std::fs::create_dir_all(&root).unwrap();
    let p = FolderProvider::new(&root);
    for name in [
        "../../etc/passwd",
        "..",
        "/abs/olute",
        "..\\..\\win",
        "a\0b",
        ".hidden",
    ] {
        let body = json!({"displayName": name, "@odata.type": "#microsoft.graph.conditionalAccessPolicy"});
        p.create_policy("conditionalAccessPolicies", &body).await.unwrap();
    }
    for e in walkdir::WalkDir::new(tmp.path()).min_depth(1) {
        let e = e.unwrap();
        assert!(e.path().starts_with(&root), "{}", e.path().display());
    }
    let (items, failures) = read_type(&FolderProvider::new(&root), "conditionalAccessPolicies").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        items.len(),
        6,
        "a `.hidden` name must not become a hidden, skipped file"
    );
}

/// A Graph collection saved whole, with one element of no known type and
/// one Conditional Access policy: the policy is read (or its type is marked
/// incomplete), not dropped with the file while its type reads as covered.
#[tokio::test]
async fn one_bad_element_does_not_hide_the_others_types() {
    let tmp = tempfile::tempdir().unwrap();
    write_json(
        &tmp.path().join("ConditionalAccess/ca1.json"),
        &json!({"id": "ca1", "displayName": "CA1"}),
    );
    write_json(
        &tmp.path().join("dump.json"),
        &json!({"value": [
            {"@odata.type": "#microsoft.graph.conditionalAccessPolicy", "id": "ca2", "displayName": "CA2"},
            {"something": "else"}
        ]}),
    );
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "conditionalAccessPolicies").await;
    assert!(
        items.len() == 2 || !failures.is_empty(),
        "CA2 was dropped and conditionalAccessPolicies reads complete: {items:?}; unattributed {:?}",
        p.unattributed_failures().await.unwrap()
    );
}
