//! A tenant's directory: the objects policies refer to by id (groups, named
//! locations, assignment filters), with their display names, so references
//! can be stored, compared and restored by name across tenants.

use serde::{Deserialize, Serialize};

/// What a directory object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    /// An Entra group (directory only: not a policy type).
    Group,
    /// A Conditional Access named location (also the `namedLocations` policy type).
    NamedLocation,
    /// An Intune assignment filter (also the `assignmentFilters` policy type).
    AssignmentFilter,
}

impl DirectoryKind {
    pub const ALL: [DirectoryKind; 3] = [
        DirectoryKind::Group,
        DirectoryKind::NamedLocation,
        DirectoryKind::AssignmentFilter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DirectoryKind::Group => "group",
            DirectoryKind::NamedLocation => "named_location",
            DirectoryKind::AssignmentFilter => "assignment_filter",
        }
    }

    /// The policy type that also holds these objects, if any.
    pub fn policy_type(self) -> Option<&'static str> {
        match self {
            DirectoryKind::Group => None,
            DirectoryKind::NamedLocation => Some("namedLocations"),
            DirectoryKind::AssignmentFilter => Some("assignmentFilters"),
        }
    }
}

/// One directory object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub kind: DirectoryKind,
    pub id: String,
    pub display_name: String,
}

/// A tenant's directory, read whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub entries: Vec<DirectoryEntry>,
    /// Ids the source itself gave more than one name, and which name won
    /// (an export's `MigrationTable.json`): stored with a backup so a
    /// restore can say which name it mapped such a reference by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_decisions: Vec<NameDecision>,
}

/// One id the source named twice, and the name that was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameDecision {
    pub kind: DirectoryKind,
    pub id: String,
    /// The name the id stands for (the directory entry's).
    pub chosen: String,
    /// The other names files of the source gave the same id.
    pub passed_over: Vec<String>,
    /// What decided (e.g. `MigrationTable.json`).
    pub decided_by: String,
}

impl Directory {
    /// The object with this id (ids are unique across kinds in Entra).
    pub fn by_id(&self, id: &str) -> Option<&DirectoryEntry> {
        self.entries.iter().find(|e| e.id.eq_ignore_ascii_case(id))
    }

    /// The objects of a kind with this display name (trimmed,
    /// case-insensitive). More than one is ambiguous: callers must not guess.
    pub fn by_name(&self, kind: DirectoryKind, name: &str) -> Vec<&DirectoryEntry> {
        let name = name.trim();
        self.entries
            .iter()
            .filter(|e| e.kind == kind && e.display_name.trim().eq_ignore_ascii_case(name))
            .collect()
    }

    /// Adds an entry unless one with its id is already known.
    pub fn insert(&mut self, entry: DirectoryEntry) {
        if self.by_id(&entry.id).is_none() {
            self.entries.push(entry);
        }
    }

    /// The decision behind an id's name, when the source named it twice.
    pub fn name_decision(&self, id: &str) -> Option<&NameDecision> {
        self.name_decisions.iter().find(|d| d.id.eq_ignore_ascii_case(id))
    }

    /// The id → name view the core normalizer resolves references with.
    pub fn names(&self) -> opsledger_core::normalize::Names {
        let mut names = opsledger_core::normalize::Names::default();
        for e in &self.entries {
            names.insert(&e.id, e.kind.as_str(), &e.display_name);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_id_and_by_trimmed_case_insensitive_name() {
        let mut d = Directory::default();
        d.insert(DirectoryEntry {
            kind: DirectoryKind::Group,
            id: "A1".into(),
            display_name: "All Staff".into(),
        });
        d.insert(DirectoryEntry {
            kind: DirectoryKind::Group,
            id: "a1".into(),
            display_name: "dup".into(),
        });
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.by_id("a1").unwrap().display_name, "All Staff");
        assert_eq!(d.by_name(DirectoryKind::Group, " all staff ").len(), 1);
        assert!(d.by_name(DirectoryKind::NamedLocation, "All Staff").is_empty());
    }
}
