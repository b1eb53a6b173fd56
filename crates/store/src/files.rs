//! File artifacts (review-pack ZIPs): one interface, [`FileStore`], over two
//! backends — files under this node's data directory (the default), or an
//! S3-compatible bucket shared by every node (`OPSLEDGER_ARTIFACTS_URL=
//! s3://bucket[/prefix]`, through the `object_store` crate).
//!
//! A file is drafted under a temporary name on local disk
//! ([`FileStore::begin`] → [`FileDraft`], which hashes and counts what it
//! writes) and [`FileDraft::finish`]ed: flushed to disk, and in a bucket
//! uploaded whole (one PUT, or a multipart upload completed at once, so a
//! reader never sees half an object). It is then committed with the unit or
//! the close that proves it ([`crate::artifacts::UnitArtifact::File`]): its
//! row (name, size, SHA-256) inserted in that transaction, and on local disk
//! the draft moved into place first. The file's place is named by its
//! content (`RUN_ID/SHA256`), so a commit never replaces a committed file
//! with other bytes and a row never names a missing, partial or different
//! file, whatever rolls back. A retried run that writes its file again
//! replaces the row with the new version. Bytes uploaded by a run that died
//! before committing stay unnamed by any row, so they are never served.
//!
//! Local disk is written with `std::fs` (a rename on the same filesystem is
//! the atomic commit and avoids copying a large ZIP a second time); the
//! bucket through `object_store`, whose S3 client brings retries, timeouts
//! and multipart uploads.

use crate::StoreError;
use crate::db::{Tx, sql};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest file name.
pub const MAX_FILE_NAME_LEN: usize = 128;
/// Largest file one draft may hold.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Connecting to the bucket gives up after this long.
pub const BUCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request to the bucket gives up after this long — body included (the
/// S3 client's timeout runs until the body is read), so it bounds a whole
/// download or upload part: long enough for a 4 GiB pack at a few MB/s.
pub const BUCKET_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Drafts older than this in the scratch directory were left by a process
/// that died or a commit that never happened; they are removed when a file
/// store opens.
pub const ABANDONED_DRAFT_AGE: Duration = Duration::from_secs(24 * 3600);

/// Retries of one bucket request stop after this long.
pub const BUCKET_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where committed files live: this node's disk, or a shared bucket.
#[derive(Clone)]
pub struct FileStore {
    backend: Backend,
    /// Drafts are written here (local disk in both backends).
    scratch: PathBuf,
}

#[derive(Clone)]
enum Backend {
    Local {
        root: PathBuf,
    },
    Bucket {
        objects: Arc<dyn ObjectStore>,
        url: String,
    },
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local { root } => write!(f, "FileStore(local {})", root.display()),
            Backend::Bucket { url, .. } => write!(f, "FileStore({url})"),
        }
    }
}

/// A file being written, not yet committed. Dropped unfinished, it is removed.
pub struct FileDraft {
    temp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    name: String,
    run_id: String,
    store: FileStore,
}

/// A finished draft, ready to commit with a unit or a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    run_id: String,
    /// The draft on local disk, moved into place by the commit; `None` once
    /// uploaded to a bucket. Removed when the last copy of this staged file
    /// is dropped uncommitted (a run cancelled or closed under its writer).
    temp: Option<Arc<KeptDraft>>,
    /// Where the commit moves a local draft.
    dest: Option<PathBuf>,
}

/// A finished local draft waiting for its commit: removed from the scratch
/// directory when dropped, unless the commit moved it into place first.
#[derive(Debug, PartialEq, Eq)]
struct KeptDraft(PathBuf);

impl Drop for KeptDraft {
    fn drop(&mut self) {
        // NotFound once committed (moved): nothing to do then.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A committed file, as its row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    pub name: String,
    pub unit_key: Option<String>,
    pub size: u64,
    pub sha256: String,
}

/// A committed file's bytes, as a stream of chunks.
pub type FileBytes = std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// A file name as runs may use it: `[A-Za-z0-9_.-]{1,128}`, not starting with a dot.
pub fn is_valid_file_name(name: &str) -> bool {
    (1..=MAX_FILE_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A row's SHA-256 as the place of its bytes: 64 lowercase hex digits and
/// nothing else (the row is read from the database; a value like
/// `../../etc/x` must never become a path).
fn checked_place(run_id: &str, file: &RunFile) -> Result<(), StoreError> {
    let hex = file.sha256.len() == 64
        && file
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex || !is_valid_file_name(run_id) {
        return Err(StoreError::Corrupt(format!(
            "file {:?} of run {run_id:?} has no valid SHA-256",
            file.name
        )));
    }
    Ok(())
}

fn object_path(run_id: &str, sha256: &str) -> ObjectPath {
    ObjectPath::from(format!("{run_id}/{sha256}"))
}

fn bucket_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    // The client's own words (endpoint, bucket, request) go to this node's
    // log only: a run's failures and API errors are shown to members.
    tracing::warn!(error = %e, "artifact bucket: {what}");
    StoreError::FileUnavailable(format!("{what}: the artifact bucket could not be reached"))
}

/// Whether `bucket` is an S3 bucket name (3 to 63 of a-z 0-9 . -).
fn is_bucket_name(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
}

/// Removes drafts older than [`ABANDONED_DRAFT_AGE`] from `scratch`.
fn remove_abandoned_drafts(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_DRAFT_AGE);
        if old
            && entry.file_type().is_ok_and(|t| t.is_file())
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(error = %e, "removing an abandoned draft {}", entry.path().display());
        }
    }
}

impl FileStore {
    /// Files under `root` on this node's disk (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))
            .map_err(|e| StoreError::Files(format!("{}: {e}", root.display())))?;
        remove_abandoned_drafts(&root.join("tmp"));
        Ok(FileStore {
            scratch: root.join("tmp"),
            backend: Backend::Local { root },
        })
    }

    /// Objects in the S3-compatible bucket `url` (`s3://bucket[/prefix]`),
    /// configured from the environment as the AWS tools are
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`…), then from `options`
    /// (e.g. `("aws_endpoint", …)`); drafts are written under `scratch`.
    pub fn bucket(
        url: &str,
        options: &[(&str, &str)],
        scratch: impl Into<PathBuf>,
    ) -> Result<FileStore, StoreError> {
        let shown: String = url.chars().take(200).collect();
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StoreError::Files(format!(
                "artifact storage {shown:?} is not s3://BUCKET[/PREFIX]"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix_ok = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
        if !is_bucket_name(bucket) || !prefix_ok || url.len() > 1024 {
            return Err(StoreError::Files(format!(
                "artifact storage {shown:?} is not s3://BUCKET[/PREFIX]"
            )));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(BUCKET_CONNECT_TIMEOUT)
                    .with_timeout(BUCKET_REQUEST_TIMEOUT),
            )
            // A few quick retries, then an answer (a download waits on them).
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: BUCKET_RETRY_TIMEOUT,
            });
        for (key, value) in options {
            let key = key
                .parse()
                .map_err(|_| StoreError::Files(format!("unknown S3 option {key:?}")))?;
            builder = builder.with_config(key, *value);
        }
        let s3 = builder
            .build()
            .map_err(|e| StoreError::Files(format!("artifact storage {shown}: {e}")))?;
        let objects: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => Arc::new(s3),
            p => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
        };
        let scratch = scratch.into();
        std::fs::create_dir_all(&scratch)
            .map_err(|e| StoreError::Files(format!("{}: {e}", scratch.display())))?;
        remove_abandoned_drafts(&scratch);
        Ok(FileStore {
            backend: Backend::Bucket { objects, url: shown },
            scratch,
        })
    }

    /// Checks that this node can write, read and delete in the store (a
    /// probe object in a bucket, a file in the scratch directory), so a
    /// misconfigured bucket stops a node at start rather than failing the
    /// first pack it generated.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local { .. } => {
                let probe = tempfile::NamedTempFile::new_in(&self.scratch)
                    .map_err(|e| StoreError::Files(format!("{}: {e}", self.scratch.display())))?;
                drop(probe);
                Ok(())
            }
            Backend::Bucket { objects, .. } => {
                let path = ObjectPath::from(format!("_probe/{}", uuid::Uuid::now_v7()));
                let body = bytes::Bytes::from_static(b"opsledger probe");
                objects
                    .put(&path, body.clone().into())
                    .await
                    .map_err(|e| bucket_error("writing a probe object", e))?;
                let read = objects
                    .get(&path)
                    .await
                    .map_err(|e| bucket_error("reading a probe object", e))?
                    .bytes()
                    .await
                    .map_err(|e| bucket_error("reading a probe object", e))?;
                if read != body {
                    return Err(StoreError::FileUnavailable(
                        "the artifact bucket returned other bytes than were written".into(),
                    ));
                }
                objects
                    .delete(&path)
                    .await
                    .map_err(|e| bucket_error("deleting a probe object", e))
            }
        }
    }

    /// Whether committed files are shared by every node (a bucket).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Bucket { .. })
    }

    /// Starts file `name` of run `run_id`.
    pub fn begin(&self, run_id: &str, name: &str) -> Result<FileDraft, StoreError> {
        if !is_valid_file_name(name) || !is_valid_file_name(run_id) {
            return Err(StoreError::Files(format!(
                "file name {:?} must be 1 to {MAX_FILE_NAME_LEN} of A-Z a-z 0-9 _ . - and not start with a dot",
                name.chars().take(80).collect::<String>()
            )));
        }
        let temp = tempfile::NamedTempFile::new_in(&self.scratch)
            .map_err(|e| StoreError::Files(format!("temporary file: {e}")))?;
        Ok(FileDraft {
            temp,
            hasher: Sha256::new(),
            size: 0,
            name: name.to_owned(),
            run_id: run_id.to_owned(),
            store: self.clone(),
        })
    }

    /// Where committed `file` of run `run_id` is on this node's disk
    /// (`None` in a bucket, or for a row naming no valid place).
    pub fn path_of(&self, run_id: &str, file: &RunFile) -> Option<PathBuf> {
        checked_place(run_id, file).ok()?;
        match &self.backend {
            Backend::Local { root } => Some(root.join(run_id).join(&file.sha256)),
            Backend::Bucket { .. } => None,
        }
    }

    /// The bytes of committed `file` of run `run_id`, streamed.
    /// [`StoreError::FileUnavailable`] when this node cannot reach them.
    pub async fn read(&self, run_id: &str, file: &RunFile) -> Result<FileBytes, StoreError> {
        checked_place(run_id, file)?;
        let what = format!("{} of run {run_id}", file.name);
        match &self.backend {
            Backend::Local { root } => {
                let path = root.join(run_id).join(&file.sha256);
                match tokio::fs::File::open(&path).await {
                    Ok(f) => Ok(Box::pin(tokio_util::io::ReaderStream::new(f))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::FileUnavailable(
                        format!("{what} is not in this node's file store"),
                    )),
                    Err(e) => Err(StoreError::Files(format!("reading {what}: {e}"))),
                }
            }
            Backend::Bucket { objects, .. } => {
                let got = objects
                    .get(&object_path(run_id, &file.sha256))
                    .await
                    .map_err(|e| bucket_error(&what, e))?;
                Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
            }
        }
    }

    /// Size and SHA-256 of the stored bytes of `file` (read whole), or `None`
    /// when they are not there: what an adapter checks against the row.
    pub async fn checksum(&self, run_id: &str, file: &RunFile) -> Result<Option<(u64, String)>, StoreError> {
        checked_place(run_id, file)?;
        match &self.backend {
            Backend::Local { root } => {
                let path = root.join(run_id).join(&file.sha256);
                tokio::task::spawn_blocking(move || {
                    let mut f = match std::fs::File::open(&path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(StoreError::Files(format!("{}: {e}", path.display()))),
                    };
                    let mut h = Sha256::new();
                    let size = std::io::copy(&mut f, &mut h)
                        .map_err(|e| StoreError::Files(format!("{}: {e}", path.display())))?;
                    Ok(Some((size, hex::encode(h.finalize()))))
                })
                .await
                .map_err(|e| StoreError::Files(format!("checking a file: {e}")))?
            }
            Backend::Bucket { objects, .. } => {
                let what = format!("{} of run {run_id}", file.name);
                let got = match objects.get(&object_path(run_id, &file.sha256)).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(bucket_error(&what, e)),
                };
                let mut stream = got.into_stream();
                let (mut h, mut size) = (Sha256::new(), 0u64);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| bucket_error(&what, e))?;
                    size += chunk.len() as u64;
                    h.update(&chunk);
                }
                Ok(Some((size, hex::encode(h.finalize()))))
            }
        }
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
    /// Flushes the draft to disk, or uploads it whole to the bucket; the
    /// result commits it.
    pub async fn finish(self) -> Result<StagedFile, StoreError> {
        let FileDraft {
            mut temp,
            hasher,
            size,
            name,
            run_id,
            store,
        } = self;
        let io = |e: std::io::Error| StoreError::Files(format!("writing {name}: {e}"));
        let sha256 = hex::encode(hasher.finalize());
        let temp = tokio::task::spawn_blocking(move || {
            temp.flush()?;
            temp.as_file().sync_all()?;
            Ok::<_, std::io::Error>(temp)
        })
        .await
        .map_err(|e| StoreError::Files(format!("writing a file: {e}")))?
        .map_err(io)?;
        match &store.backend {
            Backend::Local { root } => {
                // Kept on disk until the commit moves it (an uncommitted
                // draft stays in `tmp/`, never in a run's directory).
                let kept = temp
                    .into_temp_path()
                    .keep()
                    .map_err(|e| StoreError::Files(format!("keeping {name}: {e}")))?;
                let dest = root.join(&run_id).join(&sha256);
                Ok(StagedFile {
                    name,
                    size,
                    sha256,
                    run_id,
                    temp: Some(Arc::new(KeptDraft(kept))),
                    dest: Some(dest),
                })
            }
            Backend::Bucket { objects, .. } => {
                let what = format!("{name} of run {run_id}");
                let location = object_path(&run_id, &sha256);
                // put for a small file, a multipart upload completed at once
                // for a large one: either way the object appears whole.
                let mut upload = object_store::buffered::BufWriter::new(Arc::clone(objects), location);
                let mut source = tokio::fs::File::from_std(temp.reopen().map_err(io)?);
                let sent = match tokio::io::copy(&mut source, &mut upload).await {
                    Ok(_) => tokio::io::AsyncWriteExt::shutdown(&mut upload).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    // An unfinished multipart upload's parts would stay (and
                    // be billed) until a lifecycle rule removed them.
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(error = %abort, "aborting the upload of {what}");
                    }
                    return Err(bucket_error(&format!("uploading {what}"), e));
                }
                drop(temp);
                Ok(StagedFile {
                    name,
                    size,
                    sha256,
                    run_id,
                    temp: None,
                    dest: None,
                })
            }
        }
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Moves a local `file` into place (an uploaded one is in place already) and
/// writes its row, inside `tx`. A retried commit whose earlier attempt moved
/// the file and rolled back finds it in place.
pub(crate) async fn commit_in(
    tx: &mut Tx,
    run_id: &str,
    unit_key: Option<&str>,
    file: &StagedFile,
) -> Result<(), StoreError> {
    if file.run_id != run_id {
        return Err(StoreError::Files(format!(
            "{} was drafted for another run than {run_id}",
            file.name
        )));
    }
    if let (Some(temp), Some(dest)) = (file.temp.as_ref().map(|k| k.0.clone()), file.dest.clone()) {
        let (name, sha256) = (file.name.clone(), file.sha256.clone());
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let err = |e: std::io::Error| StoreError::Files(format!("committing {name}: {e}"));
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            match std::fs::rename(&temp, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => {
                    if sha256_of(&dest).map_err(err)? != sha256 {
                        return Err(StoreError::Files(format!("{name} changed on disk")));
                    }
                }
                Err(e) => return Err(err(e)),
            }
            // The move itself is made durable before the row can commit.
            if let Some(dir) = dest.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Files(format!("committing a file: {e}")))??;
    }
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
