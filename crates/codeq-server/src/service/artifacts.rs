//! Artifacts attached to results: a `url` is stored as given; inline
//! `contentBase64` bytes are written (and fsynced) under
//! `localArtifactsDir/<taskId>/<attempt>/<name>` before the result is stored, and
//! referenced by their download path.
//!
//! Inline content stays base64 text (a view into the request body) until
//! it is written: it is checked and then decoded piece by piece straight
//! into its file, on the blocking pool, so an artifact never exists
//! decoded in memory as a whole.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, Weak};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use codeq_core::{Artifact, TaskId};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::outbound::check_http_url;
use crate::store::Store;

/// Base64 text decoded per piece: a multiple of 4, so that each piece
/// decodes on its own; 1 MiB of text is 768 KiB of bytes.
const DECODE_PIECE: usize = 1024 * 1024;

/// The most artifacts one result may list (each inline one is a file and
/// two fsyncs; a worker with more zips them or links them by `url`).
pub const MAX_ARTIFACTS_PER_RESULT: usize = 100;

/// Held tasks' locks kept before the ones no longer held are dropped.
const HELD_TASKS_KEPT: usize = 1024;

/// Base64 text checked on the request's own thread: decoding it takes
/// well under a millisecond, less than a hop to the blocking pool.
const INLINE_CHECK_BYTES: usize = 64 * 1024;

/// An artifact as a worker submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactUpload {
    /// A plain file name.
    pub name: String,
    /// Where the bytes already are.
    pub url: Option<String>,
    /// The bytes, base64-encoded (usually a view into the request body).
    pub content_base64: Option<Bytes>,
    /// Media type.
    pub content_type: Option<String>,
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A field is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The decoded bytes exceed `maxArtifactBytes` (413).
    #[error("artifact {name:?} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The artifact.
        name: String,
        /// Its decoded size.
        size: usize,
        /// `maxArtifactBytes`.
        limit: usize,
    },
    /// The bytes could not be written (500; 507 when the disk is full).
    #[error("cannot store artifact: {0}")]
    Io(#[from] std::io::Error),
}

/// Where artifact bytes live.
#[derive(Debug, Clone)]
pub struct Artifacts {
    dir: PathBuf,
    public_base_url: String,
    max_bytes: usize,
    /// The lock of each task a submission holds (see [`Artifacts::hold`]).
    held: Arc<std::sync::Mutex<HashMap<TaskId, Weak<Mutex<()>>>>>,
}

/// The tasks a submission holds; released when dropped.
#[must_use = "the tasks are released when this is dropped"]
pub struct Held {
    guards: Vec<OwnedMutexGuard<()>>,
}

impl Held {
    /// Holds no task.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }
}

impl Artifacts {
    /// Artifacts under `dir`, linked from `public_base_url` (may be empty).
    pub fn new(dir: PathBuf, public_base_url: Option<String>, max_bytes: usize) -> Self {
        let public_base_url = public_base_url.unwrap_or_default().trim_end_matches('/').to_string();
        Self { dir, public_base_url, max_bytes, held: Arc::default() }
    }

    /// Holds the writing of `tasks`' inline bytes until the answer is
    /// dropped. A submission with bytes holds its task from before it
    /// looks at the task until the store has answered: two submissions of
    /// one delivery then never both write, so the files are those of the
    /// result that was stored. Each task has its own lock, taken in id
    /// order (two batches cannot hold each other up for ever); only this
    /// process's callers are held (with Redis, artifacts are per replica
    /// anyway).
    pub async fn hold(&self, tasks: impl IntoIterator<Item = TaskId>) -> Held {
        let mut tasks: Vec<TaskId> = tasks.into_iter().collect();
        if tasks.is_empty() {
            return Held { guards: Vec::new() };
        }
        tasks.sort_unstable();
        tasks.dedup();
        let locks: Vec<Arc<Mutex<()>>> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.len() > HELD_TASKS_KEPT {
                held.retain(|_, lock| lock.strong_count() > 0);
            }
            let mut lock_of = |task| match held.get(&task).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(Mutex::new(()));
                    held.insert(task, Arc::downgrade(&lock));
                    lock
                }
            };
            tasks.into_iter().map(&mut lock_of).collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for lock in locks {
            guards.push(lock.lock_owned().await);
        }
        Held { guards }
    }

    /// Checks uploads (names, sources, sizes, base64), without writing
    /// anything. The base64 check decodes into a scratch buffer, on the
    /// blocking pool unless the content is small.
    pub async fn prepare(
        &self,
        uploads: Vec<ArtifactUpload>,
    ) -> Result<Vec<Prepared>, ArtifactError> {
        if uploads.len() > MAX_ARTIFACTS_PER_RESULT {
            return Err(ArtifactError::Invalid(format!(
                "artifacts lists {} items; at most {MAX_ARTIFACTS_PER_RESULT} per result",
                uploads.len()
            )));
        }
        let prepared: Vec<Prepared> =
            uploads.into_iter().map(|upload| self.prepare_one(upload)).collect::<Result<_, _>>()?;
        check_names_unique(&prepared)?;
        let content: usize =
            prepared.iter().filter_map(|p| p.content.as_ref()).map(Bytes::len).sum();
        if content <= INLINE_CHECK_BYTES {
            prepared.iter().try_for_each(Prepared::check_content)?;
            return Ok(prepared);
        }
        let checked = tokio::task::spawn_blocking(move || {
            prepared.iter().try_for_each(Prepared::check_content).map(|()| prepared)
        });
        checked.await.map_err(|error| ArtifactError::Io(std::io::Error::other(error)))?
    }

    fn prepare_one(&self, upload: ArtifactUpload) -> Result<Prepared, ArtifactError> {
        check_file_name(&upload.name)?;
        // An empty content type is none, as some clients send by default.
        let upload = ArtifactUpload {
            content_type: upload.content_type.filter(|content_type| !content_type.is_empty()),
            ..upload
        };
        check_content_type(&upload.name, upload.content_type.as_deref())?;
        match (upload.url, upload.content_base64) {
            (Some(url), None) => {
                if let Err(why) = check_http_url(&url) {
                    return Err(ArtifactError::Invalid(format!(
                        "artifacts[].url of {:?} {why}",
                        upload.name
                    )));
                }
                Ok(Prepared {
                    artifact: Artifact {
                        name: upload.name,
                        url,
                        content_type: upload.content_type,
                    },
                    content: None,
                })
            }
            (None, Some(encoded)) => {
                let size = decoded_len(&encoded).ok_or_else(|| not_base64(&upload.name))?;
                if size > self.max_bytes {
                    return Err(ArtifactError::TooLarge {
                        name: upload.name,
                        size,
                        limit: self.max_bytes,
                    });
                }
                let artifact = Artifact {
                    name: upload.name,
                    url: String::new(),
                    content_type: upload.content_type,
                };
                Ok(Prepared { artifact, content: Some(encoded) })
            }
            _ => Err(ArtifactError::Invalid(format!(
                "artifact {:?} needs exactly one of url and contentBase64",
                upload.name
            ))),
        }
    }

    /// The URL an inline artifact of `task` is served at, its name
    /// percent-encoded (a name may hold `?`, `#`, `%` or spaces).
    pub fn url_of(&self, task: TaskId, name: &str) -> String {
        format!("{}/v1/codeq/tasks/{task}/artifacts/{}", self.public_base_url, percent_encode(name))
    }

    /// Whether `url` is where this server serves inline artifact `name` of
    /// `task`: as [`Self::url_of`] writes it, or as releases before it
    /// stored it (the name as it is).
    pub fn serves_at(&self, url: &str, task: TaskId, name: &str) -> bool {
        url == self.url_of(task, name)
            || url == format!("{}/v1/codeq/tasks/{task}/artifacts/{name}", self.public_base_url)
    }

    /// The bytes of inline artifact `name` of `task`'s delivery `attempt`.
    pub async fn read(&self, task: TaskId, attempt: u32, name: &str) -> std::io::Result<Vec<u8>> {
        if check_file_name(name).is_err() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not a plain file name"));
        }
        tokio::fs::read(self.dir_of(task, attempt).join(name)).await
    }

    /// The directory of the artifacts of `task`'s delivery `attempt`.
    pub fn dir_of(&self, task: TaskId, attempt: u32) -> PathBuf {
        self.dir.join(task.to_string()).join(attempt.to_string())
    }

    /// Writes the inline bytes of the artifacts of `task`'s delivery
    /// `attempt` durably and returns the artifacts as the result record
    /// lists them. Each write holds the place of `files` while it runs (it
    /// goes on when the request is dropped), so that the files are
    /// removed only after it.
    pub async fn store(
        &self,
        task: TaskId,
        attempt: u32,
        prepared: Vec<Prepared>,
        files: Option<&Written>,
    ) -> Result<Vec<Artifact>, ArtifactError> {
        let mut artifacts = Vec::with_capacity(prepared.len());
        let dir = self.dir_of(task, attempt);
        let mut written = Vec::new();
        for Prepared { mut artifact, content } in prepared {
            if let Some(encoded) = content {
                let (into, name) = (dir.clone(), artifact.name.clone());
                let place = match files {
                    Some(files) => files.writing.clone().acquire_owned().await.ok(),
                    None => None,
                };
                let wrote = tokio::task::spawn_blocking(move || {
                    let _place = place;
                    write_decoded(&into, &name, &encoded)
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|wrote| wrote);
                if let Err(error) = wrote {
                    // A full disk must not stay full of a result that was
                    // not stored: what this submission wrote goes too.
                    for name in written {
                        let _ = tokio::fs::remove_file(dir.join(name)).await;
                    }
                    return Err(error.into());
                }
                written.push(artifact.name.clone());
                artifact.url = self.url_of(task, &artifact.name);
            }
            artifacts.push(artifact);
        }
        Ok(artifacts)
    }

    /// Removes the artifacts of tasks `store` no longer has, and returns
    /// how many tasks' they were. A task's files go after the store has
    /// deleted it (retention, a cleanup, a purge), so a process stopped in
    /// between leaves them behind; run at start, this takes them. Ids are
    /// never used again, so a task not found now is gone for good. Stops
    /// at the first store error (the next start tries again) or when
    /// `stop` fires.
    pub async fn sweep_orphans(&self, store: &dyn Store, stop: &CancellationToken) -> usize {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "cannot list the artifacts");
                return 0;
            }
        };
        let mut removed = 0;
        while !stop.is_cancelled() {
            let entry = match entries.next_entry().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the artifacts");
                    break;
                }
            };
            let Some(task) =
                entry.file_name().to_str().and_then(|name| name.parse::<TaskId>().ok())
            else {
                continue;
            };
            // As a submission holds it: none writes its files meanwhile.
            let _held = self.hold([task]).await;
            match store.get_task(task).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.remove_all(task).await;
                    removed += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot sweep the artifacts of deleted tasks");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(tasks = removed, "removed the artifacts of deleted tasks");
        }
        removed
    }

    /// Removes the files `names` of `task`'s delivery `attempt` that no
    /// stored result lists: those of a submission whose result was not
    /// stored (refused, failed, or its client gone mid-way). Holds the task
    /// as a submission does; when the store cannot say, the files stay
    /// (retention takes them with the task).
    async fn discard(&self, store: &dyn Store, files: Files, writing: &tokio::sync::Semaphore) {
        let _writes_done = writing.acquire().await;
        let (task, attempt) = (files.task, files.attempt);
        let _held = self.hold([task]).await;
        let listed = match self.listed_for(store, task, attempt).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, task_id = %task, "cannot tell whether artifacts are kept");
                return;
            }
        };
        let dir = self.dir_of(task, attempt);
        for name in files.names.iter().filter(|name| !listed.contains(name)) {
            if let Err(error) = tokio::fs::remove_file(dir.join(name)).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, task_id = %task, "cannot delete an artifact");
            }
        }
        // Directories left empty go too (one that is not empty stays).
        let _ = tokio::fs::remove_dir(&dir).await;
        let _ = tokio::fs::remove_dir(self.dir.join(task.to_string())).await;
    }

    /// The names of the artifacts the stored result of `task` lists when
    /// it was made by delivery `attempt` (their files are that delivery's).
    async fn listed_for(
        &self,
        store: &dyn Store,
        task: TaskId,
        attempt: u32,
    ) -> crate::store::StoreResult<Vec<String>> {
        match store.get_state(task).await? {
            Some(state) if state.status.is_terminal() && state.attempts == attempt => {
                let record = store.get_result(task).await?;
                let inline = record.into_iter().flat_map(|record| record.artifacts);
                // Only names served from here: a `url` artifact's name is
                // not a file of this delivery.
                let served = inline.filter(|a| self.serves_at(&a.url, task, &a.name));
                Ok(served.map(|artifact| artifact.name).collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Deletes every stored artifact of `task` (retention).
    pub async fn remove_all(&self, task: TaskId) {
        let dir = self.dir.join(task.to_string());
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, task_id = %task, "cannot delete artifacts");
        }
    }
}

/// The files a submission wrote for `task`'s delivery `attempt`. Kept
/// once its result is stored ([`Written::kept`]); dropped before that (the
/// result refused, the store failing, or the request dropped because its
/// client went away), it removes those that no stored result lists, in a
/// task of its own.
#[must_use = "dropped, the files are removed"]
pub struct Written {
    artifacts: Arc<Artifacts>,
    store: Arc<dyn Store>,
    /// `None` once kept (or handed to the removal).
    files: Option<Files>,
    /// Held by the write under way (one at a time).
    writing: Arc<tokio::sync::Semaphore>,
}

/// Files written for `task`'s delivery `attempt`.
struct Files {
    task: TaskId,
    attempt: u32,
    names: Vec<String>,
}

impl Written {
    /// The files `prepared` has bytes for, written for `task`'s delivery
    /// `attempt`; `None` when there are none.
    pub fn new(
        artifacts: &Arc<Artifacts>,
        store: &Arc<dyn Store>,
        task: TaskId,
        attempt: u32,
        prepared: &[Prepared],
    ) -> Option<Self> {
        let names: Vec<String> = prepared
            .iter()
            .filter(|prepared| prepared.has_bytes())
            .map(|prepared| prepared.artifact.name.clone())
            .collect();
        (!names.is_empty()).then(|| Self {
            artifacts: artifacts.clone(),
            store: store.clone(),
            files: Some(Files { task, attempt, names }),
            writing: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// Keeps the files: the result that lists them is stored.
    pub fn kept(mut self) {
        self.files = None;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let Some(files) = self.files.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (artifacts, store, writing) =
            (self.artifacts.clone(), self.store.clone(), self.writing.clone());
        runtime.spawn(async move { artifacts.discard(&*store, files, &writing).await });
    }
}

/// A checked artifact, with its base64 content when given inline.
#[derive(Debug)]
pub struct Prepared {
    artifact: Artifact,
    content: Option<Bytes>,
}

impl Prepared {
    /// True when there are bytes to write.
    pub fn has_bytes(&self) -> bool {
        self.content.is_some()
    }

    /// Checks that the inline content is valid base64 (decoding it piece
    /// by piece into a scratch buffer).
    fn check_content(&self) -> Result<(), ArtifactError> {
        let Some(encoded) = &self.content else { return Ok(()) };
        let mut scratch = vec![0; DECODE_PIECE / 4 * 3];
        for piece in encoded.chunks(DECODE_PIECE) {
            STANDARD
                .decode_slice(piece, &mut scratch)
                .map_err(|_| not_base64(&self.artifact.name))?;
        }
        Ok(())
    }
}

/// The decoded length of padded base64 text; `None` when its length
/// cannot be padded base64.
fn decoded_len(encoded: &[u8]) -> Option<usize> {
    if !encoded.len().is_multiple_of(4) {
        return None;
    }
    let padding = encoded.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    Some(encoded.len() / 4 * 3 - padding)
}

fn not_base64(name: &str) -> ArtifactError {
    ArtifactError::Invalid(format!("artifacts[].contentBase64 of {name:?} is not valid base64"))
}

/// A plain file name: no separators, control characters (NUL included),
/// `.` or `..`, at most 255 bytes.
/// One name per result: a second file of that name would replace the
/// first under the same URL.
fn check_names_unique(prepared: &[Prepared]) -> Result<(), ArtifactError> {
    let mut names = std::collections::HashSet::with_capacity(prepared.len());
    match prepared.iter().map(|p| p.artifact.name.as_str()).find(|name| !names.insert(*name)) {
        Some(name) => Err(ArtifactError::Invalid(format!(
            "artifacts[].name {name:?} appears twice: each artifact of a result needs its own name"
        ))),
        None => Ok(()),
    }
}

/// A `contentType` the download can send as its `Content-Type` header:
/// visible ASCII and spaces, at most 255 bytes (a line break in it would
/// otherwise be dropped for `application/octet-stream` at download).
fn check_content_type(name: &str, content_type: Option<&str>) -> Result<(), ArtifactError> {
    let Some(content_type) = content_type else { return Ok(()) };
    let sendable = content_type.len() <= 255
        && content_type.bytes().all(|byte| byte == b' ' || byte.is_ascii_graphic());
    if sendable {
        Ok(())
    } else {
        Err(ArtifactError::Invalid(format!(
            "artifacts[].contentType of {name:?} must be at most 255 characters of visible ASCII (a media type such as text/plain)"
        )))
    }
}

fn check_file_name(name: &str) -> Result<(), ArtifactError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(ArtifactError::Invalid(format!("artifacts[].name {name:?} must be a plain file name")))
    }
}

/// Decodes checked base64 `encoded` into `dir/name`, piece by piece, and
/// makes the file and its name durable (blocking).
fn write_decoded(dir: &Path, name: &str, encoded: &[u8]) -> std::io::Result<()> {
    // Readable by the server's user only, as the data directory is.
    crate::data_dir::create_private_dir(dir)?;
    // A name of its own: `name` may already use all 255 bytes a file
    // name may have, and two uploads may run at once.
    let temporary = dir.join(format!(".partial-{}", TaskId::generate()));
    let written = write_and_sync(&temporary, encoded);
    if written.is_err() {
        // A full disk must not stay full of what failed to fit.
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Decodes checked base64 `encoded` into a new file at `path`, synced.
fn write_and_sync(path: &Path, encoded: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut piece_bytes = vec![0; DECODE_PIECE / 4 * 3];
    for piece in encoded.chunks(DECODE_PIECE) {
        let decoded = STANDARD.decode_slice(piece, &mut piece_bytes).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
        })?;
        file.write_all(&piece_bytes[..decoded])?;
    }
    file.sync_all()
}

/// Every byte of `text` but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// as `%XX` (RFC 3986), so that it is one path segment or one RFC 5987
/// value whatever it holds.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_plain() {
        for bad in ["", ".", "..", "a/b", "a\\b", "nul\0", &"x".repeat(256)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["out.json", "..hidden", "a b.txt", &"x".repeat(255)] {
            assert!(check_file_name(good).is_ok(), "{good:?}");
        }
    }

    fn upload(url: Option<&str>, content: Option<&'static str>) -> ArtifactUpload {
        ArtifactUpload {
            name: "a".into(),
            url: url.map(Into::into),
            content_base64: content.map(|text| Bytes::from_static(text.as_bytes())),
            content_type: None,
        }
    }

    #[tokio::test]
    async fn an_artifact_needs_exactly_one_valid_source_within_the_limit() {
        let artifacts = Artifacts::new(PathBuf::from("unused"), None, 10);
        let prepare = |upload| artifacts.prepare(vec![upload]);
        assert!(prepare(upload(None, None)).await.is_err());
        assert!(prepare(upload(Some("https://x/a"), Some("YQ=="))).await.is_err());
        assert!(prepare(upload(Some("ftp://x/a"), None)).await.is_err());
        assert!(prepare(upload(Some("HTTPS://x/a"), None)).await.is_ok(), "schemes ignore case");
        assert!(matches!(
            prepare(upload(None, Some("YWFhYWFhYWFhYWFhYWFh"))).await,
            Err(ArtifactError::TooLarge { size: 15, .. })
        ));
        for bad in ["YQ=", "Y===", "YQ=a", "!!!!", "YR=="] {
            assert!(
                matches!(prepare(upload(None, Some(bad))).await, Err(ArtifactError::Invalid(_))),
                "{bad}"
            );
        }
        let prepared = prepare(upload(None, Some("YQ=="))).await.unwrap();
        assert!(prepared[0].has_bytes());
    }

    #[test]
    fn an_artifact_is_served_at_its_encoded_url_and_at_the_one_stored_before() {
        let artifacts = Artifacts::new(PathBuf::from("unused"), Some("https://q.test/".into()), 10);
        let task = TaskId::generate();
        let path = format!("https://q.test/v1/codeq/tasks/{task}/artifacts/");
        assert_eq!(artifacts.url_of(task, "a b?.txt"), format!("{path}a%20b%3F.txt"));
        assert!(artifacts.serves_at(&format!("{path}a%20b%3F.txt"), task, "a b?.txt"));
        assert!(artifacts.serves_at(&format!("{path}a b?.txt"), task, "a b?.txt"));
        assert!(!artifacts.serves_at("https://elsewhere.test/a b?.txt", task, "a b?.txt"));
    }

    #[test]
    fn decoded_lengths_count_the_padding() {
        assert_eq!(decoded_len(b""), Some(0));
        assert_eq!(decoded_len(b"YQ=="), Some(1));
        assert_eq!(decoded_len(b"YWI="), Some(2));
        assert_eq!(decoded_len(b"YWJj"), Some(3));
        assert_eq!(decoded_len(b"YWJ"), None);
    }

    #[test]
    fn content_is_decoded_piece_by_piece_into_its_file() {
        let dir = tempfile::tempdir().unwrap();
        // Three pieces and a padded tail.
        let bytes: Vec<u8> = (0..DECODE_PIECE / 4 * 3 * 2 + 100).map(|i| (i % 251) as u8).collect();
        let encoded = STANDARD.encode(&bytes);
        write_decoded(dir.path(), "out.bin", encoded.as_bytes()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out.bin")).unwrap(), bytes);
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn a_write_that_fails_midway_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // A first piece that decodes, then one that does not: the write
        // fails after the file has bytes, as on a disk that fills up.
        let mut encoded = STANDARD.encode(vec![7u8; DECODE_PIECE / 4 * 3]).into_bytes();
        encoded.extend_from_slice(b"!!!!");
        assert!(write_decoded(dir.path(), "out.bin", &encoded).is_err());
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[tokio::test]
    async fn a_result_whose_artifact_fails_leaves_none_of_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::new(dir.path().to_path_buf(), None, 1 << 20);
        let task = TaskId::generate();
        let inline = |name: &str, encoded: &'static str| Prepared {
            artifact: Artifact { name: name.into(), url: String::new(), content_type: None },
            content: Some(Bytes::from_static(encoded.as_bytes())),
        };
        let prepared = vec![inline("a.bin", "YQ=="), inline("b.bin", "!!!!")];
        assert!(artifacts.store(task, 1, prepared, None).await.is_err());
        assert!(entries(&artifacts.dir_of(task, 1)).is_empty());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let names = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name());
        names.map(|name| name.to_string_lossy().into_owned()).collect()
    }
}
