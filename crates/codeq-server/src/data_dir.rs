//! One `codeq serve` per data directory.
//!
//! A server takes `<dataDir>/serve.lock` with an OS file lock before it
//! writes anything to the directory (credentials, store, artifacts), and
//! writes its pid into the file. A second server on the same directory
//! finds the lock taken and stops at once, naming the pid, without
//! touching a file: had it gone on, it would have rewritten the running
//! server's `credentials.json` before the store refused to open.
//!
//! The lock lives as long as the [`DataDirLock`]. The operating system
//! releases it when the process ends in any way, `kill -9` included; the
//! file stays behind, and a pid left in it means nothing without the lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name under the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The path names something that is not a directory.
    #[error("data dir {} is a file, not a directory: choose another --data-dir", .0.display())]
    NotADirectory(PathBuf),
    /// Another process holds the lock.
    #[error("data dir {} is in use by another codeq serve ({holder})", dir.display())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// `pid N`, or `pid unknown` when the file holds none yet.
        holder: String,
    },
    /// The directory or its lock file cannot be created or locked.
    #[error("cannot use data dir {}: {cause}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What failed (in the message, not a `source`: a chain printed
        /// whole would say it twice).
        cause: io::Error,
    },
}

/// Creates `dir` and any missing parents with mode 0700 (those that exist
/// keep theirs).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The held lock of a data directory; released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed (readable by its owner only: it holds
    /// payloads, results and webhook URLs) and locks it for this process.
    /// One that exists keeps its mode.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirError> {
        let io_error = |cause| DataDirError::Io { dir: dir.to_path_buf(), cause };
        if fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()) {
            return Err(DataDirError::NotADirectory(dir.to_path_buf()));
        }
        create_private_dir(dir).map_err(io_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirError::InUse {
                    dir: dir.to_path_buf(),
                    holder: holder_of(&mut file),
                });
            }
            Err(TryLockError::Error(error)) => return Err(io_error(error)),
        }
        write_pid(&mut file).map_err(io_error)?;
        Ok(Self { _file: file })
    }
}

/// `pid N` as written by the holder, else `pid unknown`.
fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse::<u32>().ok());
    pid.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");

        let held = DataDirLock::acquire(&dir).unwrap();
        let second = DataDirLock::acquire(&dir).unwrap_err();

        let expected = format!(
            "data dir {} is in use by another codeq serve (pid {})",
            dir.display(),
            std::process::id()
        );
        assert_eq!(second.to_string(), expected);
        drop(held);
        assert!(DataDirLock::acquire(&dir).is_ok(), "free again once dropped");
    }

    #[test]
    #[cfg(unix)]
    fn a_data_directory_the_server_makes_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;

        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new").join("data");
        let _held = DataDirLock::acquire(&dir).unwrap();
        for made in [&dir, &root.path().join("new")] {
            assert_eq!(fs::metadata(made).unwrap().permissions().mode() & 0o777, 0o700, "{made:?}");
        }
        // One that exists keeps its mode (an operator's choice).
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        let _held = DataDirLock::acquire(&shared).unwrap();
        assert_eq!(fs::metadata(&shared).unwrap().permissions().mode() & 0o777, 0o750);
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("data");
        fs::write(&file, "not a directory").unwrap();

        let error = DataDirLock::acquire(&file).unwrap_err();

        assert!(matches!(error, DataDirError::NotADirectory(_)), "{error}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory", "left untouched");
    }
}
