//! `opsledger fake-graph`: a fake Microsoft Graph on loopback serving one
//! tenant read from another provider (`--demo PROFILE` or `--folder PATH`),
//! so a node can exercise the real `graph:` path (tokens, paging at 25, the
//! request budget) without a Microsoft tenant. It accepts the app named by
//! `OPSLEDGER_GRAPH_CLIENT_ID` and `OPSLEDGER_GRAPH_CLIENT_SECRET`, the
//! same variables the node reads.

use anyhow::{Context, Result};
use opsledger_fakegraph::{FakeGraph, Model, Tenant};
use opsledger_providers::{DirectoryKind, Provider, ProviderSettings};
use serde_json::{Value, json};

/// Every policy of every type, whole, and the groups of `provider`.
async fn tenant_of(provider: &dyn Provider) -> Result<Tenant> {
    let mut tenant = Tenant::default();
    for t in provider.policy_types().await? {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = provider
                .list_page(&t.key, next.as_deref())
                .await
                .with_context(|| format!("reading {}", t.key))?;
            for p in page.items {
                items.push(provider.get_policy(&t.key, &p.id).await?.payload);
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        tenant = tenant.with(&t.graph_path, items);
    }
    let groups: Vec<Value> = provider
        .directory()
        .await?
        .entries
        .into_iter()
        .filter(|e| e.kind == DirectoryKind::Group)
        .map(|e| json!({"id": e.id, "displayName": e.display_name}))
        .collect();
    Ok(tenant.with_groups(groups))
}

pub async fn run(spec: &str, tenant_id: &str, listen: &str) -> Result<()> {
    let client_id =
        std::env::var("OPSLEDGER_GRAPH_CLIENT_ID").context("OPSLEDGER_GRAPH_CLIENT_ID is not set")?;
    let secret =
        std::env::var("OPSLEDGER_GRAPH_CLIENT_SECRET").context("OPSLEDGER_GRAPH_CLIENT_SECRET is not set")?;
    let source = opsledger_providers::open(spec, tenant_id, tenant_id, &ProviderSettings::default())
        .with_context(|| format!("provider `{spec}` cannot be used"))?;
    let tenant = tenant_of(source.as_ref()).await?;
    let policies: usize = tenant.collections.values().map(Vec::len).sum();
    let model = Model::new(&client_id, &secret).tenant(tenant_id, tenant);
    let fake = FakeGraph::serve(model, listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(
        policies,
        "fake Graph for tenant {tenant_id}: OPSLEDGER_GRAPH_AUTHORITY={} OPSLEDGER_GRAPH_URL={} (provider graph:{tenant_id})",
        fake.authority(),
        fake.graph_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
