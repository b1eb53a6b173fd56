//! Workspaces, users, memberships (with tenant restrictions) and tokens, on
//! both backends: every refusal is a typed error in words, never a raw
//! constraint message, and the schema itself refuses what the store refuses.

use opsledger_core::access::Role;
use opsledger_store::directory::Membership;
use opsledger_store::{Store, StoreError, both_backends, now_ms, raw_on_pool};

both_backends!(restricted_membership_round_trip, |store: Store| async move {
    let ws = store.create_workspace("ws").await.unwrap();
    assert_eq!(store.get_workspace(&ws.id).await.unwrap(), Some(ws.clone()));
    let a = store.create_tenant(&ws.id, "a", "demo:healthy").await.unwrap().id;
    let b = store.create_tenant(&ws.id, "b", "demo:healthy").await.unwrap().id;
    let user = store.create_user("op@test", "hash").await.unwrap();
    assert_eq!(
        store.find_user_by_email("op@test").await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(store.find_user_by_email("nobody@test").await.unwrap(), None);
    assert_eq!(store.membership(&ws.id, &user.id).await.unwrap(), None);

    // Restricted (duplicates collapse; order does not matter).
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    let m = store
        .add_member(
            &ws.id,
            &user.id,
            Role::Operator,
            &[b.clone(), a.clone(), b.clone()],
        )
        .await
        .unwrap();
    let expected = Membership {
        role: Role::Operator,
        tenants: Some(both),
    };
    assert_eq!(m, expected);
    assert_eq!(store.membership(&ws.id, &user.id).await.unwrap(), Some(expected));

    // Replaced, not added to.
    store
        .add_member(&ws.id, &user.id, Role::Viewer, std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(
        store.membership(&ws.id, &user.id).await.unwrap(),
        Some(Membership {
            role: Role::Viewer,
            tenants: Some(vec![a.clone()]),
        })
    );

    // No tenants: unrestricted.
    store
        .add_member(&ws.id, &user.id, Role::Admin, &[])
        .await
        .unwrap();
    assert_eq!(
        store.membership(&ws.id, &user.id).await.unwrap(),
        Some(Membership {
            role: Role::Admin,
            tenants: None,
        })
    );
});

both_backends!(
    tenant_of_another_workspace_is_refused,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap().id;
        let other = store.create_workspace("other").await.unwrap().id;
        let mine = store.create_tenant(&ws, "mine", "demo:healthy").await.unwrap().id;
        let theirs = store
            .create_tenant(&other, "theirs", "demo:healthy")
            .await
            .unwrap()
            .id;
        let user = store.create_user("op@test", "hash").await.unwrap().id;
        store
            .add_member(&ws, &user, Role::Operator, std::slice::from_ref(&mine))
            .await
            .unwrap();

        let err = store
            .add_member(&ws, &user, Role::Admin, &[mine.clone(), theirs.clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::TenantOutsideWorkspace { tenant_id, workspace_id }
            if *tenant_id == theirs && *workspace_id == ws),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not belong to workspace"), "{err}");
        let err = store
            .add_member(&ws, &user, Role::Admin, &["nope".to_owned()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { what: "tenant", id } if id == "nope"),
            "{err:?}"
        );
        // Refusals changed nothing: not the role, not the restriction.
        assert_eq!(
            store.membership(&ws, &user).await.unwrap(),
            Some(Membership {
                role: Role::Operator,
                tenants: Some(vec![mine.clone()]),
            })
        );

        // The schema refuses it too, whatever writes the row.
        let direct = raw_on_pool!(&store, pool => {
            sqlx::query("INSERT INTO membership_tenants (workspace_id, user_id, tenant_id) VALUES ($1, $2, $3)")
                .bind(&ws)
                .bind(&user)
                .bind(&theirs)
                .execute(pool)
                .await
                .map(|_| ())
        });
        assert!(direct.is_err(), "a tenant of another workspace was stored");
    }
);

both_backends!(expired_token_is_refused, |store: Store| async move {
    let user = store.create_user("op@test", "hash").await.unwrap().id;
    let forever = store.issue_token(&user, "forever").await.unwrap();
    let later = store
        .issue_token_expiring(&user, "later", Some(now_ms() + 3_600_000))
        .await
        .unwrap();
    let past = store
        .issue_token_expiring(&user, "past", Some(now_ms() - 1))
        .await
        .unwrap();
    assert_eq!(store.user_for_token(&forever).await.unwrap(), Some(user.clone()));
    assert_eq!(store.user_for_token(&later).await.unwrap(), Some(user.clone()));
    assert_eq!(store.user_for_token(&past).await.unwrap(), None);

    let short = store
        .issue_token_expiring(&user, "short", Some(now_ms() + 300))
        .await
        .unwrap();
    assert_eq!(store.user_for_token(&short).await.unwrap(), Some(user.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(store.user_for_token(&short).await.unwrap(), None);

    let err = store.issue_token("nobody", "x").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "user", .. }),
        "{err:?}"
    );
});

both_backends!(duplicates_are_typed_conflicts, |store: Store| async move {
    store.create_user("a@test", "hash").await.unwrap();
    let err = store.create_user("a@test", "other").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("a@test"), "{err}");

    let ws = store.create_workspace("ws").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    store.create_tenant(&ws, "contoso", "demo:healthy").await.unwrap();
    let err = store
        .create_tenant(&ws, "contoso", "demo:partial")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("contoso") && msg.contains("already has a tenant"),
        "{msg}"
    );
    // Names are unique per workspace, not globally.
    store
        .create_tenant(&other, "contoso", "demo:healthy")
        .await
        .unwrap();
    assert_eq!(store.list_tenants(&ws).await.unwrap().len(), 1);
});

both_backends!(unknown_workspace_is_typed, |store: Store| async move {
    assert_eq!(store.get_workspace("nope").await.unwrap(), None);
    let err = store
        .create_tenant("nope", "contoso", "demo:healthy")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "workspace", id } if id == "nope"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "workspace `nope` not found");

    let user = store.create_user("op@test", "hash").await.unwrap().id;
    let err = store
        .add_member("nope", &user, Role::Viewer, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotFound {
                what: "workspace",
                ..
            }
        ),
        "{err:?}"
    );
    let ws = store.create_workspace("ws").await.unwrap().id;
    let err = store
        .add_member(&ws, "nobody", Role::Viewer, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "user", .. }),
        "{err:?}"
    );
    assert_eq!(store.membership(&ws, "nobody").await.unwrap(), None);
});
