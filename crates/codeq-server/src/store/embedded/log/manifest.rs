//! `MANIFEST`: codeQ's own record of what its journal must hold, checked
//! at every start so that damage is refused instead of served.
//!
//! It names the format, the first segment of the journal, and a
//! checkpoint: a sequence number the journal is known to reach, with the
//! number of live tasks at that point. It is rewritten (atomically) when
//! compaction drops old segments, at a clean shutdown (the checkpoint is
//! then the very end of the journal) and at start (to say the store is
//! open, so a later start knows whether the previous stop was clean).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::{Fs, write_atomically};

/// The file's name inside the store directory.
pub const MANIFEST_FILE: &str = "MANIFEST";

/// The journal format this build reads and writes.
pub const FORMAT: u32 = 1;

/// A point the journal is known to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last batch at the checkpoint.
    pub seq: u64,
    /// Live tasks once every batch up to `seq` is applied.
    pub live: u64,
}

/// The content of `MANIFEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The journal format.
    pub format: u32,
    /// The oldest segment of the journal; older files are left-overs.
    pub first_segment: u32,
    /// See [`Checkpoint`].
    pub checkpoint: Checkpoint,
    /// True when the store was closed cleanly at `checkpoint` and nothing
    /// was written since: the journal must end exactly there.
    pub clean: bool,
}

impl Manifest {
    /// The manifest of a new, empty store.
    pub fn new() -> Self {
        Self {
            format: FORMAT,
            first_segment: 1,
            checkpoint: Checkpoint { seq: 0, live: 0 },
            clean: false,
        }
    }

    /// Reads the manifest of `dir`; `Ok(None)` when there is none.
    pub fn read(fs: &dyn Fs, dir: &Path) -> Result<Option<Self>, ReadError> {
        let bytes = match fs.read(&dir.join(MANIFEST_FILE)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ReadError::Io(error)),
        };
        let manifest: Self = serde_json::from_slice(&bytes)
            .map_err(|error| ReadError::Damaged(format!("{MANIFEST_FILE} is damaged ({error})")))?;
        if manifest.format != FORMAT {
            return Err(ReadError::Damaged(format!(
                "{MANIFEST_FILE} names journal format {}, this build reads format {FORMAT}",
                manifest.format
            )));
        }
        Ok(Some(manifest))
    }

    /// Replaces the manifest of `dir` atomically and durably.
    pub fn write(&self, fs: &dyn Fs, dir: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(fs, &dir.join(MANIFEST_FILE), &bytes)
    }
}

/// Why the manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read (permissions, disk): not damage.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file does not say what codeQ writes.
    #[error("{0}")]
    Damaged(String),
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}
