//! The folder provider against real exports (`testdata/`, copied from
//! `../shared/data/` with their licenses) and against folders built to hit
//! each rule of the README's "Folder tenants" list.

use opsledger_core::normalize::{Names, content_hash};
use opsledger_providers::folder::FolderProvider;
use opsledger_providers::folder::decode::encode_utf16le_bom;
use opsledger_providers::{DirectoryKind, ItemFailure, Policy, Provider, ProviderError};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

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

async fn type_keys(p: &dyn Provider) -> Vec<String> {
    p.policy_types()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[tokio::test]
async fn the_acsc_export_is_read_whole_by_shape_and_annotation() {
    let p = FolderProvider::new(testdata("acsc-intune-hardening"));
    p.check_access().await.unwrap();
    // No type folders here: the types come from @odata.context and shape.
    assert_eq!(type_keys(&p).await, ["configurationPolicies", "intents"]);
    assert!(
        p.unattributed_failures().await.unwrap().is_empty(),
        "LICENSE and SOURCE are not JSON: ignored"
    );
    let (catalog, failures) = read_type(&p, "configurationPolicies").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(catalog.len(), 6);
    let (intents, _) = read_type(&p, "intents").await;
    assert_eq!(intents.len(), 1);
    assert_eq!(
        intents[0].display_name,
        "ACSC Windows Hardening Guidelines-Attack Surface Reduction"
    );
    // The policy with 300 settings is read whole, through get_policy too.
    let big = catalog
        .iter()
        .find(|p| p.display_name.starts_with("Windows Security Baseline"))
        .unwrap();
    assert_eq!(big.payload["settings"].as_array().unwrap().len(), 300);
    let whole = p.get_policy("configurationPolicies", &big.id).await.unwrap();
    assert_eq!(whole.payload["settings"].as_array().unwrap().len(), 300);
    // It has no id in the export: a stable one derived from type and name.
    let again = FolderProvider::new(testdata("acsc-intune-hardening"));
    let (catalog2, _) = read_type(&again, "configurationPolicies").await;
    let ids = |c: &[Policy]| c.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&catalog), ids(&catalog2));
    assert!(matches!(
        p.list_page("deviceConfigurations", None).await,
        Err(ProviderError::UnknownType(_))
    ));
}

#[tokio::test]
async fn the_conditional_access_export_reads_utf16_files_and_its_directory() {
    let p = FolderProvider::new(testdata("ca-baseline"));
    assert_eq!(
        type_keys(&p).await,
        ["conditionalAccessPolicies", "namedLocations"]
    );
    let u = p.unattributed_failures().await.unwrap();
    assert!(u.is_empty(), "{u:?}");
    // The export holds two pairs of group files sharing an id; its migration
    // table names the owner of each, so the other file is skipped, not failed.
    let superseded = p.scanned().await.unwrap().superseded.clone();
    assert_eq!(superseded.len(), 2, "{superseded:?}");
    let (ca, failures) = read_type(&p, "conditionalAccessPolicies").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ca.len(), 36);
    let (locations, _) = read_type(&p, "namedLocations").await;
    assert_eq!(locations.len(), 3);
    let dir = p.directory().await.unwrap();
    // 36 group files, 34 distinct ids (the same 34 as the migration table).
    let groups = dir
        .entries
        .iter()
        .filter(|e| e.kind == DirectoryKind::Group)
        .count();
    assert_eq!(groups, 34);
    assert_eq!(
        dir.entries
            .iter()
            .filter(|e| e.kind == DirectoryKind::NamedLocation)
            .count(),
        3
    );
    let bg = dir.by_name(DirectoryKind::Group, "ca-breakglassaccounts - exclude");
    assert_eq!(bg.len(), 1);
    // References resolve to names: a policy excluding the break-glass group names it.
    let names = dir.names();
    let uses_break_glass = ca.iter().any(|p| {
        opsledger_core::normalize::normalize(&p.payload, &names)["conditions"]["users"]["excludeGroups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "group:ca-breakglassaccounts - exclude"))
    });
    assert!(uses_break_glass);
}

#[tokio::test]
async fn unreadable_files_are_reported_each_with_its_path_and_the_rest_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&testdata("ca-baseline"), tmp.path());
    let ca = tmp.path().join("Config/ConditionalAccess");
    std::fs::write(ca.join("broken.json"), b"{\"displayName\": \"half").unwrap();
    std::fs::write(ca.join("latin1.json"), b"{\"displayName\": \"caf\xe9\"}").unwrap();
    std::fs::write(ca.join("odd.json"), [0xFF, 0xFE, b'{']).unwrap();
    std::fs::write(ca.join("list.json"), b"[1, 2]").unwrap();
    std::fs::write(ca.join("notes.txt"), b"not json, ignored").unwrap();
    std::fs::write(tmp.path().join("package.json"), b"{\"name\": \"tooling\"}").unwrap();
    let p = FolderProvider::new(tmp.path());
    let (items, mut failures) = read_type(&p, "conditionalAccessPolicies").await;
    assert_eq!(items.len(), 36);
    failures.sort_by(|a, b| a.source.cmp(&b.source));
    let got: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f.source.as_str(), f.code.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("Config/ConditionalAccess/broken.json", "file_json_invalid"),
            ("Config/ConditionalAccess/latin1.json", "file_encoding_invalid"),
            ("Config/ConditionalAccess/list.json", "file_not_an_object"),
            ("Config/ConditionalAccess/odd.json", "file_encoding_invalid"),
        ]
    );
    assert!(failures[0].message.contains("line 1"), "{}", failures[0].message);
    let unattributed = p.unattributed_failures().await.unwrap();
    assert_eq!(unattributed.len(), 1);
    assert_eq!(unattributed[0].source, "package.json");
    assert_eq!(unattributed[0].code, "file_type_unknown");
}

#[tokio::test]
async fn re_encoding_a_file_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&testdata("acsc-intune-hardening"), tmp.path());
    let before = FolderProvider::new(tmp.path());
    let (a, _) = read_type(&before, "configurationPolicies").await;
    // Every UTF-8 file (with or without BOM) rewritten as UTF-16LE with BOM and CRLF.
    for e in walkdir::WalkDir::new(tmp.path()) {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "json") {
            let bytes = std::fs::read(e.path()).unwrap();
            let text = String::from_utf8(bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(&bytes).to_vec())
                .unwrap();
            std::fs::write(e.path(), encode_utf16le_bom(&text)).unwrap();
        }
    }
    let after = FolderProvider::new(tmp.path());
    let (b, failures) = read_type(&after, "configurationPolicies").await;
    assert!(failures.is_empty());
    assert_eq!(a, b);
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
}

#[tokio::test]
async fn duplicate_ids_fail_both_files_unless_the_migration_table_names_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let nl = tmp.path().join("NamedLocations");
    let loc = |name: &str| json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "id": "loc-1", "displayName": name});
    write_json(&nl.join("a.json"), &loc("Allowed countries"));
    write_json(&nl.join("b.json"), &loc("Allowed countries (old)"));
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "namedLocations").await;
    assert!(items.is_empty());
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|f| f.code == "file_duplicate_id"));
    assert!(
        failures[0].message.contains("NamedLocations/b.json"),
        "{}",
        failures[0].message
    );
    assert!(
        failures[1].message.contains("NamedLocations/a.json"),
        "{}",
        failures[1].message
    );

    // The migration table (anywhere in the tree) gives the id to one of them.
    write_json(
        &tmp.path().join("meta/MigrationTable.json"),
        &json!({"Objects": [{"Id": "loc-1", "DisplayName": "Allowed countries", "Type": "NamedLocation"}]}),
    );
    let p = FolderProvider::new(tmp.path());
    let (items, failures) = read_type(&p, "namedLocations").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].display_name, "Allowed countries");
    assert!(failures.is_empty(), "resolved by the table: {failures:?}");
    let superseded = p.scanned().await.unwrap().superseded.clone();
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].source, "NamedLocations/b.json");
}

#[tokio::test]
async fn flat_graph_json_templates_with_companions_and_empty_type_folders() {
    let tmp = tempfile::tempdir().unwrap();
    // A collection answer saved whole.
    write_json(
        &tmp.path().join("dump/deviceConfigurations.json"),
        &json!({"@odata.context": "https://graph.microsoft.com/beta/$metadata#deviceManagement/deviceConfigurations",
                "value": [{"id": "d1", "displayName": "One", "@odata.type": "#microsoft.graph.windows10GeneralConfiguration"},
                          {"id": "d2", "displayName": "Two", "@odata.type": "#microsoft.graph.iosGeneralDeviceConfiguration"}]}),
    );
    // An Administrative Template and its settings beside it.
    let admx = tmp.path().join("AdministrativeTemplates");
    write_json(
        &admx.join("Edge.json"),
        &json!({"id": "g1", "displayName": "Edge"}),
    );
    write_json(
        &admx.join("Edge_Settings.json"),
        &json!([{"enabled": true, "definition@odata.bind": "x/definitions('d')", "presentationValues": []}]),
    );
    std::fs::create_dir_all(tmp.path().join("CompliancePolicies")).unwrap();
    let p = FolderProvider::new(tmp.path());
    assert_eq!(
        type_keys(&p).await,
        [
            "deviceConfigurations",
            "deviceCompliancePolicies",
            "groupPolicyConfigurations"
        ]
    );
    let (d, _) = read_type(&p, "deviceConfigurations").await;
    assert_eq!(d.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["d1", "d2"]);
    let (c, f) = read_type(&p, "deviceCompliancePolicies").await;
    assert!(
        c.is_empty() && f.is_empty(),
        "an empty type folder is a type read with 0 items"
    );
    let edge = p.get_policy("groupPolicyConfigurations", "g1").await.unwrap();
    assert_eq!(edge.payload["definitionValues"][0]["enabled"], true);
}

#[tokio::test]
async fn a_folder_written_by_a_restore_reads_back_equal() {
    let source = FolderProvider::new(testdata("ca-baseline"));
    let tmp = tempfile::tempdir().unwrap();
    let target = FolderProvider::new(tmp.path());
    let names = Names::default();
    let mut written = Vec::new();
    for t in ["namedLocations", "conditionalAccessPolicies"] {
        let (items, _) = read_type(&source, t).await;
        for item in items {
            let whole = source.get_policy(t, &item.id).await.unwrap();
            let created = target.create_policy(t, &whole.payload).await.unwrap();
            if let Some(a) = whole.payload.get("assignments").and_then(Value::as_array) {
                target.assign(t, &created.id, a).await.unwrap();
            }
            written.push((t, created.id, content_hash(&whole.payload, &names)));
        }
    }
    let group = target
        .create_directory_object(DirectoryKind::Group, "CA-BreakGlassAccounts - Exclude")
        .await
        .unwrap();
    assert_eq!(written.len(), 39);
    let reread = FolderProvider::new(tmp.path());
    assert_eq!(
        type_keys(&reread).await,
        ["conditionalAccessPolicies", "namedLocations"]
    );
    for (t, id, hash) in &written {
        let back = reread.get_policy(t, id).await.unwrap();
        assert_eq!(&content_hash(&back.payload, &names), hash, "{t}/{id}");
    }
    assert_eq!(
        reread
            .directory()
            .await
            .unwrap()
            .by_id(&group.id)
            .unwrap()
            .display_name,
        group.display_name
    );
    assert!(
        tmp.path().join("ConditionalAccess").is_dir(),
        "the IntuneManagement layout"
    );
    // An update replaces the body and keeps the assignments.
    let (t, id, _) = &written[5];
    let mut body = reread.get_policy(t, id).await.unwrap().payload;
    body["state"] = json!("disabled");
    reread.update_policy(t, id, &body).await.unwrap();
    assert_eq!(
        reread.get_policy(t, id).await.unwrap().payload["state"],
        "disabled"
    );
}

#[tokio::test]
async fn a_missing_folder_is_a_precondition_not_an_empty_tenant() {
    let p = FolderProvider::new("/nonexistent/export");
    let e = p.check_access().await.unwrap_err();
    assert!(e.is_precondition(), "{e}");
    assert!(p.policy_types().await.unwrap_err().is_precondition());
}
