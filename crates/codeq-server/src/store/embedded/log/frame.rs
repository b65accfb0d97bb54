//! The journal's byte format: segment headers, checksummed frames, and the
//! put / delete operations a frame carries.
//!
//! ```text
//! segment := header frame*                 header: "CQLOG\0\0\x01" id:u32 0:u32
//! frame   := len:u32 crc:u32 seq:u64 durable:u64 kind:u8 body[len]
//!            crc = CRC-32 (IEEE) of seq, durable, kind and body
//! kind 1  := op*                           one atomic batch of changes
//! kind 2  := next:u32                      seal: the segment ends, `next` follows
//! op      := 1 table:u8 klen:u8 key vlen:u32 value      put
//!          | 2 table:u8 klen:u8 key                     delete
//! ```
//!
//! Integers are little-endian. A frame is applied whole or not at all: a
//! torn write leaves a frame that is cut short or fails its checksum.
//!
//! `durable` is the durable watermark when the frame was queued: every
//! frame up to it had been made durable. Recovery uses it to tell a torn
//! write from damage: a bad frame followed by a valid one that was queued
//! after the bad one was durable cannot be a write that never completed.

use super::Table;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"CQLOG\0\0\x01";

/// Bytes before the first frame of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 16;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 25;

/// The largest frame body: a larger change is refused before it is
/// queued, and a larger length read back is damage.
pub const MAX_FRAME_BODY: u32 = 1 << 31;

/// Bytes of a seal frame.
pub const SEAL_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64 + 4;

const KIND_BATCH: u8 = 1;
const KIND_SEAL: u8 = 2;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// The header of segment `id`.
pub fn segment_header(id: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&id.to_le_bytes());
    header
}

/// Checks a segment header; the id it names.
pub fn parse_segment_header(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize || &bytes[..8] != SEGMENT_MAGIC {
        return None;
    }
    Some(u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]))
}

/// A batch of operations being encoded into one frame.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    /// Where each put's value starts in `buf`, and its length.
    values: Vec<(usize, u32)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self { buf: vec![0; FRAME_HEADER_LEN], values: Vec::new() }
    }
}

/// A value too large for the format.
#[derive(Debug, thiserror::Error)]
#[error("a stored value is too large ({0} bytes)")]
pub struct TooLarge(pub usize);

impl Batch {
    /// An empty batch with room for about `bytes` of operations (a large
    /// batch then never holds two copies of itself while growing).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + bytes);
        buf.resize(FRAME_HEADER_LEN, 0);
        Self { buf, values: Vec::new() }
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == FRAME_HEADER_LEN
    }

    /// Encoded size of the whole frame.
    pub fn frame_len(&self) -> usize {
        self.buf.len()
    }

    /// Adds a put whose value `encode` appends to the buffer it is given;
    /// returns the put's index (see [`Batch::value_span`]).
    pub fn put_with<E>(
        &mut self,
        table: Table,
        key: &[u8],
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E>
    where
        E: From<TooLarge>,
    {
        let op_start = self.buf.len();
        self.op_header(OP_PUT, table, key)?;
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        if let Err(error) = encode(&mut self.buf) {
            self.buf.truncate(op_start);
            return Err(error);
        }
        let len = self.buf.len() - start;
        let len32 = u32::try_from(len).map_err(|_| TooLarge(len))?;
        self.buf[len_at..start].copy_from_slice(&len32.to_le_bytes());
        self.values.push((start, len32));
        Ok(self.values.len() - 1)
    }

    /// Adds a put of `value`.
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<usize, TooLarge> {
        self.put_with(table, key, |buf| {
            buf.extend_from_slice(value);
            Ok::<(), TooLarge>(())
        })
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), TooLarge> {
        self.op_header(OP_DELETE, table, key)
    }

    fn op_header(&mut self, op: u8, table: Table, key: &[u8]) -> Result<(), TooLarge> {
        let key_len = u8::try_from(key.len()).map_err(|_| TooLarge(key.len()))?;
        self.buf.extend_from_slice(&[op, table as u8, key_len]);
        self.buf.extend_from_slice(key);
        Ok(())
    }

    /// The offset (within the frame) and length of put number `index`.
    pub fn value_span(&self, index: usize) -> Option<(u64, u32)> {
        self.values.get(index).map(|&(start, len)| (start as u64, len))
    }

    /// True when the frame is too large to store (see [`MAX_FRAME_BODY`]).
    pub fn is_too_large(&self) -> bool {
        self.buf.len() - FRAME_HEADER_LEN > MAX_FRAME_BODY as usize
    }

    /// Finishes the frame as batch number `seq`, queued when batches up
    /// to `durable` were durable.
    pub fn finish(mut self, seq: u64, durable: u64) -> Vec<u8> {
        write_header(&mut self.buf, seq, durable, KIND_BATCH);
        self.buf
    }
}

/// A seal frame: the segment ends and segment `next` follows.
pub fn seal_frame(seq: u64, durable: u64, next: u32) -> Vec<u8> {
    let mut buf = vec![0; FRAME_HEADER_LEN];
    buf.extend_from_slice(&next.to_le_bytes());
    write_header(&mut buf, seq, durable, KIND_SEAL);
    buf
}

fn write_header(buf: &mut [u8], seq: u64, durable: u64, kind: u8) {
    let body_len = u32::try_from(buf.len() - FRAME_HEADER_LEN).unwrap_or(u32::MAX);
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&durable.to_le_bytes());
    buf[24] = kind;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&body_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind<'a> {
    /// A batch of operations (its body).
    Batch(&'a [u8]),
    /// The segment ends; this segment follows.
    Seal(u32),
}

/// One frame read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// The durable watermark when it was queued.
    pub durable: u64,
    /// Its content.
    pub kind: FrameKind<'a>,
    /// Bytes of the whole frame.
    pub len: usize,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFrame {
    /// The bytes end before the frame does (a torn write at the end).
    #[error("a frame is cut short")]
    CutShort,
    /// The frame is whole but wrong (checksum, kind or length).
    #[error("{0}")]
    Damaged(String),
}

/// Reads the frame at the start of `bytes`.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame<'_>, BadFrame> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(BadFrame::CutShort);
    }
    let body_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if body_len > MAX_FRAME_BODY {
        return Err(BadFrame::Damaged(format!("frame length {body_len} is impossible")));
    }
    let len = FRAME_HEADER_LEN + body_len as usize;
    if bytes.len() < len {
        return Err(BadFrame::CutShort);
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32fast::hash(&bytes[8..len]) != crc {
        return Err(BadFrame::Damaged("checksum mismatch".into()));
    }
    let seq = read_u64(bytes, 8);
    let durable = read_u64(bytes, 16);
    let body = &bytes[FRAME_HEADER_LEN..len];
    let kind = match bytes[24] {
        KIND_BATCH => FrameKind::Batch(body),
        KIND_SEAL if body.len() == 4 => {
            FrameKind::Seal(u32::from_le_bytes([body[0], body[1], body[2], body[3]]))
        }
        other => return Err(BadFrame::Damaged(format!("unknown frame kind {other}"))),
    };
    Ok(Frame { seq, durable, kind, len })
}

/// The sequence number a frame starting at `at` would carry (its header
/// may be anything: the caller checks the frame).
pub fn seq_at(bytes: &[u8], at: usize) -> Option<u64> {
    (bytes.len() >= at + 16).then(|| read_u64(bytes, at + 8))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(value)
}

/// One operation of a batch read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A value stored under a key; `at` is the value's offset in the body.
    Put {
        /// The table.
        table: u8,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Where the value starts within the frame body.
        at: usize,
    },
    /// A key deleted.
    Delete {
        /// The table.
        table: u8,
        /// The key.
        key: &'a [u8],
    },
}

/// The operations of a batch body, in order; an error when the body does
/// not parse (which a valid checksum makes a bug or deliberate damage).
pub fn ops(body: &[u8]) -> Result<Vec<Op<'_>>, String> {
    let mut ops = Vec::new();
    let mut at = 0;
    let truncated = || "a batch ends inside an operation".to_string();
    while at < body.len() {
        let header = body.get(at..at + 3).ok_or_else(truncated)?;
        let (op, table, key_len) = (header[0], header[1], usize::from(header[2]));
        at += 3;
        let key = body.get(at..at + key_len).ok_or_else(truncated)?;
        at += key_len;
        match op {
            OP_PUT => {
                let len = body.get(at..at + 4).ok_or_else(truncated)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                at += 4;
                let value = body.get(at..at + len).ok_or_else(truncated)?;
                ops.push(Op::Put { table, key, value, at });
                at += len;
            }
            OP_DELETE => ops.push(Op::Delete { table, key }),
            other => return Err(format!("unknown operation {other}")),
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_with_the_offsets_of_its_values() {
        let mut batch = Batch::default();
        let first = batch.put(Table::Tasks, b"k1", b"hello").unwrap();
        batch.delete(Table::Results, b"k2").unwrap();
        let second = batch.put(Table::States, b"k3", b"").unwrap();
        let spans = [batch.value_span(first).unwrap(), batch.value_span(second).unwrap()];
        let bytes = batch.finish(42, 40);
        let frame = parse_frame(&bytes).unwrap();
        assert_eq!((frame.seq, frame.durable, frame.len), (42, 40, bytes.len()));
        let FrameKind::Batch(body) = frame.kind else { panic!("not a batch") };
        let ops = ops(body).unwrap();
        assert_eq!(ops.len(), 3);
        let Op::Put { value, at, .. } = ops[0] else { panic!() };
        assert_eq!(value, b"hello");
        assert_eq!((at + FRAME_HEADER_LEN) as u64, spans[0].0);
        assert_eq!(&bytes[spans[0].0 as usize..][..5], b"hello");
        assert_eq!(ops[1], Op::Delete { table: Table::Results as u8, key: b"k2" });
        assert_eq!(spans[1].1, 0);
    }

    #[test]
    fn cut_short_and_damaged_frames_are_told_apart() {
        let bytes = seal_frame(7, 6, 3);
        assert_eq!(parse_frame(&bytes).unwrap().kind, FrameKind::Seal(3));
        assert_eq!(parse_frame(&bytes[..bytes.len() - 1]), Err(BadFrame::CutShort));
        let mut flipped = bytes.clone();
        flipped[26] ^= 1;
        assert!(matches!(parse_frame(&flipped), Err(BadFrame::Damaged(_))));
    }

    #[test]
    fn segment_headers_name_their_segment() {
        assert_eq!(parse_segment_header(&segment_header(9)), Some(9));
        assert_eq!(parse_segment_header(b"something else entirely"), None);
    }
}
