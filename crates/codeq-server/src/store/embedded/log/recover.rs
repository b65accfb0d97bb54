//! Recovery: replays the journal at start-up and refuses one that does not
//! match its manifest.
//!
//! Checks, each refusing the start with a message that names the problem:
//! the manifest is there and readable (or the directory holds no data, and
//! a new store is created); every segment from the manifest's first one is
//! present and each but the last is sealed by a frame naming the next;
//! every frame's checksum holds and sequence numbers follow each other; the
//! journal reaches the manifest's checkpoint, with as many live tasks there
//! as the manifest recorded; after a clean stop it ends exactly at the
//! checkpoint.
//!
//! Replaying changes nothing. What a crash can leave behind is reported as
//! [`Repairs`], made only once the caller has accepted what was replayed
//! ([`repair`]), the way every write-ahead log makes them:
//!
//! - a torn final write: a bad final frame (cut short or failing its
//!   checksum) that no valid frame queued after it was durable follows —
//!   its `fsync` never completed, so it was never acknowledged. It is cut
//!   off after its bytes are saved to `torn-<segment>-<offset>-<seq>.bin`;
//! - an empty segment after an unsealed last one (which may be empty
//!   itself): a roll to a new segment created the file, then stopped
//!   before its seal was durable (more than one such segment is refused:
//!   no crash leaves two);
//! - segments older than the journal's first: a compaction rewrote the
//!   manifest, then stopped before it deleted them.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, FrameKind, Op, SEGMENT_HEADER_LEN};
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
    Io(io::Error),
}

/// The cause stays in the message only, not as a `source` as well: an
/// error chain printed whole would say it twice.
impl From<io::Error> for OpenError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// What a crash left that the next start repairs (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// No store yet: one is created.
    pub fresh: bool,
    /// A torn final write: its segment, offset and length.
    pub torn: Option<(u32, u64, u64)>,
    /// The empty segment after the unsealed last one: deleted.
    pub empty: Vec<u32>,
    /// The last segment, empty and without its header (a roll stopped
    /// right after creating it): its header is written.
    pub header: Option<u32>,
    /// Segment files older than the journal's first: deleted.
    pub obsolete: Vec<u32>,
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
    /// Bytes of data of each segment but the last.
    pub sealed_sizes: Vec<(u32, u64)>,
    /// True when the previous stop was clean.
    pub clean_stop: bool,
    /// What the next start repairs.
    pub repairs: Repairs,
}

/// Whether a directory without a manifest is a new store or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open for use: an empty directory becomes a new store.
    Open,
    /// Look only.
    Check,
}

/// The name of the store's lock file.
pub const LOCK_NAME: &str = "LOCK";

/// Takes the store's lock (`LOCK`, an OS file lock held while open).
pub fn lock(dir: &Path) -> Result<File, OpenError> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_NAME))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(OpenError::Io(error)),
    }
}

fn damaged(dir: &Path, problem: impl Into<String>) -> OpenError {
    OpenError::Damaged { dir: dir.to_path_buf(), problem: problem.into() }
}

fn file_name(id: u32) -> String {
    format!("{id:08}.log")
}

/// Replays the journal of `dir` into `replay`, changing nothing; see the
/// module docs.
pub fn recover(
    fs: &dyn Fs,
    dir: &Path,
    replay: &mut dyn Replay,
    mode: Mode,
) -> Result<Recovered, OpenError> {
    let names = fs.list(dir)?;
    let segments: BTreeSet<u32> = names.iter().filter_map(|name| segment_id(name)).collect();
    let manifest = Manifest::read(fs, dir).map_err(|problem| match problem {
        super::manifest::ReadError::Io(error) => OpenError::Io(error),
        super::manifest::ReadError::Damaged(problem) => damaged(dir, problem),
    })?;
    let Some(manifest) = manifest else {
        return no_manifest(fs, dir, &names, &segments, mode);
    };
    let first = manifest.first_segment;
    if !segments.contains(&first) {
        return Err(damaged(
            dir,
            format!(
                "journal segment {} is missing (the manifest starts the journal there)",
                file_name(first)
            ),
        ));
    }
    let last = segments.last().copied().unwrap_or(first);
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
            ..Recovered::default()
        },
    };
    scan.recovered.repairs.obsolete = segments.range(..first).copied().collect();
    // A roll creates the next segment (its header durable) before the seal
    // that points at it, and writes frames into a segment only once that
    // seal is durable: so a crash leaves at most one segment after the
    // journal's end, and it holds no frame. The segment the journal ends
    // in may hold none either: a round that rolled twice created it, then
    // stopped before its frames were durable.
    let last_is_empty = last > first && is_empty_segment(&read_segment(fs, dir, last)?);
    for id in first..=last {
        let bytes = read_segment(fs, dir, id)?;
        let may_end = id == last || (id + 1 == last && last_is_empty);
        let sealed = scan.segment(id, &bytes, may_end, id == last)?;
        if sealed {
            scan.recovered.sealed_sizes.push((id, scan.recovered.tail));
        }
        if !sealed && id < last {
            if !may_end {
                return Err(scan.damage(
                    id,
                    scan.recovered.tail as usize,
                    "the segment ends without its seal (truncated?)",
                ));
            }
            scan.recovered.repairs.empty.push(last);
            scan.recovered.last_segment = id;
            break;
        }
    }
    scan.finish()
}

/// Reads a whole segment file.
fn read_segment(fs: &dyn Fs, dir: &Path, id: u32) -> Result<Vec<u8>, OpenError> {
    let file = fs.open(&segment_path(dir, id))?;
    let size = file.size()?;
    let too_large = u64::from(frame::MAX_FRAME_BODY) * 2;
    if size > too_large {
        return Err(damaged(
            dir,
            format!("journal segment {} is {size} bytes long", file_name(id)),
        ));
    }
    let mut bytes = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// True when a segment holds no frame: a header (or less) and zeros.
fn is_empty_segment(bytes: &[u8]) -> bool {
    bytes.iter().skip(SEGMENT_HEADER_LEN as usize).all(|&byte| byte == 0)
}

/// A directory without a manifest: a new store when it holds no data.
fn no_manifest(
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
    for id in segments {
        // A new store's first segment is created before its manifest.
        if !is_empty_segment(&read_segment(fs, dir, *id)?) {
            return Err(damaged(
                dir,
                format!("{MANIFEST_FILE} is missing but journal segments are present"),
            ));
        }
    }
    if mode == Mode::Check {
        return Err(damaged(
            dir,
            format!("there is no codeQ store here ({MANIFEST_FILE} is missing)"),
        ));
    }
    let repairs =
        Repairs { fresh: true, empty: segments.iter().copied().collect(), ..Repairs::default() };
    Ok(Recovered {
        first_segment: 1,
        last_segment: 1,
        tail: SEGMENT_HEADER_LEN,
        clean_stop: true,
        repairs,
        ..Recovered::default()
    })
}

/// Makes the repairs recovery reported (see the module docs), then syncs
/// every segment: what was read is durable before it is relied on.
pub fn repair(
    fs: &dyn Fs,
    dir: &Path,
    recovered: &Recovered,
    segment_bytes: u64,
) -> Result<(), OpenError> {
    let repairs = &recovered.repairs;
    for id in repairs.empty.iter().chain(&repairs.obsolete) {
        fs.remove(&segment_path(dir, *id))?;
    }
    if !repairs.obsolete.is_empty() {
        tracing::info!(segments = ?repairs.obsolete, "deleted journal segments a compaction had left behind");
    }
    if !repairs.empty.is_empty() && !repairs.fresh {
        tracing::info!(segments = ?repairs.empty, "deleted an empty journal segment an unfinished roll had left");
    }
    if repairs.fresh {
        let file = fs.create(&segment_path(dir, 1))?;
        write_header(file.as_ref(), 1, segment_bytes)?;
        fs.sync_dir(dir)?;
        Manifest::new().write(fs, dir)?;
    }
    if let Some(id) = repairs.header
        && !repairs.empty.contains(&id)
    {
        write_header(fs.open(&segment_path(dir, id))?.as_ref(), id, segment_bytes)?;
    }
    if let Some((segment, offset, length)) = repairs.torn {
        cut_torn_tail(fs, dir, segment, offset, length, recovered.last_seq, segment_bytes)?;
    }
    for id in recovered.first_segment..=recovered.last_segment {
        fs.open(&segment_path(dir, id))?.sync_data()?;
    }
    fs.sync_dir(dir)?;
    Ok(())
}

/// Writes segment `id`'s header into an empty file and preallocates it.
fn write_header(file: &dyn super::fs::FsFile, id: u32, segment_bytes: u64) -> io::Result<()> {
    file.write_all_at(&frame::segment_header(id), 0)?;
    file.truncate(segment_bytes)?;
    file.sync_data()
}

/// Saves the torn bytes aside, then cuts them off (and zero-fills the
/// segment again up to its preallocated size).
fn cut_torn_tail(
    fs: &dyn Fs,
    dir: &Path,
    segment: u32,
    offset: u64,
    length: u64,
    last_seq: u64,
    segment_bytes: u64,
) -> Result<(), OpenError> {
    let file = fs.open(&segment_path(dir, segment))?;
    // `length` is what was written (the scan leaves out the zeros of the
    // preallocated rest): only that is worth keeping.
    let mut torn = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut torn, offset)?;
    let saved = (0..)
        .map(|n| {
            let suffix = if n == 0 { String::new() } else { format!("-{n}") };
            dir.join(format!("torn-{segment:08}-{offset}-{last_seq}{suffix}.bin"))
        })
        .find(|path| !path.exists())
        .unwrap_or_else(|| dir.join("torn.bin"));
    let copy = fs.create(&saved)?;
    let kept = copy.write_all_at(&torn, 0).and_then(|()| copy.sync_data());
    if let Err(error) = kept {
        // A full disk: the next start tries again, under the same name,
        // rather than leaving a file a start for each attempt.
        let _ = fs.remove(&saved);
        return Err(error.into());
    }
    fs.sync_dir(dir)?;
    file.truncate(offset)?;
    file.truncate(segment_bytes.max(offset))?;
    file.sync_data()?;
    tracing::warn!(
        segment = %file_name(segment),
        offset,
        bytes = torn.len(),
        saved = %saved.display(),
        "the journal ended with a torn write (a change that was never acknowledged); it was cut off"
    );
    Ok(())
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
    /// Replays one segment; true when it ends with its seal. `may_end`:
    /// the journal may end in it (a torn final write is possible);
    /// `is_last`: it is the last segment file.
    fn segment(
        &mut self,
        id: u32,
        bytes: &[u8],
        may_end: bool,
        is_last: bool,
    ) -> Result<bool, OpenError> {
        if frame::parse_segment_header(bytes) != Some(id) {
            if is_empty_segment(bytes) && id > self.recovered.first_segment {
                // Created by a roll that stopped before its header: empty.
                self.recovered.tail = SEGMENT_HEADER_LEN;
                if may_end {
                    self.recovered.repairs.header = Some(id);
                }
                return Ok(false);
            }
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
                Err(bad) => {
                    if may_end && self.is_torn_tail(&bytes[at..]) {
                        // What was written: the rest of a preallocated
                        // segment is zeros.
                        let written = bytes[at..].iter().rposition(|&byte| byte != 0);
                        let length = written.map_or(0, |last| last + 1) as u64;
                        self.recovered.repairs.torn = Some((id, at as u64, length));
                        break;
                    }
                    return Err(self.damage(id, at, &bad.to_string()));
                }
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
        self.recovered.tail = at as u64;
        if sealed && is_last {
            return Err(damaged(
                self.dir,
                format!(
                    "journal segment {} is missing (the last segment is sealed)",
                    file_name(id + 1)
                ),
            ));
        }
        Ok(sealed)
    }

    /// A bad frame at the end of the last segment is a torn write when the
    /// previous stop was not clean and no valid frame follows that was
    /// queued once the bad one was durable (such a frame proves the bad
    /// one had been written and synced: it is damage, not a torn write).
    fn is_torn_tail(&self, rest: &[u8]) -> bool {
        if self.manifest.clean {
            return false;
        }
        let bad = self.last_seq + 1;
        let highest = bad + (rest.len() / frame::FRAME_HEADER_LEN) as u64;
        let proves_durable = (1..rest.len()).any(|skip| {
            frame::seq_at(rest, skip).is_some_and(|seq| seq > bad && seq <= highest)
                && frame::parse_frame(&rest[skip..]).is_ok_and(|later| later.durable >= bad)
        });
        !proves_durable
    }

    fn apply(&mut self, id: u32, at: usize, body: &[u8]) -> Result<(), OpenError> {
        let ops = frame::ops(body).map_err(|why| self.damage(id, at, &why))?;
        let body_start = (at + frame::FRAME_HEADER_LEN) as u64;
        for op in ops {
            let applied = match op {
                Op::Put { table, key, value, at: value_at } => {
                    let location = Location::new(id, body_start + value_at as u64, value.len());
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
