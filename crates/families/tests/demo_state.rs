//! Demo writes kept in the database, through the store-backed state: what
//! one node writes into a demo tenant, a second node — its own connection
//! to the database, its own provider — reads; a tenant of the same name in
//! another workspace does not; nothing went to the process's memory.

use opsledger_families::demo_state::provider_settings;
use opsledger_providers::{DirectoryKind, Provider, ProviderSettings};
use opsledger_store::Store;
use opsledger_store::testing::{self, TestStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn open(store: &Store, tenant: &opsledger_store::directory::Tenant) -> Arc<dyn Provider> {
    opsledger_providers::open(
        &tenant.provider,
        &tenant.id,
        &tenant.name,
        &provider_settings(store, Duration::ZERO),
    )
    .unwrap()
}

async fn all(p: &dyn Provider, t: &str) -> Vec<opsledger_providers::Policy> {
    let (mut items, mut page) = (Vec::new(), None);
    loop {
        let got = p.list_page(t, page.as_deref()).await.unwrap();
        items.extend(got.items);
        match got.next {
            Some(n) => page = Some(n),
            None => return items,
        }
    }
}

async fn written_by_one_node_read_by_another(db: TestStore) {
    let ws = db.store.create_workspace("msp").await.unwrap().id;
    let tenant = db
        .store
        .create_tenant(&ws, "demo-state-contoso", "demo:healthy")
        .await
        .unwrap();
    let t = "configurationPolicies";

    // Node 1 restores into the tenant: a group, an updated policy, a new one, its assignments.
    let one = open(&db.store, &tenant);
    let generated = all(one.as_ref(), t).await;
    let group = one
        .create_directory_object(DirectoryKind::Group, "Restored Group")
        .await
        .unwrap();
    let mut body = generated[0].payload.clone();
    body["name"] = json!("Updated on node 1");
    one.update_policy(t, &generated[0].id, &body).await.unwrap();
    let created = one
        .create_policy(
            t,
            &json!({"name": "Created on node 1", "platforms": "windows10", "technologies": "mdm",
                                  "settings": [{"id": "0"}]}),
        )
        .await
        .unwrap();
    one.assign(t, &created.id, &[json!({"target": {"groupId": group.id}})])
        .await
        .unwrap();

    // Node 2: its own connection and provider.
    let other = Store::connect(&db.url).await.unwrap();
    let two = open(&other, &tenant);
    let read = all(two.as_ref(), t).await;
    assert_eq!(read.len(), generated.len() + 1);
    assert_eq!(read[0].display_name, "Updated on node 1");
    assert_eq!(
        read[0].payload["assignments"],
        generated[0].payload["assignments"]
    );
    let whole = two.get_policy(t, &created.id).await.unwrap();
    assert_eq!(whole.payload["settings"], json!([{"id": "0"}]));
    assert_eq!(
        whole.payload["assignments"][0]["target"]["groupId"],
        group.id.as_str()
    );
    let directory = two.directory().await.unwrap();
    assert_eq!(directory.by_id(&group.id).unwrap().display_name, "Restored Group");

    // The same name in another workspace is another tenant, with nothing written.
    let ws2 = other.create_workspace("msp2").await.unwrap().id;
    let twin = other
        .create_tenant(&ws2, "demo-state-contoso", "demo:healthy")
        .await
        .unwrap();
    assert_eq!(all(open(&other, &twin).as_ref(), t).await, generated);
    // Nothing went to the process's memory: a provider without the database sees none of it.
    let memory = opsledger_providers::open(
        "demo:healthy",
        &tenant.id,
        &tenant.name,
        &ProviderSettings::default(),
    )
    .unwrap();
    assert_eq!(all(memory.as_ref(), t).await, generated);
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writes_are_shared_through_the_database_sqlite() {
    written_by_one_node_read_by_another(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writes_are_shared_through_the_database_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    written_by_one_node_read_by_another(db).await;
}
