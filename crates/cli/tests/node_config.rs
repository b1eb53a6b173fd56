//! A node refuses, in words, a configuration that would fail later: a
//! bucket without a data directory for drafts, an unreachable bucket, two
//! evidence keys, a key file that is not a regular file or not a key.

use std::process::Command;

fn worker(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("opsledger.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["worker", "--db", &db])
        .args(args)
        .env_remove("OPSLEDGER_EVIDENCE_KEY")
        .env_remove("OPSLEDGER_EVIDENCE_KEY_FILE")
        .env_remove("OPSLEDGER_ARTIFACTS_URL")
        .env_remove("OPSLEDGER_DATA")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bucket_needs_a_data_directory_and_must_answer() {
    let (ok, err) = worker(&["--artifacts-url", "s3://opsledger-test"], &[]);
    assert!(!ok && err.contains("--artifacts-url needs --data"), "{err}");
    let data = tempfile::tempdir().unwrap();
    let (ok, err) = worker(
        &[
            "--artifacts-url",
            "s3://opsledger-test",
            "--data",
            data.path().to_str().unwrap(),
        ],
        &[
            ("AWS_ENDPOINT", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-not-shown"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert!(
        !ok && err.contains("artifact bucket could not be reached"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-not-shown"), "{err}");
    let (ok, err) = worker(
        &[
            "--artifacts-url",
            "s3://user:pw@bucket",
            "--data",
            data.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && err.contains("is not s3://BUCKET"), "{err}");
}

#[test]
fn one_evidence_key_and_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "k".repeat(40)).unwrap();
    let key = key.to_str().unwrap();
    let (ok, err) = worker(
        &[],
        &[
            ("OPSLEDGER_EVIDENCE_KEY", &"k".repeat(40)),
            ("OPSLEDGER_EVIDENCE_KEY_FILE", key),
        ],
    );
    assert!(!ok && err.contains("set one"), "{err}");
    let (ok, err) = worker(&[], &[("OPSLEDGER_EVIDENCE_KEY", "short")]);
    assert!(!ok && err.contains("32 to 1024 bytes"), "{err}");
    let (ok, err) = worker(
        &[],
        &[("OPSLEDGER_EVIDENCE_KEY_FILE", dir.path().to_str().unwrap())],
    );
    assert!(!ok && err.contains("not a regular file"), "{err}");
    let (ok, err) = worker(&[], &[("OPSLEDGER_EVIDENCE_KEY_FILE", "/dev/zero")]);
    assert!(!ok && err.contains("not a regular file"), "{err}");
}

#[test]
fn a_node_needs_at_least_one_worker() {
    for n in ["0", "many", "257"] {
        let (ok, err) = worker(&["--workers", n], &[]);
        assert!(
            !ok && err.contains("is not a number of workers from 1 to 256"),
            "--workers {n}: {err}"
        );
    }
    let (ok, err) = worker(&[], &[("OPSLEDGER_WORKERS", "0")]);
    assert!(!ok && err.contains("`0` is not a number of workers"), "{err}");
}
