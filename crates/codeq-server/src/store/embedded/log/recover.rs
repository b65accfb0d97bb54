//! Recovery: replays the journal at start-up and refuses one that does not
//! match its manifest.
//!
//! Checks, each refusing the start with a message that names the problem:
//! the manifest is there and readable (or the directory holds nothing, and
//! a new store is created); every segment from the manifest's first one is
//! present and each but the last is sealed by a frame naming the next;
//! every frame's checksum holds and sequence numbers grow; the journal
//! reaches the manifest's checkpoint, with as many live tasks there as the
//! manifest recorded; after a clean stop it ends exactly at the checkpoint.
//!
//! The one repair it makes is the one every write-ahead log makes: a final
//! frame cut short by a crash (never acknowledged: its fsync did not
//! complete) is cut off, after its bytes are saved to `torn-<segment>-
//! <offset>.bin`. Nothing else is ever deleted or changed.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, BadFrame, FrameKind, Op, SEGMENT_HEADER_LEN};
use super::fs::Fs;
use super::manifest::{MANIFEST_FILE, Manifest};
use super::{Location, segment_id, segment_path};

/// Receives every change of the journal, in order, during recovery.
pub trait Replay {
    /// A value stored under `key` of `table`, lying at `at`.
    fn put(&mut self, table: u8, key: &[u8], value: &[u8], at: Location) -> Result<(), String>;
    /// `key` of `table` deleted.
    fn delete(&mut self, table: u8, key: &[u8]) -> Result<(), String>;
    /// Live tasks so far (compared with the manifest's checkpoint).
    fn live(&self) -> u64;
}

/// Why the journal was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory does not match what codeQ wrote: refused, untouched.
    #[error("the store in {dir} is damaged: {problem}")]
    Damaged {
        /// The store directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Another process has the store open.
    #[error("the store in {0} is in use by another process")]
    InUse(PathBuf),
    /// The disk failed.
    #[error("cannot read the store: {0}")]
    Io(#[from] io::Error),
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The first segment of the journal.
    pub first_segment: u32,
    /// The segment new changes go to.
    pub last_segment: u32,
    /// Where the next frame goes in it.
    pub tail: u64,
    /// The last batch in the journal.
    pub last_seq: u64,
    /// Live tasks at the end.
    pub live: u64,
    /// Frames read.
    pub frames: u64,
    /// Bytes of the journal's data (segments are preallocated beyond it).
    pub bytes: u64,
    /// True when the previous stop was clean.
    pub clean_stop: bool,
    /// A torn final frame: its segment, offset and length.
    pub torn: Option<(u32, u64, u64)>,
    /// Segment files older than the journal's first (left by a compaction
    /// that stopped half-way; safe to delete).
    pub obsolete: Vec<u32>,
}

/// Whether recovery may repair a torn tail and create a new store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open for use; segments are preallocated to this size.
    Open {
        /// See [`super::LogOptions::segment_bytes`].
        segment_bytes: u64,
    },
    /// Look only.
    Check,
}

/// Takes the store's lock (`LOCK`, an OS file lock held while open).
pub fn lock(dir: &Path) -> Result<File, OpenError> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(OpenError::Io(error)),
    }
}

fn damaged(dir: &Path, problem: impl Into<String>) -> OpenError {
    OpenError::Damaged { dir: dir.to_path_buf(), problem: problem.into() }
}

/// Replays the journal of `dir` into `replay`; see the module docs.
pub fn recover(
    fs: &dyn Fs,
    dir: &Path,
    replay: &mut dyn Replay,
    mode: Mode,
) -> Result<Recovered, OpenError> {
    let names = fs.list(dir)?;
    let segments: BTreeSet<u32> = names.iter().filter_map(|name| segment_id(name)).collect();
    let Some(manifest) = Manifest::read(fs, dir).map_err(|problem| damaged(dir, problem))? else {
        return start_empty(fs, dir, &names, &segments, mode);
    };
    let first = manifest.first_segment;
    let last = segments.last().copied().unwrap_or(first);
    if !segments.contains(&first) {
        return Err(damaged(
            dir,
            format!(
                "journal segment {} is missing (the manifest starts the journal there)",
                file_name(first)
            ),
        ));
    }
    if let Some(gap) = (first..=last).find(|id| !segments.contains(id)) {
        return Err(damaged(dir, format!("journal segment {} is missing", file_name(gap))));
    }
    let mut scan = Scan {
        dir,
        manifest,
        replay,
        last_seq: 0,
        passed_checkpoint: false,
        recovered: Recovered {
            first_segment: first,
            last_segment: last,
            clean_stop: manifest.clean,
            obsolete: segments.range(..first).copied().collect(),
            ..Recovered::default()
        },
    };
    for id in first..=last {
        scan.segment(fs, id, id == last, mode)?;
    }
    scan.finish()
}

/// A directory without a manifest: a new store if it holds nothing else.
fn start_empty(
    fs: &dyn Fs,
    dir: &Path,
    names: &[String],
    segments: &BTreeSet<u32>,
    mode: Mode,
) -> Result<Recovered, OpenError> {
    if names.iter().any(|name| name == "keyspaces" || name == "journals") {
        return Err(damaged(
            dir,
            "it holds data of an earlier codeQ storage format, which this version does not read; start from an empty data directory",
        ));
    }
    if !segments.is_empty() {
        return Err(damaged(
            dir,
            format!("{MANIFEST_FILE} is missing but journal segments are present"),
        ));
    }
    if mode == Mode::Check {
        return Err(damaged(
            dir,
            format!("there is no codeQ store here ({MANIFEST_FILE} is missing)"),
        ));
    }
    let Mode::Open { segment_bytes } = mode else {
        return Err(damaged(
            dir,
            format!("there is no codeQ store here ({MANIFEST_FILE} is missing)"),
        ));
    };
    let file = fs.create(&segment_path(dir, 1))?;
    file.write_all_at(&frame::segment_header(1), 0)?;
    file.truncate(segment_bytes)?;
    file.sync_data()?;
    fs.sync_dir(dir)?;
    Manifest::new().write(fs, dir)?;
    Ok(Recovered {
        first_segment: 1,
        last_segment: 1,
        tail: SEGMENT_HEADER_LEN,
        clean_stop: true,
        ..Recovered::default()
    })
}

fn file_name(id: u32) -> String {
    format!("{id:08}.log")
}

struct Scan<'a> {
    dir: &'a Path,
    manifest: Manifest,
    replay: &'a mut dyn Replay,
    last_seq: u64,
    passed_checkpoint: bool,
    recovered: Recovered,
}

impl Scan<'_> {
    fn segment(
        &mut self,
        fs: &dyn Fs,
        id: u32,
        is_last: bool,
        mode: Mode,
    ) -> Result<(), OpenError> {
        let path = segment_path(self.dir, id);
        let file = fs.open(&path)?;
        let mut bytes = vec![0; usize::try_from(file.size()?).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut bytes, 0)?;
        if frame::parse_segment_header(&bytes) != Some(id) {
            return Err(self.damage(
                id,
                0,
                "the segment header is missing or names another segment",
            ));
        }
        let mut at = SEGMENT_HEADER_LEN as usize;
        let mut sealed = false;
        while at < bytes.len() {
            // A frame never has an empty body: a zero length starts the
            // zero-filled, preallocated rest of the segment.
            let zero_length = bytes[at..].iter().take(4).all(|&byte| byte == 0);
            if zero_length && bytes[at..].iter().all(|&byte| byte == 0) {
                break;
            }
            if sealed {
                return Err(self.damage(id, at, "bytes follow the segment's seal"));
            }
            let parsed = match frame::parse_frame(&bytes[at..]) {
                Ok(parsed) => parsed,
                Err(_) if is_last && self.is_torn_tail(&bytes[at..]) => {
                    self.torn_tail(fs, &file, id, &bytes, at, mode)?;
                    break;
                }
                Err(BadFrame::CutShort) => return Err(self.damage(id, at, "a frame is cut short")),
                Err(BadFrame::Damaged(why)) => return Err(self.damage(id, at, &why)),
            };
            if self.last_seq != 0 && parsed.seq != self.last_seq + 1 {
                return Err(self.damage(
                    id,
                    at,
                    &format!(
                        "change {} follows change {}: changes are missing",
                        parsed.seq, self.last_seq
                    ),
                ));
            }
            if !self.passed_checkpoint && parsed.seq > self.manifest.checkpoint.seq {
                self.check_checkpoint()?;
            }
            match parsed.kind {
                FrameKind::Batch(body) => self.apply(id, at, body)?,
                FrameKind::Seal(next) if next == id + 1 => sealed = true,
                FrameKind::Seal(_) => {
                    return Err(self.damage(id, at, "the seal names the wrong segment"));
                }
            }
            self.last_seq = parsed.seq;
            self.recovered.frames += 1;
            at += parsed.len;
        }
        self.recovered.bytes += at as u64;
        match (sealed, is_last) {
            (false, false) => {
                Err(self.damage(id, at, "the segment ends without its seal (truncated?)"))
            }
            (true, true) => Err(damaged(
                self.dir,
                format!(
                    "journal segment {} is missing (the last segment is sealed)",
                    file_name(id + 1)
                ),
            )),
            _ => {
                if is_last {
                    self.recovered.tail = at as u64;
                }
                Ok(())
            }
        }
    }

    /// A bad frame at the end of the last segment is a torn write when the
    /// previous stop was not clean and no valid frame follows it (the
    /// frame after it would carry the next sequence number but one).
    fn is_torn_tail(&self, rest: &[u8]) -> bool {
        if self.manifest.clean {
            return false;
        }
        let after_next = (self.last_seq + 2).to_le_bytes();
        let valid_frame_follows = (1..rest.len().saturating_sub(16)).any(|skip| {
            rest[skip + 8..skip + 16] == after_next && frame::parse_frame(&rest[skip..]).is_ok()
        });
        !valid_frame_follows
    }

    fn torn_tail(
        &mut self,
        fs: &dyn Fs,
        file: &std::sync::Arc<dyn super::fs::FsFile>,
        id: u32,
        bytes: &[u8],
        at: usize,
        mode: Mode,
    ) -> Result<(), OpenError> {
        let torn = bytes.len() - at;
        self.recovered.torn = Some((id, at as u64, torn as u64));
        let Mode::Open { segment_bytes } = mode else { return Ok(()) };
        let saved = self.dir.join(format!("torn-{id:08}-{at}.bin"));
        let copy = fs.create(&saved)?;
        copy.write_all_at(&bytes[at..], 0)?;
        copy.sync_data()?;
        fs.sync_dir(self.dir)?;
        // Cut, then zero-filled again up to the preallocated size.
        file.truncate(at as u64)?;
        file.truncate(segment_bytes.max(at as u64))?;
        file.sync_data()?;
        tracing::warn!(
            segment = %file_name(id),
            offset = at,
            bytes = torn,
            saved = %saved.display(),
            "the journal ended with a torn write (a change that was never acknowledged); it was cut off"
        );
        Ok(())
    }

    fn apply(&mut self, id: u32, at: usize, body: &[u8]) -> Result<(), OpenError> {
        let ops = frame::ops(body).map_err(|why| self.damage(id, at, &why))?;
        let body_start = (at + frame::FRAME_HEADER_LEN) as u64;
        for op in ops {
            let applied = match op {
                Op::Put { table, key, value, at: value_at } => {
                    let location = Location {
                        segment: id,
                        offset: body_start + value_at as u64,
                        len: value.len() as u32,
                    };
                    self.replay.put(table, key, value, location)
                }
                Op::Delete { table, key } => self.replay.delete(table, key),
            };
            applied.map_err(|why| self.damage(id, at, &why))?;
        }
        Ok(())
    }

    fn check_checkpoint(&mut self) -> Result<(), OpenError> {
        self.passed_checkpoint = true;
        let expected = self.manifest.checkpoint;
        if self.last_seq != expected.seq && expected.seq != 0 {
            return Err(damaged(
                self.dir,
                format!(
                    "the journal skips from change {} past change {} recorded in {MANIFEST_FILE}",
                    self.last_seq, expected.seq
                ),
            ));
        }
        let live = self.replay.live();
        if live != expected.live {
            return Err(damaged(
                self.dir,
                format!(
                    "{live} tasks at change {}, where {MANIFEST_FILE} recorded {}: records are missing",
                    expected.seq, expected.live
                ),
            ));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Recovered, OpenError> {
        let expected = self.manifest.checkpoint;
        if self.last_seq < expected.seq {
            return Err(damaged(
                self.dir,
                format!(
                    "the journal ends at change {} but {MANIFEST_FILE} recorded change {}: its end is missing (truncated or deleted)",
                    self.last_seq, expected.seq
                ),
            ));
        }
        if !self.passed_checkpoint {
            self.check_checkpoint()?;
        }
        if self.manifest.clean && self.last_seq != expected.seq {
            return Err(damaged(self.dir, "changes follow a clean stop"));
        }
        self.recovered.last_seq = self.last_seq;
        self.recovered.live = self.replay.live();
        Ok(self.recovered)
    }

    fn damage(&self, id: u32, at: usize, why: &str) -> OpenError {
        damaged(self.dir, format!("journal segment {} at byte {at}: {why}", file_name(id)))
    }
}
