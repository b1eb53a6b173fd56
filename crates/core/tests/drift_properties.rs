//! Properties of the drift comparison over random policies, each side
//! normalized with its own tenant's directory:
//!
//! - what two reads of one configuration may differ in — array order, the
//!   objects' own ids, the ids of the objects they reference (renamed with
//!   the directory, names kept), OData annotations, timestamps and versions,
//!   an assignment filter written by name instead of by id, "no filter" as
//!   type `none` with a `null` (or all-zero) id or as nothing at all — is
//!   never a finding;
//! - one setting value changed, or one reference pointed at another object
//!   with another name, or one assignment pointed at another filter or
//!   switched between include and exclude, is always exactly one `changed`
//!   finding, for that policy.

use opsledger_core::drift::{Comparison, Evidence, FindingKind, compare};
use opsledger_core::normalize::{FILTER_ID, FILTER_NAME, FILTER_TYPE, Names, normalize};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

const TYPES: &[&str] = &[
    "deviceConfiguration",
    "configurationPolicy",
    "conditionalAccessPolicy",
];

/// A tenant's directory: groups, named locations and assignment filters,
/// `(id, name)`, names distinct within a kind.
#[derive(Debug, Clone)]
struct Directory {
    groups: Vec<(String, String)>,
    locations: Vec<(String, String)>,
    filters: Vec<(String, String)>,
}

impl Directory {
    /// The kinds as the providers' directory names them
    /// (`DirectoryKind::as_str`).
    fn names(&self) -> Names {
        let mut n = Names::default();
        for (id, name) in &self.groups {
            n.insert(id, "group", name);
        }
        for (id, name) in &self.locations {
            n.insert(id, "named_location", name);
        }
        for (id, name) in &self.filters {
            n.insert(id, "assignment_filter", name);
        }
        n
    }

    /// The name of the filter with this id (any case), if it is one.
    fn filter_name(&self, id: &str) -> Option<&str> {
        self.filters
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(id))
            .map(|(_, name)| name.as_str())
    }

    /// The same objects under new ids (another tenant, or a re-created object).
    fn renamed(&self, rng: &mut Rng) -> Directory {
        // Kinds 0x11, 0x12 and 0x13: never an id of the original directory (1, 2 and 3).
        let salt = rng.next() as u32;
        let fresh = |list: &[(String, String)], kind: u32, rng: &mut Rng| {
            list.iter()
                .enumerate()
                .map(|(i, (_, name))| {
                    let id = uuid(salt, kind, i);
                    (
                        if rng.coin() { id.to_ascii_uppercase() } else { id },
                        name.clone(),
                    )
                })
                .collect()
        };
        Directory {
            groups: fresh(&self.groups, 0x11, rng),
            locations: fresh(&self.locations, 0x12, rng),
            filters: fresh(&self.filters, 0x13, rng),
        }
    }

    /// Old id (lowercase) → new id, for every object.
    fn id_map(&self, to: &Directory) -> BTreeMap<String, String> {
        let pairs = self
            .groups
            .iter()
            .zip(&to.groups)
            .chain(self.locations.iter().zip(&to.locations))
            .chain(self.filters.iter().zip(&to.filters));
        pairs
            .map(|((a, _), (b, _))| (a.to_ascii_lowercase(), b.clone()))
            .collect()
    }
}

fn uuid(salt: u32, kind: u32, i: usize) -> String {
    format!("{salt:08x}-{kind:04x}-4000-8000-{i:012x}")
}

/// One policy, abstractly: rendered to Graph JSON by [`render`].
#[derive(Debug, Clone)]
struct Spec {
    policy_type: String,
    /// `displayName`, or `name` (settings catalog).
    name_member: &'static str,
    name: String,
    id: String,
    description: String,
    top: BTreeMap<String, Value>,
    nested: BTreeMap<String, Value>,
    /// Setting definition suffix → value.
    settings: BTreeMap<String, Value>,
    /// Distinct groups.
    assignments: Vec<Assignment>,
    include_groups: Vec<usize>,
    include_all: bool,
    /// Location indices.
    include_locations: Vec<usize>,
}

/// One assignment: a group index and its filter, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assignment {
    group: usize,
    filter: Option<Filter>,
}

/// An assignment filter: a filter index, included or excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Filter {
    index: usize,
    include: bool,
}

fn definition(suffix: &str) -> String {
    format!("device_vendor_msft_policy_config_{suffix}")
}

fn render(spec: &Spec, dir: &Directory) -> Value {
    let mut p = Map::new();
    p.insert("id".into(), json!(spec.id));
    p.insert(spec.name_member.into(), json!(spec.name));
    p.insert("description".into(), json!(spec.description));
    for (k, v) in &spec.top {
        p.insert(k.clone(), v.clone());
    }
    p.insert("nested".into(), json!({"inner": spec.nested}));
    let settings: Vec<Value> = spec
        .settings
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            json!({"id": i.to_string(), "settingInstance": {
                "settingDefinitionId": definition(k),
                "simpleSettingValue": {"value": v}}})
        })
        .collect();
    p.insert("settings".into(), Value::Array(settings));
    let assignments: Vec<Value> = spec
        .assignments
        .iter()
        .map(|a| {
            let group = &dir.groups[a.group].0;
            // As Graph answers: "no filter" is type `none` with a null id.
            let (filter, kind) = match a.filter {
                Some(f) => (
                    json!(dir.filters[f.index].0),
                    json!(if f.include { "include" } else { "exclude" }),
                ),
                None => (Value::Null, json!("none")),
            };
            json!({"id": format!("{}_{group}", spec.id),
                   "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget",
                              "groupId": group, FILTER_ID: filter, FILTER_TYPE: kind}})
        })
        .collect();
    p.insert("assignments".into(), Value::Array(assignments));
    let mut include: Vec<Value> = spec
        .include_groups
        .iter()
        .map(|&g| json!(dir.groups[g].0))
        .collect();
    if spec.include_all {
        include.push(json!("All"));
    }
    let locations: Vec<Value> = spec
        .include_locations
        .iter()
        .map(|&l| json!(dir.locations[l].0))
        .collect();
    p.insert(
        "conditions".into(),
        json!({"users": {"includeGroups": include, "excludeGroups": []},
               "locations": {"includeLocations": locations}}),
    );
    Value::Object(p)
}

fn evidence(spec: &Spec, payload: &Value, names: &Names) -> Evidence {
    Evidence {
        policy_type: spec.policy_type.clone(),
        external_id: payload["id"].as_str().unwrap_or_default().to_owned(),
        display_name: payload[spec.name_member].as_str().unwrap_or_default().to_owned(),
        normalized: normalize(payload, names),
    }
}

/// A random world: one directory, 1–4 policies with distinct names, and a
/// seed for the transformations.
#[derive(Debug, Clone)]
struct World {
    dir: Directory,
    specs: Vec<Spec>,
    seed: u64,
}

impl World {
    fn side(&self, specs: &[Spec], dir: &Directory, mut f: impl FnMut(Value) -> Value) -> Vec<Evidence> {
        let names = dir.names();
        specs
            .iter()
            .map(|s| evidence(s, &f(render(s, dir)), &names))
            .collect()
    }

    fn compare(&self, baseline: &[Evidence], current: &[Evidence]) -> Comparison {
        let types: BTreeSet<String> = TYPES.iter().map(|t| t.to_string()).collect();
        compare(baseline, current, &types)
    }

    fn baseline(&self) -> Vec<Evidence> {
        self.side(&self.specs, &self.dir, |v| v)
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(|n| json!(n)),
        "[a-z]{1,8}".prop_map(Value::String),
    ]
}

/// A spec with raw reference indices (resolved against the directory in [`world`]).
fn spec(name: String) -> impl Strategy<Value = Spec> {
    (
        (
            prop::sample::select(TYPES),
            any::<bool>(),
            any::<u64>(),
            "[a-z ]{0,12}",
        ),
        (
            prop::collection::btree_map("cfg[A-Z][a-z]{1,6}", scalar(), 0..5),
            prop::collection::btree_map("opt[a-z]{1,6}", scalar(), 0..4),
            prop::collection::btree_map("[a-z]{1,10}", scalar(), 0..6),
        ),
        (
            prop::collection::vec((0usize..64, prop::option::of((0usize..64, any::<bool>()))), 0..4),
            prop::collection::vec(0usize..64, 1..4),
            any::<bool>(),
            prop::collection::vec(0usize..64, 0..3),
        ),
    )
        .prop_map(
            move |(
                (policy_type, catalog, id, description),
                (top, nested, settings),
                (assignments, include_groups, include_all, include_locations),
            )| Spec {
                policy_type: policy_type.to_owned(),
                name_member: if catalog { "name" } else { "displayName" },
                name: name.clone(),
                id: format!("{id:016x}"),
                description,
                top,
                nested,
                settings,
                assignments: assignments
                    .into_iter()
                    .map(|(group, filter)| Assignment {
                        group,
                        filter: filter.map(|(index, include)| Filter { index, include }),
                    })
                    .collect(),
                include_groups,
                include_all,
                include_locations,
            },
        )
}

fn directory() -> impl Strategy<Value = Directory> {
    (
        prop::collection::btree_set("[A-Z][a-z]{2,6}", 2..6),
        prop::collection::btree_set("[A-Z][a-z]{2,6}", 2..4),
        prop::collection::btree_set("[A-Z][a-z]{2,6}( [A-Z][a-z]{1,4})?", 2..5),
        any::<u32>(),
    )
        .prop_map(|(groups, locations, filters, salt)| Directory {
            groups: groups
                .into_iter()
                .enumerate()
                .map(|(i, n)| (uuid(salt, 1, i), n))
                .collect(),
            locations: locations
                .into_iter()
                .enumerate()
                .map(|(i, n)| (uuid(salt, 2, i), n))
                .collect(),
            filters: filters
                .into_iter()
                .enumerate()
                .map(|(i, n)| (uuid(salt, 3, i), n))
                .collect(),
        })
}

fn dedup_mod(raw: &[usize], n: usize) -> Vec<usize> {
    let set: BTreeSet<usize> = raw.iter().map(|i| i % n).collect();
    set.into_iter().collect()
}

/// Raw assignments resolved against the directory: one per group (the
/// first one's filter kept), filter indices within the directory's.
fn dedup_assignments(raw: &[Assignment], groups: usize, filters: usize) -> Vec<Assignment> {
    let mut by_group: BTreeMap<usize, Option<Filter>> = BTreeMap::new();
    for a in raw {
        by_group
            .entry(a.group % groups)
            .or_insert(a.filter.map(|f| Filter {
                index: f.index % filters,
                include: f.include,
            }));
    }
    by_group
        .into_iter()
        .map(|(group, filter)| Assignment { group, filter })
        .collect()
}

fn world() -> impl Strategy<Value = World> {
    (
        directory(),
        prop::collection::btree_set("[a-z]{3,10}( [a-z]{2,6})?", 1..5),
        any::<u64>(),
    )
        .prop_flat_map(|(dir, names, seed)| {
            let specs: Vec<_> = names.into_iter().map(spec).collect();
            (Just(dir), specs, Just(seed))
        })
        .prop_map(|(dir, mut specs, seed)| {
            let (g, l, f) = (dir.groups.len(), dir.locations.len(), dir.filters.len());
            for s in &mut specs {
                s.assignments = dedup_assignments(&s.assignments, g, f);
                s.include_groups = dedup_mod(&s.include_groups, g);
                s.include_locations = dedup_mod(&s.include_locations, l);
            }
            World { dir, specs, seed }
        })
}

/// SplitMix64: the transformations' randomness, from the case's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

// ---- transformations that must never be a finding -------------------------

/// Every array, at every depth, in another order.
fn permute(v: &Value, rng: &mut Rng) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|x| permute(x, rng)).collect();
            for i in (1..items.len()).rev() {
                items.swap(i, rng.below(i + 1));
            }
            Value::Array(items)
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), permute(x, rng))).collect()),
        other => other.clone(),
    }
}

/// Every object's own `id` (top level and nested) replaced by a new one.
fn rename_own_ids(v: &Value, rng: &mut Rng) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|x| rename_own_ids(x, rng)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = if k == "id" {
                        json!(format!("own-{:016x}", rng.next()))
                    } else {
                        rename_own_ids(x, rng)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every string that is an old directory id replaced by the object's new id.
fn rename_references(v: &Value, ids: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => match ids.get(&s.to_ascii_lowercase()) {
            Some(new) => json!(new),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|x| rename_references(x, ids)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), rename_references(x, ids)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every assignment filter written another way that means the same: a
/// filter by id sometimes by its name instead (as written, in lower case,
/// or in upper case with spaces around), the id then omitted, `null` or an
/// id no directory knows (another tenant's); "no filter" as nothing at all,
/// type `none` with a `null`, empty or all-zero id, or a type `none` alone.
/// Ids are looked up in `dir`, the directory `v` was rendered with.
fn refilter(v: &Value, dir: &Directory, rng: &mut Rng) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|x| refilter(x, dir, rng)).collect()),
        Value::Object(m) => {
            let mut out: Map<String, Value> = m
                .iter()
                .map(|(k, x)| (k.clone(), refilter(x, dir, rng)))
                .collect();
            if !out.contains_key(FILTER_TYPE) {
                return Value::Object(out);
            }
            let id = out.get(FILTER_ID).and_then(Value::as_str).map(str::to_owned);
            match id.as_deref().map(|id| dir.filter_name(id)) {
                Some(Some(name)) => {
                    if rng.coin() {
                        let name = match rng.below(3) {
                            0 => name.to_owned(),
                            1 => name.to_lowercase(),
                            _ => format!(" {} ", name.to_uppercase()),
                        };
                        out.insert(FILTER_NAME.into(), json!(name));
                        match rng.below(3) {
                            0 => {
                                out.remove(FILTER_ID);
                            }
                            1 => {
                                out.insert(FILTER_ID.into(), Value::Null);
                            }
                            _ => {
                                // Kind 0x7f: never an id of any directory here.
                                let unknown = uuid(rng.next() as u32, 0x7f, rng.below(99));
                                out.insert(FILTER_ID.into(), json!(unknown));
                            }
                        }
                    }
                }
                // An id, not of a filter of `dir`: left as it is.
                Some(None) => {}
                // No filter.
                None => {
                    out.remove(FILTER_ID);
                    out.remove(FILTER_TYPE);
                    let (id, kind) = match rng.below(5) {
                        0 => (None, None),
                        1 => (Some(Value::Null), Some("none")),
                        2 => (Some(json!("00000000-0000-0000-0000-000000000000")), Some("None")),
                        3 => (Some(json!("")), Some("NONE")),
                        _ => (None, Some("none")),
                    };
                    if let Some(id) = id {
                        out.insert(FILTER_ID.into(), id);
                    }
                    if let Some(kind) = kind {
                        out.insert(FILTER_TYPE.into(), json!(kind));
                    }
                    if rng.coin() {
                        out.insert(FILTER_NAME.into(), Value::Null);
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// OData annotations: `@odata.context` at the top, `@odata.type` in every
/// object, `x@odata.context` / `x@odata.navigationLink` / `x@odata.type`
/// beside members.
fn annotate(v: &Value, rng: &mut Rng, top: bool) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|x| annotate(x, rng, false)).collect()),
        Value::Object(m) => {
            let mut out = Map::new();
            if top {
                out.insert(
                    "@odata.context".into(),
                    json!("https://graph.microsoft.com/beta/$metadata#deviceManagement/x/$entity"),
                );
            }
            for (k, x) in m {
                if rng.coin() {
                    let suffix = ["@odata.context", "@odata.navigationLink", "@odata.type"][rng.below(3)];
                    out.insert(
                        format!("{k}{suffix}"),
                        json!(format!("https://graph/{:x}", rng.next())),
                    );
                }
                out.insert(k.clone(), annotate(x, rng, false));
            }
            if rng.coin() || top {
                out.insert(
                    "@odata.type".into(),
                    json!(format!("#microsoft.graph.t{}", rng.below(9))),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Timestamps and versions added (or set to other values) at the top and in
/// the settings' and assignments' elements.
fn stamp(v: &Value, rng: &mut Rng) -> Value {
    let mut v = v.clone();
    let put = |m: &mut Map<String, Value>, rng: &mut Rng| {
        for member in ["createdDateTime", "lastModifiedDateTime"] {
            if rng.coin() {
                let t = format!(
                    "20{:02}-0{}-1{}T0{}:00:00Z",
                    rng.below(30),
                    1 + rng.below(9),
                    rng.below(9),
                    rng.below(9)
                );
                m.insert(member.into(), json!(t));
            }
        }
        if rng.coin() {
            let version = if rng.coin() {
                json!(rng.below(50))
            } else {
                json!(format!("v{}", rng.below(50)))
            };
            m.insert("version".into(), version);
        }
    };
    if let Some(m) = v.as_object_mut() {
        put(m, rng);
        for list in ["settings", "assignments"] {
            if let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    put(item, rng);
                }
            }
        }
    }
    v
}

fn assert_no_finding(world: &World, cmp: &Comparison) -> Result<(), TestCaseError> {
    prop_assert!(cmp.findings.is_empty(), "findings: {:#?}", cmp.findings);
    prop_assert!(cmp.ambiguous.is_empty());
    prop_assert_eq!(cmp.compared, world.specs.len() as u64);
    Ok(())
}

// ---- changes that must always be exactly one finding ----------------------

/// A value different from `v`.
fn other_value(v: &Value, rng: &mut Rng) -> Value {
    let candidate = match rng.below(3) {
        0 => json!(rng.coin()),
        1 => json!(rng.below(2000) as i64 - 1000),
        _ => json!(
            format!("{:x}", rng.next())
                .chars()
                .filter(char::is_ascii_lowercase)
                .collect::<String>()
                + "q"
        ),
    };
    if &candidate != v {
        return candidate;
    }
    match v {
        Value::Bool(b) => json!(!b),
        Value::Number(n) => json!(n.as_i64().unwrap_or_default() + 1),
        Value::String(s) => json!(format!("{s}x")),
        _ => json!("changed"),
    }
}

/// Changes one setting value of `spec` (any of them, the description
/// included), returning the path the change must be reported at.
fn change_one_value(spec: &mut Spec, at: Index, rng: &mut Rng) -> String {
    let slots = 1 + spec.top.len() + spec.nested.len() + spec.settings.len();
    let mut i = at.index(slots);
    if i == 0 {
        spec.description.push('!');
        return "description".into();
    }
    i -= 1;
    for (map, prefix) in [(&mut spec.top, None), (&mut spec.nested, Some("nested/inner/"))] {
        if i < map.len() {
            let (k, v) = map.iter_mut().nth(i).expect("slot");
            *v = other_value(v, rng);
            return format!("{}{k}", prefix.unwrap_or(""));
        }
        i -= map.len();
    }
    let (k, v) = spec.settings.iter_mut().nth(i).expect("slot");
    *v = other_value(v, rng);
    format!(
        "settings[setting:{}]/settingInstance/simpleSettingValue/value",
        definition(k)
    )
}

/// An index of `0..n` other than `old` (`n` ≥ 2).
fn other_index(old: usize, n: usize, rng: &mut Rng) -> usize {
    (old + 1 + rng.below(n - 1)) % n
}

/// Points one reference of `spec` at another object of its kind, with
/// another name.
fn repoint_one_reference(spec: &mut Spec, dir: &Directory, at: Index, rng: &mut Rng) {
    let slots = spec.assignments.len() + spec.include_groups.len() + spec.include_locations.len();
    let mut i = at.index(slots);
    if let Some(a) = spec.assignments.get_mut(i) {
        a.group = other_index(a.group, dir.groups.len(), rng);
        return;
    }
    i -= spec.assignments.len();
    for (list, n) in [
        (&mut spec.include_groups, dir.groups.len()),
        (&mut spec.include_locations, dir.locations.len()),
    ] {
        if i < list.len() {
            list[i] = other_index(list[i], n, rng);
            return;
        }
        i -= list.len();
    }
    unreachable!("include_groups is never empty");
}

/// Gives `spec` an assignment with a filter when it has none.
fn ensure_filtered(spec: &mut Spec) {
    if spec.assignments.is_empty() {
        spec.assignments.push(Assignment {
            group: 0,
            filter: None,
        });
    }
    if spec.assignments.iter().all(|a| a.filter.is_none()) {
        spec.assignments[0].filter = Some(Filter {
            index: 0,
            include: true,
        });
    }
}

/// Points one filtered assignment of `spec` at another filter (with
/// another name), or switches it between include and exclude.
fn change_one_filter(spec: &mut Spec, dir: &Directory, at: Index, rng: &mut Rng) {
    let filtered: Vec<usize> = (0..spec.assignments.len())
        .filter(|&i| spec.assignments[i].filter.is_some())
        .collect();
    let i = filtered[at.index(filtered.len())];
    let f = spec.assignments[i]
        .filter
        .as_mut()
        .expect("a filtered assignment");
    if rng.coin() {
        f.include = !f.include;
    } else {
        f.index = other_index(f.index, dir.filters.len(), rng);
    }
}

fn assert_one_changed(world: &World, which: usize, cmp: &Comparison) -> Result<(), TestCaseError> {
    prop_assert!(cmp.ambiguous.is_empty());
    prop_assert_eq!(cmp.compared, world.specs.len() as u64);
    prop_assert_eq!(cmp.findings.len(), 1, "findings: {:#?}", cmp.findings);
    let f = &cmp.findings[0];
    prop_assert_eq!(f.kind, FindingKind::Changed);
    prop_assert_eq!(&f.policy_type, &world.specs[which].policy_type);
    prop_assert_eq!(&f.display_name, &world.specs[which].name);
    prop_assert_eq!(
        f.baseline_external_id.as_deref(),
        Some(world.specs[which].id.as_str())
    );
    prop_assert!(!f.changes.is_empty());
    Ok(())
}

/// Every harmless transformation at once, each on or off.
fn noise(v: Value, seed: u64, dir: &Directory, ids: Option<&BTreeMap<String, String>>) -> Value {
    let mut rng = Rng(seed);
    let mut v = v;
    // First: it reads the ids `v` was rendered with.
    if rng.coin() {
        v = refilter(&v, dir, &mut rng);
    }
    if rng.coin() {
        v = permute(&v, &mut rng);
    }
    if rng.coin() {
        v = rename_own_ids(&v, &mut rng);
    }
    if let Some(ids) = ids {
        v = rename_references(&v, ids);
    }
    if rng.coin() {
        v = annotate(&v, &mut rng, true);
    }
    if rng.coin() {
        v = stamp(&v, &mut rng);
    }
    if rng.coin() {
        rename_case(&mut v, &mut rng);
    }
    v
}

/// The policy's own name in another case, with whitespace around it.
fn rename_case(v: &mut Value, rng: &mut Rng) {
    for member in ["displayName", "name"] {
        if let Some(Value::String(name)) = v.get_mut(member) {
            let cased = if rng.coin() {
                name.to_uppercase()
            } else {
                name.to_lowercase()
            };
            *name = format!("{}{cased}{}", " ".repeat(rng.below(3)), " ".repeat(rng.below(3)));
        }
    }
}

fn config() -> ProptestConfig {
    // At least 256 cases; more with PROPTEST_CASES.
    ProptestConfig::with_cases(ProptestConfig::default().cases.max(256))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn permuted_arrays_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        let current = w.side(&w.specs, &w.dir, |v| permute(&v, &mut Rng(rng.next())));
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
    }

    #[test]
    fn renamed_own_ids_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        let current = w.side(&w.specs, &w.dir, |v| rename_own_ids(&v, &mut Rng(rng.next())));
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
    }

    #[test]
    fn referenced_objects_renamed_with_their_directory_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        let dir = w.dir.renamed(&mut rng);
        let ids = w.dir.id_map(&dir);
        // Rendered with the old ids, then every reference rewritten.
        let names = dir.names();
        let current: Vec<Evidence> = w
            .specs
            .iter()
            .map(|s| evidence(s, &rename_references(&render(s, &w.dir), &ids), &names))
            .collect();
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
        // The same with the new directory rendered directly.
        assert_no_finding(&w, &w.compare(&w.baseline(), &w.side(&w.specs, &dir, |v| v)))?;
    }

    #[test]
    fn filters_by_name_and_forms_of_no_filter_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        // Each side written its own way, the current one in another tenant.
        let baseline = w.side(&w.specs, &w.dir, |v| refilter(&v, &w.dir, &mut Rng(rng.next())));
        let dir = w.dir.renamed(&mut rng);
        let current = w.side(&w.specs, &dir, |v| refilter(&v, &dir, &mut Rng(rng.next())));
        assert_no_finding(&w, &w.compare(&baseline, &current))?;
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
        assert_no_finding(&w, &w.compare(&baseline, &w.baseline()))?;
    }

    #[test]
    fn annotations_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        let current = w.side(&w.specs, &w.dir, |v| annotate(&v, &mut Rng(rng.next()), true));
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
    }

    #[test]
    fn timestamps_and_versions_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        // Stamped on both sides, with values of their own.
        let baseline = w.side(&w.specs, &w.dir, |v| stamp(&v, &mut Rng(rng.next())));
        let current = w.side(&w.specs, &w.dir, |v| stamp(&v, &mut Rng(rng.next())));
        assert_no_finding(&w, &w.compare(&baseline, &current))?;
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
    }

    #[test]
    fn all_harmless_differences_at_once_are_no_finding(w in world()) {
        let mut rng = Rng(w.seed);
        let dir = w.dir.renamed(&mut rng);
        let ids = w.dir.id_map(&dir);
        let names = dir.names();
        let mut current: Vec<Evidence> = w
            .specs
            .iter()
            .map(|s| evidence(s, &noise(render(s, &w.dir), rng.next(), &w.dir, Some(&ids)), &names))
            .collect();
        current.reverse();
        // A policy of a type not compared is ignored.
        current.push(Evidence {
            policy_type: "notCompared".into(),
            external_id: "x".into(),
            display_name: "Extra".into(),
            normalized: json!({"displayName": "Extra"}),
        });
        assert_no_finding(&w, &w.compare(&w.baseline(), &current))?;
    }

    #[test]
    fn one_changed_value_is_exactly_one_changed_finding(w in world(), which in any::<Index>(), at in any::<Index>()) {
        let mut rng = Rng(w.seed);
        let which = which.index(w.specs.len());
        let mut specs = w.specs.clone();
        let path = change_one_value(&mut specs[which], at, &mut rng);
        let dir = if rng.coin() { w.dir.renamed(&mut rng) } else { w.dir.clone() };
        let ids = w.dir.id_map(&dir);
        let names = dir.names();
        let current: Vec<Evidence> = specs
            .iter()
            .map(|s| evidence(s, &noise(render(s, &w.dir), rng.next(), &w.dir, Some(&ids)), &names))
            .collect();
        let cmp = w.compare(&w.baseline(), &current);
        assert_one_changed(&w, which, &cmp)?;
        let changes = &cmp.findings[0].changes;
        prop_assert_eq!(changes.len(), 1, "changes: {:#?}", changes);
        prop_assert_eq!(&changes[0].path, &path);
        prop_assert!(changes[0].baseline.is_some() && changes[0].current.is_some());
        prop_assert_ne!(&changes[0].baseline, &changes[0].current);
    }

    #[test]
    fn one_repointed_reference_is_exactly_one_changed_finding(w in world(), which in any::<Index>(), at in any::<Index>()) {
        let mut rng = Rng(w.seed);
        let which = which.index(w.specs.len());
        let mut specs = w.specs.clone();
        repoint_one_reference(&mut specs[which], &w.dir, at, &mut rng);
        let dir = if rng.coin() { w.dir.renamed(&mut rng) } else { w.dir.clone() };
        let ids = w.dir.id_map(&dir);
        let names = dir.names();
        let current: Vec<Evidence> = specs
            .iter()
            .map(|s| evidence(s, &noise(render(s, &w.dir), rng.next(), &w.dir, Some(&ids)), &names))
            .collect();
        let cmp = w.compare(&w.baseline(), &current);
        assert_one_changed(&w, which, &cmp)?;
        let changes = &cmp.findings[0].changes;
        prop_assert!(
            changes.iter().all(|c| c.path.starts_with("assignments") || c.path.starts_with("conditions/")),
            "changes: {:#?}", changes
        );
    }

    #[test]
    fn one_repointed_or_switched_filter_is_exactly_one_changed_finding(w in world(), which in any::<Index>(), at in any::<Index>()) {
        let mut rng = Rng(w.seed);
        let which = which.index(w.specs.len());
        // The policy holds a filtered assignment on both sides.
        let mut before = w.specs.clone();
        ensure_filtered(&mut before[which]);
        let mut after = before.clone();
        change_one_filter(&mut after[which], &w.dir, at, &mut rng);
        let baseline = w.side(&before, &w.dir, |v| v);
        let dir = if rng.coin() { w.dir.renamed(&mut rng) } else { w.dir.clone() };
        let ids = w.dir.id_map(&dir);
        let names = dir.names();
        let current: Vec<Evidence> = after
            .iter()
            .map(|s| evidence(s, &noise(render(s, &w.dir), rng.next(), &w.dir, Some(&ids)), &names))
            .collect();
        let cmp = w.compare(&baseline, &current);
        assert_one_changed(&w, which, &cmp)?;
        let changes = &cmp.findings[0].changes;
        prop_assert!(
            changes.iter().all(|c| c.path.starts_with("assignments")),
            "changes: {:#?}", changes
        );
    }
}
