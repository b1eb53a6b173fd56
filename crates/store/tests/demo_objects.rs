//! Objects written into demo tenants, on both databases: put then get and
//! list, an update replaces in place, tenants and collections are isolated,
//! an unknown tenant is refused, and what was written is there after the
//! store is reopened (a restart, or another node).

mod common;
use common::world;
use opsledger_store::clock::ManualClock;
use opsledger_store::demo_objects::DemoObject;
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{Store, StoreError, both_backends};
use serde_json::json;
use std::sync::Arc;

fn ids(objects: &[DemoObject]) -> Vec<&str> {
    objects.iter().map(|o| o.id.as_str()).collect()
}

both_backends!(
    put_then_get_and_list_in_first_write_order,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let w = world(&store, 1).await;
        let t = &w.tenants[0];
        // Written in this order, with ids that sort the other way.
        for (id, n) in [("c", 1), ("b", 2), ("a", 3)] {
            store
                .put_demo_object(t, "deviceConfigurations", id, &json!({"id": id, "n": n}))
                .await
                .unwrap();
            clock.advance(1);
        }
        assert_eq!(
            store.demo_object(t, "deviceConfigurations", "b").await.unwrap(),
            Some(json!({"id": "b", "n": 2}))
        );
        assert_eq!(
            store.demo_object(t, "deviceConfigurations", "z").await.unwrap(),
            None
        );
        let listed = store.demo_objects(t, "deviceConfigurations").await.unwrap();
        assert_eq!(ids(&listed), ["c", "b", "a"]);
        assert_eq!(listed[2].body, json!({"id": "a", "n": 3}));
    }
);

both_backends!(
    an_update_replaces_the_body_and_keeps_the_place,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let w = world(&store, 1).await;
        let t = &w.tenants[0];
        for id in ["first", "second"] {
            store.put_demo_object(t, "x", id, &json!({"v": 1})).await.unwrap();
            clock.advance(1);
        }
        let nested = json!({"v": 2, "settings": [{"id": "0", "value": "é \"quoted\""}]});
        store.put_demo_object(t, "x", "first", &nested).await.unwrap();
        assert_eq!(
            store.demo_object(t, "x", "first").await.unwrap(),
            Some(nested.clone())
        );
        let listed = store.demo_objects(t, "x").await.unwrap();
        assert_eq!(
            ids(&listed),
            ["first", "second"],
            "one row per object, in its place"
        );
        assert_eq!(listed[0].body, nested);
    }
);

both_backends!(tenants_and_collections_are_isolated, |store: Store| async move {
    let w = world(&store, 2).await;
    let (a, b) = (&w.tenants[0], &w.tenants[1]);
    store
        .put_demo_object(a, "groups", "g1", &json!({"t": "a"}))
        .await
        .unwrap();
    store
        .put_demo_object(b, "groups", "g1", &json!({"t": "b"}))
        .await
        .unwrap();
    store
        .put_demo_object(a, "other", "g1", &json!({"t": "a2"}))
        .await
        .unwrap();
    assert_eq!(
        store.demo_object(a, "groups", "g1").await.unwrap(),
        Some(json!({"t": "a"}))
    );
    assert_eq!(
        store.demo_object(b, "groups", "g1").await.unwrap(),
        Some(json!({"t": "b"}))
    );
    assert_eq!(store.demo_objects(a, "groups").await.unwrap().len(), 1);
    assert_eq!(store.demo_objects(b, "other").await.unwrap(), vec![]);
    let refused = store
        .put_demo_object("no-such-tenant", "groups", "g1", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::NotFound { what: "tenant", .. }),
        "{refused:?}"
    );
});

/// Writes, then opens the same database anew (as a restarted node or
/// another node would) and reads them back.
async fn survives_reopening(db: TestStore) {
    let w = world(&db.store, 1).await;
    let t = &w.tenants[0];
    db.store
        .put_demo_object(t, "deviceConfigurations", "p1", &json!({"displayName": "kept"}))
        .await
        .unwrap();
    db.store.close().await;
    let reopened = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        reopened
            .demo_object(t, "deviceConfigurations", "p1")
            .await
            .unwrap(),
        Some(json!({"displayName": "kept"}))
    );
    assert_eq!(
        reopened
            .demo_objects(t, "deviceConfigurations")
            .await
            .unwrap()
            .len(),
        1
    );
    reopened.close().await;
}

#[tokio::test]
async fn demo_objects_survive_reopening_sqlite() {
    survives_reopening(testing::sqlite().await).await;
}

#[tokio::test]
async fn demo_objects_survive_reopening_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    survives_reopening(db).await;
}
