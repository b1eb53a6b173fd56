//! File artifacts (review-pack ZIPs, evidence exports): a file is written
//! under a temporary name ([`FileStore::begin`] → [`FileDraft`], which
//! hashes and counts what it writes and is flushed to disk when finished),
//! then committed with the unit or the close that proves it
//! ([`crate::artifacts::UnitArtifact::File`]): moved into place and its row
//! (name, size, SHA-256) inserted in that transaction. The file's place is
//! named by its content (`ROOT/RUN_ID/SHA256`), so a move never replaces a
//! committed file with other bytes: a row never names a missing, partial or
//! different file, whatever rolls back. A retried run that writes its file
//! again replaces the row with the new version.
//!
//! Hand-written over `object_store` for now: local disk is the only backend
//! this build needs, and a move inside the transaction is what makes the
//! commit atomic; a shared bucket for several nodes is on the roadmap.

use crate::StoreError;
use crate::db::{Tx, sql};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest file name.
pub const MAX_FILE_NAME_LEN: usize = 128;
/// Largest file one draft may hold.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Where committed files live.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// A file being written, not yet committed. Dropped unfinished, it is removed.
pub struct FileDraft {
    temp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    name: String,
    dest_dir: PathBuf,
}

/// A finished draft, ready to commit with a unit or a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    temp: PathBuf,
    dest: PathBuf,
}

/// A committed file, as its row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    pub name: String,
    pub unit_key: Option<String>,
    pub size: u64,
    pub sha256: String,
}

/// A file name as runs may use it: `[A-Za-z0-9_.-]{1,128}`, not starting with a dot.
pub fn is_valid_file_name(name: &str) -> bool {
    (1..=MAX_FILE_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl FileStore {
    /// Files under `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))
            .map_err(|e| StoreError::Files(format!("{}: {e}", root.display())))?;
        Ok(FileStore { root })
    }

    /// Starts file `name` of run `run_id`.
    pub fn begin(&self, run_id: &str, name: &str) -> Result<FileDraft, StoreError> {
        if !is_valid_file_name(name) || !is_valid_file_name(run_id) {
            return Err(StoreError::Files(format!(
                "file name {:?} must be 1 to {MAX_FILE_NAME_LEN} of A-Z a-z 0-9 _ . - and not start with a dot",
                name.chars().take(80).collect::<String>()
            )));
        }
        let temp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(|e| StoreError::Files(format!("temporary file: {e}")))?;
        Ok(FileDraft {
            temp,
            hasher: Sha256::new(),
            size: 0,
            name: name.to_owned(),
            dest_dir: self.root.join(run_id),
        })
    }

    /// Where committed `file` of run `run_id` is.
    pub fn path_of(&self, run_id: &str, file: &RunFile) -> PathBuf {
        self.root.join(run_id).join(&file.sha256)
    }
}

impl Write for FileDraft {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size + buf.len() as u64 > MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "a file may hold at most {MAX_FILE_BYTES} bytes"
            )));
        }
        let n = self.temp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.flush()
    }
}

impl FileDraft {
    /// Flushes the draft to disk; the result commits it.
    pub fn finish(mut self) -> Result<StagedFile, StoreError> {
        let io = |e: std::io::Error| StoreError::Files(format!("writing {}: {e}", self.name));
        self.temp.flush().map_err(io)?;
        self.temp.as_file().sync_all().map_err(io)?;
        let sha256 = hex::encode(self.hasher.finalize());
        // Kept on disk until the commit moves it (an uncommitted draft stays
        // in `tmp/`, never in a run's directory).
        let temp = self
            .temp
            .into_temp_path()
            .keep()
            .map_err(|e| StoreError::Files(format!("keeping {}: {e}", self.name)))?;
        let dest = self.dest_dir.join(&sha256);
        Ok(StagedFile {
            name: self.name,
            size: self.size,
            sha256,
            temp,
            dest,
        })
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Moves `file` into place and writes its row, inside `tx`. A retried commit
/// whose earlier attempt moved the file and rolled back finds it in place.
pub(crate) async fn commit_in(
    tx: &mut Tx,
    run_id: &str,
    unit_key: Option<&str>,
    file: &StagedFile,
) -> Result<(), StoreError> {
    if file.dest.parent().and_then(Path::file_name) != Some(std::ffi::OsStr::new(run_id)) {
        return Err(StoreError::Files(format!(
            "{} was drafted for another run than {run_id}",
            file.name
        )));
    }
    let staged = file.clone();
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let err = |e: std::io::Error| StoreError::Files(format!("committing {}: {e}", staged.name));
        if let Some(dir) = staged.dest.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::rename(&staged.temp, &staged.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && staged.dest.exists() => {
                if sha256_of(&staged.dest).map_err(err)? != staged.sha256 {
                    return Err(StoreError::Files(format!("{} changed on disk", staged.name)));
                }
            }
            Err(e) => return Err(err(e)),
        }
        // The move itself is made durable before the row can commit.
        if let Some(dir) = staged.dest.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Files(format!("committing a file: {e}")))??;
    tx.execute(
        sql(
            "INSERT INTO run_files (run_id, name, unit_key, size_bytes, sha256, written_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (run_id, name) DO UPDATE SET unit_key = excluded.unit_key, \
             size_bytes = excluded.size_bytes, sha256 = excluded.sha256, written_at = excluded.written_at",
        )
        .bind(run_id)
        .bind(file.name.as_str())
        .bind(unit_key)
        .bind(file.size as i64)
        .bind(file.sha256.as_str())
        .bind(tx.now()),
    )
    .await?;
    Ok(())
}

impl crate::Store {
    /// The files run `run_id` committed, by name.
    pub async fn run_files(&self, run_id: &str) -> Result<Vec<RunFile>, StoreError> {
        self.run_files_page(run_id, None, u32::MAX).await
    }

    /// Up to `limit` files of run `run_id` named after `after`, by name.
    pub async fn run_files_page(
        &self,
        run_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunFile>, StoreError> {
        let rows: Vec<(String, Option<String>, i64, String)> = self
            .pool
            .fetch_all(
                sql("SELECT name, unit_key, size_bytes, sha256 FROM run_files \
                     WHERE run_id = $1 AND name > $2 ORDER BY name LIMIT $3")
                .bind(run_id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit)),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, unit_key, size, sha256)| RunFile {
                name,
                unit_key,
                size: size as u64,
                sha256,
            })
            .collect())
    }
}
