//! The two migrated schemas match: the same tables, columns (name, type,
//! nullability, primary key), foreign keys, indexes (columns in order with
//! their direction, uniqueness, partial or not, and the names of the ones
//! created explicitly) and CHECK constraints (per table, the columns each one
//! reads). The migrations are written twice, once per dialect; this is the
//! test that says they still describe one schema.

use opsledger_store::testing::{self, RawPool};
use sqlx::{PgPool, SqlitePool};
use std::collections::{BTreeMap, BTreeSet};

/// One table as both databases can describe it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    /// name → (type, not null)
    columns: BTreeMap<String, (String, bool)>,
    primary_key: Vec<String>,
    /// (columns, referenced table, referenced columns)
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
    /// (columns with " DESC" where descending, unique, partial)
    indexes: BTreeSet<(Vec<String>, bool, bool)>,
    /// Explicitly created indexes, by name.
    index_names: BTreeSet<String>,
    /// Per CHECK constraint, the table's columns it mentions.
    checks: BTreeSet<Vec<String>>,
}

type Schema = BTreeMap<String, Table>;

/// `(contype, columns, referenced table, referenced columns)` of a PostgreSQL constraint.
type Constraint = (String, Vec<String>, Option<String>, Option<Vec<String>>);

/// Both dialects' names for the types the migrations use.
fn normalize_type(t: &str) -> String {
    match t.to_ascii_lowercase().as_str() {
        "text" => "text".into(),
        "bigint" | "integer" | "int8" | "int4" | "int" => "integer".into(),
        other => other.to_owned(),
    }
}

/// The body of every `CHECK (…)` in a `CREATE TABLE` statement.
fn check_bodies(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = upper[from..].find("CHECK") {
        let start = from + i + "CHECK".len();
        let Some(open) = sql[start..].find('(').map(|o| start + o) else {
            break;
        };
        let (mut depth, mut j, mut quoted) = (0usize, open, false);
        while j < bytes.len() {
            match bytes[j] {
                b'\'' => quoted = !quoted,
                b'(' if !quoted => depth += 1,
                b')' if !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        out.push(sql[open + 1..j].to_owned());
        from = j;
    }
    out
}

/// The columns of `columns` that `expr` mentions as identifiers (string
/// literals are not identifiers).
fn mentioned(expr: &str, columns: &BTreeMap<String, (String, bool)>) -> Vec<String> {
    let mut words = BTreeSet::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '\'' {
            quoted = !quoted;
            word.clear();
            continue;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c.to_ascii_lowercase());
        } else {
            if !word.is_empty() && columns.contains_key(&word) {
                words.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    words.into_iter().collect()
}

async fn sqlite_schema(pool: &SqlitePool) -> Schema {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name, create) in tables {
        let mut t = Table::default();
        let cols: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for (col, ty, notnull, in_pk) in cols {
            // A primary key column is NOT NULL in PostgreSQL whatever it says.
            t.columns
                .insert(col.clone(), (normalize_type(&ty), notnull == 1 || in_pk > 0));
            if in_pk > 0 {
                pk.push((in_pk, col));
            }
        }
        pk.sort();
        t.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        let fks: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list($1) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, (Vec<String>, String, Vec<String>)> = BTreeMap::new();
        for (id, table, from, to) in fks {
            let e = by_id
                .entry(id)
                .or_insert_with(|| (Vec::new(), table.clone(), Vec::new()));
            e.0.push(from);
            e.2.push(to.unwrap_or_else(|| "id".into()));
        }
        t.foreign_keys = by_id.into_values().collect();
        let indexes: Vec<(String, i64, String, i64)> =
            sqlx::query_as("SELECT name, \"unique\", origin, partial FROM pragma_index_list($1)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        for (index, unique, origin, partial) in indexes {
            if origin == "pk" {
                continue; // compared as the primary key
            }
            let cols: Vec<(Option<String>, i64)> = sqlx::query_as(
                "SELECT name, \"desc\" FROM pragma_index_xinfo($1) WHERE key = 1 ORDER BY seqno",
            )
            .bind(&index)
            .fetch_all(pool)
            .await
            .unwrap();
            let cols = cols
                .into_iter()
                .map(|(c, desc)| {
                    let c = c.unwrap_or_else(|| "<expr>".into());
                    if desc == 1 { format!("{c} DESC") } else { c }
                })
                .collect();
            t.indexes.insert((cols, unique == 1, partial == 1));
            if origin == "c" {
                t.index_names.insert(index);
            }
        }
        t.checks = check_bodies(&create)
            .iter()
            .map(|body| mentioned(body, &t.columns))
            .collect();
        // SQLite cannot add a CHECK to an existing table: a later migration
        // enforces it with triggers raising "CHECK constraint failed: NAME"
        // when their WHEN clause holds; that clause reads the same columns.
        let triggers: Vec<(String,)> =
            sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = $1")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        for (trigger,) in triggers {
            let upper = trigger.to_ascii_uppercase();
            if let (true, Some(when), Some(begin)) = (
                trigger.contains("CHECK constraint failed:"),
                upper.find("WHEN "),
                upper.find("BEGIN"),
            ) {
                t.checks.insert(mentioned(&trigger[when + 5..begin], &t.columns));
            }
        }
        schema.insert(name, t);
    }
    schema
}

async fn postgres_schema(pool: &PgPool) -> Schema {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name NOT LIKE '_sqlx%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name,) in tables {
        let mut t = Table::default();
        let cols: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for (col, ty, nullable) in cols {
            t.columns.insert(col, (normalize_type(&ty), nullable == "NO"));
        }
        let rel = name.clone();
        // Constraints: primary key, foreign keys, checks — with their columns.
        let cons: Vec<Constraint> = sqlx::query_as(
            "SELECT c.contype::text, \
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), \
               CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text END, \
               CASE WHEN c.contype = 'f' THEN ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) END \
             FROM pg_constraint c WHERE c.conrelid = CAST($1 AS regclass)",
        )
        .bind(&rel)
        .fetch_all(pool)
        .await
        .unwrap();
        for (kind, cols, ref_table, ref_cols) in cons {
            match kind.as_str() {
                "p" => t.primary_key = cols,
                "f" => {
                    let ref_table = ref_table.unwrap();
                    let ref_table = ref_table.rsplit('.').next().unwrap().to_owned();
                    t.foreign_keys.insert((cols, ref_table, ref_cols.unwrap()));
                }
                "c" => {
                    let mut cols = cols;
                    cols.sort();
                    t.checks.insert(cols);
                }
                _ => {}
            }
        }
        let indexes: Vec<(String, bool, bool, bool, bool, Vec<String>)> = sqlx::query_as(
            "SELECT ic.relname::text, i.indisunique, i.indisprimary, i.indpred IS NOT NULL, \
               EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid \
                       AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')), \
               ARRAY(SELECT CASE WHEN k.n = 0 THEN '<expr>' ELSE a.attname::text END \
                       || CASE WHEN (i.indoption[k.o - 1] & 1) = 1 THEN ' DESC' ELSE '' END \
                     FROM unnest(i.indkey) WITH ORDINALITY k(n, o) \
                     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                     WHERE k.o <= i.indnkeyatts ORDER BY k.o) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = CAST($1 AS regclass)",
        )
        .bind(&rel)
        .fetch_all(pool)
        .await
        .unwrap();
        for (index, unique, primary, partial, backs_constraint, cols) in indexes {
            if primary {
                continue;
            }
            t.indexes.insert((cols, unique, partial));
            if !backs_constraint {
                t.index_names.insert(index);
            }
        }
        schema.insert(name, t);
    }
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_migrated_schemas_match() {
    let sqlite = testing::sqlite().await;
    let Some(postgres) = testing::postgres().await else {
        return;
    };
    let RawPool::Sqlite(s) = testing::raw_pool(&sqlite.store) else {
        unreachable!()
    };
    let RawPool::Postgres(p) = testing::raw_pool(&postgres.store) else {
        unreachable!()
    };
    let mut a = sqlite_schema(s).await;
    let b = postgres_schema(p).await;
    assert!(a.len() >= 10, "tables found: {:?}", a.keys().collect::<Vec<_>>());
    // SQLite's CHECK bodies are read as written: sort their column lists
    // like PostgreSQL's constraint keys.
    for t in a.values_mut() {
        t.checks = std::mem::take(&mut t.checks)
            .into_iter()
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
    }
    let names: BTreeSet<_> = a.keys().chain(b.keys()).cloned().collect();
    let mut diffs = Vec::new();
    for name in names {
        match (a.get(&name), b.get(&name)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => diffs.push(format!("table {name}:\n  sqlite:   {x:?}\n  postgres: {y:?}")),
            (x, _) => diffs.push(format!(
                "table {name} only in {}",
                if x.is_some() { "sqlite" } else { "postgres" }
            )),
        }
    }
    assert!(diffs.is_empty(), "the schemas differ:\n{}", diffs.join("\n"));
    postgres.drop_now().await;
}

#[test]
fn check_bodies_are_found_with_their_columns() {
    let sql = "CREATE TABLE t (a TEXT CHECK (a IN ('x(', 'y')), b BIGINT, CONSTRAINT both CHECK ((a = 'x') OR (b >= 0)))";
    let bodies = check_bodies(sql);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let cols: BTreeMap<String, (String, bool)> = [
        ("a".to_owned(), ("text".to_owned(), false)),
        ("b".to_owned(), ("integer".to_owned(), false)),
    ]
    .into();
    assert_eq!(mentioned(&bodies[0], &cols), vec!["a"]);
    assert_eq!(mentioned(&bodies[1], &cols), vec!["a", "b"]);
}
