//! `folder:PATH` — a tenant read from a folder of exported JSON (the
//! IntuneManagement layout, or a flat folder of Graph JSON), and written as
//! a restore target in the same layout.
//!
//! Rules (the README states them too):
//! - folders are read recursively (symlinks are not followed; hidden files
//!   are skipped); files not named `*.json` (LICENSE, README…) are ignored;
//! - text is UTF-8, UTF-8 with a BOM, or UTF-16LE/BE with a BOM ([`decode`]);
//! - a file's type comes from its nearest type folder's name, else its
//!   `@odata.type`, else its `@odata.context`, else its shape ([`classify`]);
//!   a Graph collection answer saved whole (`value: [...]`) is one item per element;
//! - a file that cannot be read is a failure naming its path and the reason,
//!   and the rest is read: within its type when its type is known (the type
//!   is then read but not complete), else as an unattributed failure;
//! - an item without an `id` gets a stable id from its type and name;
//! - two files with one id in one type are failures naming each other,
//!   unless `MigrationTable.json` (anywhere in the tree) gives the id to one
//!   of them by name: that one is read, the others are failures;
//! - `Groups/`, the named locations, the assignment filters and
//!   `MigrationTable.json` form the directory;
//! - a type with no type folder and no file is not exposed;
//! - `<name>_Settings.json` beside an Administrative Template `<name>.json`
//!   holds its `definitionValues`.

pub mod classify;
pub mod decode;
pub mod scan;
pub mod write;

use crate::{Directory, DirectoryEntry, DirectoryKind, Page, Policy, PolicyType, Provider, ProviderError};
use async_trait::async_trait;
use opsledger_core::policy_types;
use scan::{Item, Scan};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Items per page of a folder type.
pub const PAGE_SIZE: usize = 100;

pub struct FolderProvider {
    root: PathBuf,
    /// The last scan; cleared by every write so the next read sees it.
    scan: Mutex<Option<Arc<Scan>>>,
}

impl FolderProvider {
    pub fn new(root: impl Into<PathBuf>) -> FolderProvider {
        FolderProvider {
            root: root.into(),
            scan: Mutex::new(None),
        }
    }

    /// The folder read (once per provider until a write).
    pub async fn scanned(&self) -> Result<Arc<Scan>, ProviderError> {
        let mut guard = self.scan.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let root = self.root.clone();
        let s = tokio::task::spawn_blocking(move || scan::scan(&root))
            .await
            .map_err(|e| ProviderError::Unavailable(format!("folder read interrupted: {e}")))?
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let s = Arc::new(s);
        *guard = Some(s.clone());
        Ok(s)
    }

    async fn invalidate(&self) {
        *self.scan.lock().await = None;
    }

    fn known_type(policy_type: &str) -> Result<&'static policy_types::PolicyTypeInfo, ProviderError> {
        policy_types::lookup(policy_type).ok_or_else(|| ProviderError::UnknownType(policy_type.to_owned()))
    }

    async fn item(&self, policy_type: &str, id: &str) -> Result<Item, ProviderError> {
        let s = self.scanned().await?;
        s.items
            .get(policy_type)
            .and_then(|items| items.iter().find(|i| i.id.eq_ignore_ascii_case(id)))
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("{policy_type}/{id}")))
    }
}

fn policy_of(i: &Item) -> Policy {
    Policy {
        id: i.id.clone(),
        display_name: i.display_name.clone(),
        payload: i.payload.clone(),
    }
}

#[async_trait]
impl Provider for FolderProvider {
    async fn check_access(&self) -> Result<(), ProviderError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            if !root.is_dir() {
                return Err(ProviderError::Unavailable(format!(
                    "folder `{}` does not exist or is not a directory",
                    root.display()
                )));
            }
            std::fs::read_dir(&root).map(|_| ()).map_err(|e| {
                ProviderError::Unavailable(format!("folder `{}` cannot be read: {e}", root.display()))
            })
        })
        .await
        .map_err(|e| ProviderError::Unavailable(format!("folder check interrupted: {e}")))?
    }

    async fn policy_types(&self) -> Result<Vec<PolicyType>, ProviderError> {
        let s = self.scanned().await?;
        Ok(policy_types::POLICY_TYPES
            .iter()
            .filter(|t| s.exposed.contains(t.key))
            .map(PolicyType::from_info)
            .collect())
    }

    async fn unattributed_failures(&self) -> Result<Vec<crate::ItemFailure>, ProviderError> {
        Ok(self.scanned().await?.unattributed.clone())
    }

    async fn list_page(&self, policy_type: &str, page: Option<&str>) -> Result<Page, ProviderError> {
        Self::known_type(policy_type)?;
        let s = self.scanned().await?;
        if !s.exposed.contains(policy_type) {
            return Err(ProviderError::UnknownType(format!(
                "{policy_type} (this folder has no such type)"
            )));
        }
        let offset: usize = match page {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| ProviderError::Malformed(format!("bad page token `{t}`")))?,
        };
        let all = s.items.get(policy_type).map(Vec::as_slice).unwrap_or_default();
        let end = (offset + PAGE_SIZE).min(all.len());
        Ok(Page {
            items: all
                .get(offset..end)
                .unwrap_or_default()
                .iter()
                .map(policy_of)
                .collect(),
            next: (end < all.len()).then(|| end.to_string()),
            // A type's unreadable files come with its first page, once.
            failures: if offset == 0 {
                s.failures.get(policy_type).cloned().unwrap_or_default()
            } else {
                Vec::new()
            },
        })
    }

    async fn get_policy(&self, policy_type: &str, id: &str) -> Result<Policy, ProviderError> {
        Self::known_type(policy_type)?;
        self.item(policy_type, id).await.map(|i| policy_of(&i))
    }

    async fn directory(&self) -> Result<Directory, ProviderError> {
        Ok(self.scanned().await?.directory.clone())
    }

    async fn create_directory_object(
        &self,
        kind: DirectoryKind,
        display_name: &str,
    ) -> Result<DirectoryEntry, ProviderError> {
        if kind != DirectoryKind::Group {
            return Err(ProviderError::UnsupportedType(format!(
                "a {} is created as a policy of type {}",
                kind.as_str(),
                kind.policy_type().unwrap_or("?")
            )));
        }
        let entry = write::create_group(&self.root, display_name).await?;
        self.invalidate().await;
        Ok(entry)
    }

    async fn create_policy(&self, policy_type: &str, body: &Value) -> Result<Policy, ProviderError> {
        let info = Self::known_type(policy_type)?;
        let policy = write::create_policy(&self.root, info, body).await?;
        self.invalidate().await;
        Ok(policy)
    }

    async fn update_policy(
        &self,
        policy_type: &str,
        id: &str,
        body: &Value,
    ) -> Result<Policy, ProviderError> {
        Self::known_type(policy_type)?;
        let existing = self.item(policy_type, id).await?;
        let policy = write::update_policy(&self.root, &existing, body).await?;
        self.invalidate().await;
        Ok(policy)
    }

    async fn assign(&self, policy_type: &str, id: &str, assignments: &[Value]) -> Result<(), ProviderError> {
        Self::known_type(policy_type)?;
        let existing = self.item(policy_type, id).await?;
        write::assign(&self.root, &existing, assignments).await?;
        self.invalidate().await;
        Ok(())
    }
}
