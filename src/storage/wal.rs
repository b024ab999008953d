//! A write-ahead log in segment files whose blocks are written before use, for RocksDB with its
//! own write-ahead log off.
//!
//! Why: fdatasync of a file that grows must also write the file's size (on ext4, a journal
//! commit), one more device round trip per synced write than for a file whose blocks are all
//! written already. Measured on the virtio disk of the benchmarks, with three members syncing
//! at once: 0.31 ms a sync on a growing file, 0.20 ms on a written one.
//!
//! Layout: files `wal-N.seg` in one directory (N is a slot; the header says which segment a
//! file holds). A segment is zero-filled before it is used, and then holds:
//! - a header of [`HEADER`] bytes: [`MAGIC`], the segment's sequence number (u64), and a
//!   CRC-32 of both;
//! - records from there on, each starting 8-byte aligned: its length (u32), a CRC-32 (u32) of
//!   the segment's sequence number, the length, the synced mark and the payload, the synced
//!   mark (u64: where the segment's synced bytes ended when the record was written), then the
//!   payload. A length of [`SEAL_LEN`] (no payload) seals the segment: the writer went on to
//!   the next one. A record head of zeros ends the records.
//!
//! What it guarantees to its caller ([`super::disk::RocksDisk`]):
//! - [`Wal::append`] then [`Wal::sync`]: the record, and every record appended before it,
//!   survive a crash;
//! - [`Wal::open`] replays, in order, every record of the newest run of consecutive segments,
//!   then has the tables flushed before it writes anything. Replaying records the tables
//!   already hold is harmless, because every write is in the log, each record sets keys to
//!   values, and they are replayed in order: the last write of each key wins either way;
//! - a segment is reused only once the tables hold everything written before it was left
//!   ([`Tables::flushed`] after the flush started when it was sealed);
//! - damage to what was synced is refused, not skipped. A record that fails its checksum while
//!   an intact record after it says it had been synced, a segment other than the newest
//!   without its seal, or a header that fails its checksum is [`StorageError::Corrupt`].
//!   A damaged record that no later record saw synced is a write that a crash cut short (a
//!   machine that loses power may write a later page before an earlier one): it and all
//!   after it were never synced, and replay ends there.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Result, StorageError};

pub const MAGIC: &[u8; 8] = b"LFSWAL01";
/// Bytes before the first record: magic (8), sequence (8), CRC (4), zeros.
pub const HEADER: u64 = 32;
/// Bytes of a record's length, checksum and synced mark.
const RECORD_HEADER: u64 = 16;
/// The length field of a seal.
pub const SEAL_LEN: u32 = u32::MAX;
/// The capacity of a new segment; a record too big for it gets a segment of its own size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// How long a rotation waits for the tables to finish the flush that frees the oldest
/// segment before it reports the tables stuck.
const FLUSH_WAIT: Duration = Duration::from_secs(60);

/// The tables under the log: RocksDB's memtables and their flushes to disk.
pub trait Tables {
    /// Starts writing everything written so far to the tables' own files; with `wait`, returns
    /// once it is there.
    fn flush(&self, wait: bool) -> Result<()>;
    /// Whether every flush started so far has finished.
    fn flushed(&self) -> Result<bool>;
}

struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    end: u64,
    /// Where the bytes known synced end.
    synced: u64,
    /// The file's size.
    capacity: u64,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    current: Segment,
    /// Sealed; the flush started when it was sealed may still run.
    previous: Option<Segment>,
    /// Files free for the next segment.
    spare: Vec<PathBuf>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let what = what.into();
    move |e| StorageError::Io(what, e)
}

fn aligned(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn record_crc(seq: u64, len: u32, synced: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&synced.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record's head followed by its payload.
fn record_bytes(seq: u64, len: u32, synced: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RECORD_HEADER as usize + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(seq, len, synced, payload).to_le_bytes());
    buf.extend_from_slice(&synced.to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

fn header_bytes(seq: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a file's header says.
enum Header {
    /// All zeros (or too short to hold one): a file not in use.
    Blank,
    Segment(u64),
}

fn read_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if bytes.len() < HEADER as usize || bytes[..HEADER as usize].iter().all(|b| *b == 0) {
        return Ok(Header::Blank);
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes[..HEADER as usize] != header_bytes(seq) {
        return Err(StorageError::Corrupt(format!(
            "write-ahead log {}: damaged header",
            path.display()
        )));
    }
    Ok(Header::Segment(seq))
}

/// An intact record's head.
struct Record {
    /// The payload's length, or [`SEAL_LEN`].
    len: u32,
    /// Where the segment's synced bytes ended when it was written.
    synced: u64,
}

/// The record at `at` of a segment's bytes, if it is intact.
fn record_at(bytes: &[u8], seq: u64, at: u64) -> Option<Record> {
    let at = at as usize;
    let head = bytes.get(at..at.checked_add(RECORD_HEADER as usize)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    let synced = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    let payload: &[u8] = if len == SEAL_LEN {
        &[]
    } else {
        let start = at + RECORD_HEADER as usize;
        bytes.get(start..start.checked_add(len as usize)?)?
    };
    (record_crc(seq, len, synced, payload) == crc).then_some(Record { len, synced })
}

/// How a segment's records end.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Sealed,
    /// Zeros, or a record that a crash cut short, at this offset.
    Open(u64),
}

/// Calls `replay` with each record of one segment, in order; says how its records end.
fn replay_segment(
    path: &Path,
    bytes: &[u8],
    seq: u64,
    replay: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Ending> {
    let mut at = HEADER;
    loop {
        let Some(head) = bytes.get(at as usize..(at + RECORD_HEADER) as usize) else {
            return Ok(Ending::Open(at));
        };
        if head.iter().all(|b| *b == 0) {
            return Ok(Ending::Open(at));
        }
        match record_at(bytes, seq, at) {
            Some(Record { len: SEAL_LEN, .. }) => return Ok(Ending::Sealed),
            Some(Record { len, .. }) => {
                let start = (at + RECORD_HEADER) as usize;
                replay(&bytes[start..start + len as usize])?;
                at = aligned(at + RECORD_HEADER + len as u64);
            }
            None => {
                // Cut short by a crash only if no intact record after it saw it synced.
                let mut later = aligned(at + 1);
                while later + RECORD_HEADER <= bytes.len() as u64 {
                    if record_at(bytes, seq, later).is_some_and(|r| r.synced > at) {
                        return Err(StorageError::Corrupt(format!(
                            "write-ahead log {}: the record at byte {at} is damaged, and a \
                             later record says it had been synced",
                            path.display()
                        )));
                    }
                    later += 8;
                }
                log::warn!(
                    "write-ahead log {}: replay ends at byte {at}, a record that a crash cut \
                     short; it and anything after it were never synced",
                    path.display()
                );
                return Ok(Ending::Open(at));
            }
        }
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it if needed): replays every record that may not be
    /// in the tables yet, has the tables flush them, and starts a new segment.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        replay: &mut dyn FnMut(&[u8]) -> Result<()>,
        tables: &dyn Tables,
    ) -> Result<Wal> {
        std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        let mut spare = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(io(dir.display().to_string()))?;
        for entry in entries {
            let path = entry.map_err(io(dir.display().to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("seg") {
                continue;
            }
            let mut head = vec![0u8; HEADER as usize];
            let file = File::open(&path).map_err(io(path.display().to_string()))?;
            let n = file
                .read_at(&mut head, 0)
                .map_err(io(path.display().to_string()))?;
            head.truncate(n);
            match read_header(&path, &head)? {
                Header::Blank => spare.push(path),
                Header::Segment(seq) => files.push((seq, path)),
            }
        }
        files.sort();
        // The newest run of consecutive segments; older ones were left and flushed.
        let mut run_start = files.len();
        while run_start > 0
            && (run_start == files.len() || files[run_start - 1].0 + 1 == files[run_start].0)
        {
            run_start -= 1;
        }
        let last_seq = files.last().map(|(s, _)| *s).unwrap_or(0);
        for (i, (seq, path)) in files.iter().enumerate() {
            if i < run_start {
                continue;
            }
            let bytes = std::fs::read(path).map_err(io(path.display().to_string()))?;
            let ending = replay_segment(path, &bytes, *seq, replay)?;
            if *seq != last_seq && ending != Ending::Sealed {
                return Err(StorageError::Corrupt(format!(
                    "write-ahead log {}: segment {seq} ends without its seal, and a later one \
                     follows",
                    path.display()
                )));
            }
        }
        tables.flush(true)?;
        spare.extend(files.into_iter().map(|(_, p)| p));
        let current = new_segment(dir, &mut spare, last_seq + 1, segment_bytes)?;
        for extra in spare.iter().skip(1) {
            std::fs::remove_file(extra).map_err(io(extra.display().to_string()))?;
        }
        spare.truncate(1);
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            current,
            previous: None,
            spare,
        })
    }

    /// Appends `record`; it is durable once [`Wal::sync`] returns. Moves to a new segment
    /// when this one is full.
    pub fn append(&mut self, record: &[u8], tables: &dyn Tables) -> Result<()> {
        let len = u32::try_from(record.len())
            .ok()
            .filter(|l| *l != SEAL_LEN)
            .ok_or_else(|| StorageError::Corrupt("a write too big for the log".into()))?;
        let need = aligned(RECORD_HEADER + len as u64) + RECORD_HEADER;
        if self.current.end + need > self.current.capacity {
            self.rotate(HEADER + need, tables)?;
        }
        let seg = &mut self.current;
        let buf = record_bytes(seg.seq, len, seg.synced, record);
        seg.file
            .write_all_at(&buf, seg.end)
            .map_err(io(seg.path.display().to_string()))?;
        seg.end = aligned(seg.end + buf.len() as u64);
        Ok(())
    }

    /// Makes every record appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        let seg = &mut self.current;
        seg.file
            .sync_data()
            .map_err(io(seg.path.display().to_string()))?;
        seg.synced = seg.end;
        Ok(())
    }

    /// Seals the current segment and starts the next, with room for `need` bytes at least.
    fn rotate(&mut self, need: u64, tables: &dyn Tables) -> Result<()> {
        let seal_at = self.current.end;
        let seg = &self.current;
        let seal = record_bytes(seg.seq, SEAL_LEN, seg.synced, &[]);
        seg.file
            .write_all_at(&seal, seal_at)
            .map_err(io(seg.path.display().to_string()))?;
        self.sync()?;
        if let Some(previous) = self.previous.take() {
            // Everything in it went into the flush started when it was sealed.
            let started = Instant::now();
            while !tables.flushed()? {
                if started.elapsed() > FLUSH_WAIT {
                    return Err(StorageError::Corrupt(format!(
                        "the tables did not finish a flush in {FLUSH_WAIT:?}; the write-ahead \
                         log cannot reuse {}",
                        previous.path.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            self.spare.push(previous.path);
        }
        let capacity = self.segment_bytes.max(need);
        let created = self.spare.is_empty();
        let next = new_segment(&self.dir, &mut self.spare, self.current.seq + 1, capacity)?;
        if created {
            // The new file's name must survive a power loss as its records will.
            sync_dir(&self.dir)?;
        }
        self.previous = Some(std::mem::replace(&mut self.current, next));
        tables.flush(false)
    }
}

/// A zero-filled segment `seq` of `capacity` bytes, in a spare file if there is one, its
/// header written and synced.
fn new_segment(dir: &Path, spare: &mut Vec<PathBuf>, seq: u64, capacity: u64) -> Result<Segment> {
    let path = match spare.pop() {
        Some(p) => p,
        None => (0..)
            .map(|n| dir.join(format!("wal-{n}.seg")))
            .find(|p| !p.exists())
            .expect("a free name"),
    };
    let what = path.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(what.clone()))?;
    // A blank header first: a crash while the rest is zeroed leaves a blank file, never an
    // old segment half overwritten.
    file.write_all_at(&[0u8; HEADER as usize], 0)
        .map_err(io(what.clone()))?;
    file.sync_data().map_err(io(what.clone()))?;
    let size = file.metadata().map_err(io(what.clone()))?.len();
    let capacity = capacity.max(size);
    let zeros = vec![0u8; 1 << 20];
    let mut at = HEADER;
    while at < capacity {
        let n = (capacity - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at)
            .map_err(io(what.clone()))?;
        at += n;
    }
    file.sync_data().map_err(io(what.clone()))?;
    file.write_all_at(&header_bytes(seq), 0)
        .map_err(io(what.clone()))?;
    file.sync_data().map_err(io(what))?;
    Ok(Segment {
        seq,
        path,
        file,
        end: HEADER,
        synced: HEADER,
        capacity,
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.display().to_string()))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Tables that record their flushes; `pending` says whether the last flush started
    /// without waiting still runs (it finishes once it has been asked about).
    #[derive(Default)]
    struct Fake {
        flushes: RefCell<Vec<bool>>,
        pending: RefCell<bool>,
    }

    impl Tables for Fake {
        fn flush(&self, wait: bool) -> Result<()> {
            self.flushes.borrow_mut().push(wait);
            *self.pending.borrow_mut() = !wait;
            Ok(())
        }
        fn flushed(&self) -> Result<bool> {
            // A flush finishes the first time it is asked about.
            Ok(!self.pending.replace(false))
        }
    }

    const SMALL: u64 = 4096;

    fn open(dir: &Path, t: &Fake) -> Result<(Wal, Vec<Vec<u8>>)> {
        let mut seen = Vec::new();
        let mut keep = |r: &[u8]| {
            seen.push(r.to_vec());
            Ok(())
        };
        let wal = Wal::open(dir, SMALL, &mut keep, t)?;
        Ok((wal, seen))
    }

    fn records(n: usize, size: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![(i % 251) as u8 + 1; size]).collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_files_are_reused() {
        let d = crate::testdir::tempdir().unwrap();
        let t = Fake::default();
        let (mut wal, seen) = open(d.path(), &t).unwrap();
        assert!(seen.is_empty());
        let written = records(100, 100); // about three segments of 4 KiB
        for r in &written {
            wal.append(r, &t).unwrap();
        }
        wal.sync().unwrap();
        // Two files at most: the one written and the one whose flush may still run.
        assert!(segments(d.path()).len() <= 2, "{:?}", segments(d.path()));
        drop(wal);
        let (_, seen) = open(d.path(), &t).unwrap();
        // Every record not yet flushed comes back, in order, at the end of what is replayed.
        assert!(
            seen.len() >= 30 && written.ends_with(&seen),
            "{}",
            seen.len()
        );
        // Opening again replays nothing: open flushed and started afresh.
        let (_, again) = open(d.path(), &t).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn a_record_bigger_than_a_segment_gets_one_of_its_own() {
        let d = crate::testdir::tempdir().unwrap();
        let t = Fake::default();
        let (mut wal, _) = open(d.path(), &t).unwrap();
        let big = vec![7u8; 3 * SMALL as usize];
        wal.append(b"small", &t).unwrap();
        wal.append(&big, &t).unwrap();
        wal.append(b"after", &t).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, seen) = open(d.path(), &t).unwrap();
        // "small" was flushed when its segment was reused; the rest comes back.
        let written = [b"small".to_vec(), big, b"after".to_vec()];
        assert!(
            seen.len() >= 2 && written.ends_with(&seen),
            "{}",
            seen.len()
        );
    }

    /// Three records of 40 bytes in a new log, with a sync after each when `sync_each`, else
    /// one sync after all three; the log's directory and its current segment's path.
    fn three_records(sync_each: bool) -> (crate::testdir::TempDir, PathBuf) {
        let d = crate::testdir::tempdir().unwrap();
        let t = Fake::default();
        let (mut wal, _) = open(d.path(), &t).unwrap();
        for r in records(3, 40) {
            wal.append(&r, &t).unwrap();
            if sync_each {
                wal.sync().unwrap();
            }
        }
        wal.sync().unwrap();
        let path = wal.current.path.clone();
        (d, path)
    }

    fn damage(path: &Path, what: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(path).unwrap();
        what(&mut bytes);
        std::fs::write(path, &bytes).unwrap();
    }

    /// Where the `i`th record of 40 bytes starts.
    fn record_start(i: u64) -> usize {
        (HEADER + i * aligned(RECORD_HEADER + 40)) as usize
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_and_damage_to_a_synced_one_is_refused() {
        let t = Fake::default();

        // The last record cut short (its payload half written): the first two come back.
        let (d, path) = three_records(true);
        let last = record_start(2);
        damage(&path, |b| b[last + 30..last + 56].fill(0));
        let (_, seen) = open(d.path(), &t).unwrap();
        assert_eq!(seen, records(2, 40));

        // One bit flipped in the first record, synced before the others were written: refused.
        let (d, path) = three_records(true);
        damage(&path, |b| b[record_start(0) + 20] ^= 0x10);
        let Err(StorageError::Corrupt(why)) = open(d.path(), &t) else {
            panic!("damage was not refused");
        };
        assert!(why.contains("says it had been synced"), "{why}");
    }

    #[test]
    fn an_unsynced_record_lost_before_a_later_one_ends_replay_there() {
        // A machine losing power in the middle of a sync may have written the page of a later
        // record and not that of an earlier one; none of them was reported synced.
        let t = Fake::default();
        let (d, path) = three_records(false);
        damage(&path, |b| b[record_start(1) + 20] ^= 0x10);
        let (_, seen) = open(d.path(), &t).unwrap();
        assert_eq!(seen, records(1, 40));
    }

    #[test]
    fn a_damaged_header_and_a_lost_seal_are_refused() {
        let d = crate::testdir::tempdir().unwrap();
        let t = Fake::default();
        let (wal, _) = open(d.path(), &t).unwrap();
        let path = wal.current.path.clone();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(open(d.path(), &t), Err(StorageError::Corrupt(_))));

        // Two segments in a row, the first one's seal gone.
        let d = crate::testdir::tempdir().unwrap();
        let (mut wal, _) = open(d.path(), &t).unwrap();
        for r in records(50, 100) {
            wal.append(&r, &t).unwrap();
        }
        wal.sync().unwrap();
        let previous = wal.previous.as_ref().unwrap().path.clone();
        let seal_at = {
            let bytes = std::fs::read(&previous).unwrap();
            let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            let mut at = HEADER;
            loop {
                match record_at(&bytes, seq, at) {
                    Some(Record { len: SEAL_LEN, .. }) => break at,
                    Some(Record { len, .. }) => at = aligned(at + RECORD_HEADER + len as u64),
                    None => panic!("no seal"),
                }
            }
        };
        drop(wal);
        let mut bytes = std::fs::read(&previous).unwrap();
        for b in &mut bytes[seal_at as usize..(seal_at + RECORD_HEADER) as usize] {
            *b = 0;
        }
        std::fs::write(&previous, &bytes).unwrap();
        let Err(StorageError::Corrupt(why)) = open(d.path(), &t) else {
            panic!("a lost seal was not refused");
        };
        assert!(why.contains("without its seal"), "{why}");
    }

    #[test]
    fn a_segment_is_reused_only_after_the_flush_that_covers_it() {
        let d = crate::testdir::tempdir().unwrap();
        let t = Fake::default();
        let (mut wal, _) = open(d.path(), &t).unwrap();
        assert_eq!(*t.flushes.borrow(), vec![true]);
        for r in records(100, 100) {
            wal.append(&r, &t).unwrap();
        }
        // Each rotation started a flush without waiting, and the next one waited for it
        // (the fake finishes a flush when asked) before reusing the oldest file.
        let flushes = t.flushes.borrow().clone();
        assert!(
            flushes.len() >= 3 && flushes[1..].iter().all(|w| !w),
            "{flushes:?}"
        );
        assert!(segments(d.path()).len() <= 2);
    }
}
