//! `opsledger admin …` as a new user meets it: a PostgreSQL installation set
//! up from nothing with the commands of README.md ("PostgreSQL from
//! nothing"), up to a finished sync through the API; and every CLI refusal
//! said in words, with a non-zero exit, never a raw database message, a
//! password or a colour code.

use opsledger_store::testing;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

fn opsledger(args: &[&str]) -> Output {
    opsledger_with_stdin(args, None)
}

fn opsledger_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(args)
        .env_remove("OPSLEDGER_DB")
        .env_remove("OPSLEDGER_WORKSPACE")
        .env_remove("OPSLEDGER_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run opsledger");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command that must succeed; its stdout, trimmed.
fn ok(args: &[&str]) -> String {
    let out = opsledger(args);
    assert!(
        out.status.success(),
        "`opsledger {}` failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    assert_clean(&text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Runs a command that must fail; asserts its stderr says `words` and
/// nothing raw.
fn refused(args: &[&str], words: &str) -> String {
    let out = opsledger(args);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "`opsledger {}` succeeded: {}",
        args.join(" "),
        text(&out.stdout)
    );
    assert!(
        err.contains(words),
        "`opsledger {}` should say {words:?}; said: {err}",
        args.join(" ")
    );
    assert_clean(&err);
    err
}

fn assert_clean(stderr: &str) {
    for raw in [
        "error returned from database",
        "FOREIGN KEY",
        "foreign key",
        "violates",
        "UNIQUE constraint",
        "\x1b[",
    ] {
        assert!(!stderr.contains(raw), "stderr shows {raw:?}: {stderr}");
    }
}

/// `opsledger serve` with its stderr captured line by line.
struct Server {
    _child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    base: String,
}

async fn serve(url: &str) -> Server {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["serve", "--db", url, "--listen", "127.0.0.1:0"])
        .env_remove("OPSLEDGER_LOG")
        .env("OPSLEDGER_POLL_INTERVAL_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    // Keep draining stderr for the server's whole life, so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let found = log.lock().unwrap().iter().find_map(|l| {
            let at = l.find("API on http://")?;
            Some(l[at + "API on ".len()..].trim().to_owned())
        });
        if let Some(base) = found {
            break base;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not log its address: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Server {
        _child: child,
        log,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_set_up_from_nothing() {
    let Some(db) = testing::postgres().await else {
        eprintln!("!!! SKIPPED: postgresql_set_up_from_nothing needs PostgreSQL !!!");
        return;
    };
    // A schema with nothing in it, not even migrations: the first command
    // creates the tables. (Named like the test schemas so later runs sweep it.)
    let schema = format!("olt_{}_empty{}", opsledger_store::now_ms(), rand::random::<u32>());
    opsledger_store::raw_on_pool!(&db.store, pool => {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(pool)
            .await
            .unwrap();
    });
    let base = testing::postgres_url();
    let url = format!(
        "{base}{}options=-csearch_path%3D{schema}",
        if base.contains('?') { "&" } else { "?" }
    );
    let url = url.as_str();

    // The README's commands, in its order.
    let ws = ok(&["admin", "create-workspace", "--db", url, "--name", "Contoso MSP"]);
    let password = ok(&["admin", "create-user", "--db", url, "--email", "op@example.com"]);
    assert!(
        password.len() >= 16,
        "a generated password is printed once: {password:?}"
    );
    let member = ok(&[
        "admin",
        "add-member",
        "--db",
        url,
        "--workspace",
        &ws,
        "--email",
        "op@example.com",
        "--role",
        "operator",
    ]);
    assert!(
        member.contains("operator") && member.contains("all tenants"),
        "{member}"
    );
    let token = ok(&[
        "admin",
        "create-token",
        "--db",
        url,
        "--workspace",
        &ws,
        "--email",
        "op@example.com",
        "--name",
        "ci",
        "--expires-in",
        "30d",
    ]);
    assert!(
        token.starts_with("olt_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    let tenant = ok(&[
        "tenant",
        "add",
        "--db",
        url,
        "--workspace",
        &ws,
        "--name",
        "contoso",
        "--provider",
        "demo:healthy",
    ]);

    // Only the token's hash is stored.
    let stored: Vec<(String,)> = opsledger_store::raw_on_pool!(&db.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT token_sha256 FROM {schema}.api_tokens")))
            .fetch_all(pool)
            .await
            .unwrap()
    });
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, token);

    let server = serve(url).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/workspaces/{ws}/operations", server.base))
        .bearer_auth(&token)
        // As README's `curl -d` sends it.
        .header("content-type", "application/x-www-form-urlencoded")
        .body(json!({"type": "inventory.sync", "tenant_id": tenant}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run: Value = http
            .get(format!("{}/workspaces/{ws}/operations/{id}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "completed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the sync did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["outcome"], "succeeded", "{run}");

    // The token acts in its workspace only, even where its user is a member too.
    let other = ok(&["admin", "create-workspace", "--db", url, "--name", "Other MSP"]);
    let member = |ws: &str, extra: &[&str]| {
        let mut args = vec![
            "admin",
            "add-member",
            "--db",
            url,
            "--workspace",
            ws,
            "--email",
            "op@example.com",
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    member(&other, &["--role", "admin"]);
    let r = http
        .get(format!("{}/workspaces/{other}/operations", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "a token of one workspace is not a key to another"
    );

    // Changing a restricted member's role keeps the restriction; lifting it is explicit.
    let restricted = member(&ws, &["--role", "admin", "--tenant", "contoso"]);
    assert!(restricted.contains("only tenants contoso"), "{restricted}");
    let demoted = member(&ws, &["--role", "viewer"]);
    assert!(
        demoted.contains("viewer") && demoted.contains("only tenants contoso"),
        "{demoted}"
    );
    let lifted = member(&ws, &["--role", "viewer", "--all-tenants"]);
    assert!(lifted.contains("all tenants"), "{lifted}");

    // A token that is not one is refused.
    let r = http
        .get(format!("{}/workspaces/{ws}/operations", server.base))
        .bearer_auth("olt_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The log went to a pipe, not a terminal: no colour codes.
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("\x1b["), "ANSI codes in a piped log: {log}");
    drop(server);
    opsledger_store::raw_on_pool!(&db.store, pool => {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(pool)
            .await;
    });
}

/// Every refusal of the CLI names the problem.
fn errors_in_words(url: &str) {
    let ws = ok(&["admin", "create-workspace", "--db", url, "--name", "ws"]);
    let other = ok(&["admin", "create-workspace", "--db", url, "--name", "other"]);
    let add = |ws: &str, name: &str| {
        vec![
            "tenant".to_owned(),
            "add".into(),
            "--db".into(),
            url.into(),
            "--workspace".into(),
            ws.into(),
            "--name".into(),
            name.into(),
            "--provider".into(),
            "demo:healthy".into(),
        ]
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    // Unknown workspace.
    refused(&args(&add("nope", "contoso")), "workspace `nope` not found");
    refused(
        &["runs", "list", "--db", url, "--workspace", "nope"],
        "workspace `nope` not found",
    );
    // Duplicate tenant name (per workspace: another workspace may reuse it).
    let v = add(&ws, "contoso");
    ok(&args(&v));
    refused(&args(&v), "already has a tenant named `contoso`");
    let theirs = ok(&args(&add(&other, "fabrikam")));
    // Unknown run.
    refused(
        &["runs", "show", "--db", url, "nope-run"],
        "run nope-run not found",
    );
    refused(
        &[
            "runs",
            "force-close",
            "--db",
            url,
            "nope-run",
            "--outcome",
            "failed",
            "--reason",
            "x",
        ],
        "run nope-run not found",
    );
    // An empty workspace lists nothing, successfully.
    ok(&["runs", "list", "--db", url, "--workspace", &ws]);

    // Users, members, tokens.
    let pw = opsledger_with_stdin(
        &[
            "admin",
            "create-user",
            "--db",
            url,
            "--email",
            "a@test",
            "--password-stdin",
        ],
        Some("correct horse\n"),
    );
    assert!(pw.status.success(), "{}", text(&pw.stderr));
    assert_eq!(text(&pw.stdout), "", "a given password is not echoed");
    refused(
        &["admin", "create-user", "--db", url, "--email", "a@test"],
        "a user with email `a@test` already exists",
    );
    refused(
        &["admin", "create-user", "--db", url, "--email", "not-an-email"],
        "is not an email address",
    );
    let member = |extra: &[&str]| {
        let mut v = vec![
            "admin",
            "add-member",
            "--db",
            url,
            "--workspace",
            &ws,
            "--email",
            "a@test",
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    refused(&args(&member(&["--role", "boss"])), "unknown role `boss`");
    refused(
        &[
            "admin",
            "add-member",
            "--db",
            url,
            "--workspace",
            "nope",
            "--email",
            "a@test",
            "--role",
            "viewer",
        ],
        "workspace `nope` not found",
    );
    refused(
        &[
            "admin",
            "add-member",
            "--db",
            url,
            "--workspace",
            &ws,
            "--email",
            "b@test",
            "--role",
            "viewer",
        ],
        "no user with email `b@test`",
    );
    refused(
        &args(&member(&["--role", "viewer", "--tenant", &theirs])),
        &format!("has no tenant `{theirs}`"),
    );
    let token = |ws: &str, extra: &[&str]| {
        let mut v = vec![
            "admin",
            "create-token",
            "--db",
            url,
            "--workspace",
            ws,
            "--email",
            "a@test",
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    refused(&args(&token(&ws, &[])), "is not a member of workspace");
    let restricted = ok(&args(&member(&["--role", "viewer", "--tenant", "contoso"])));
    assert!(restricted.contains("only tenants contoso"), "{restricted}");
    refused(&args(&token(&ws, &["--expires-in", "soon"])), "is not a duration");
    refused(&args(&token(&other, &[])), "is not a member of workspace");
    let t = ok(&args(&token(&ws, &["--expires-in", "12h"])));
    assert!(t.starts_with("olt_"), "{t}");
}

#[test]
fn cli_errors_in_words_sqlite() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(testing::sqlite());
    errors_in_words(&db.url);
}

#[test]
fn cli_errors_in_words_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testing::postgres()) else {
        eprintln!("!!! SKIPPED: cli_errors_in_words_postgres needs PostgreSQL !!!");
        return;
    };
    errors_in_words(&db.url);
}

/// A database URL's password never reaches the terminal.
#[test]
fn database_password_is_never_printed() {
    for url in [
        "mysql://app:hunter2secret@db.example/ops",
        "postgres://app:hunter2secret@db.example:notaport/ops",
    ] {
        let err = refused(
            &["runs", "list", "--db", url, "--workspace", "w"],
            "opening database",
        );
        assert!(!err.contains("hunter2secret"), "password shown: {err}");
        assert!(err.contains("app:***@"), "{err}");
    }
}
