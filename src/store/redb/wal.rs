//! The write-ahead log: where an ingested event becomes durable.
//!
//! A redb commit that must survive power loss costs an fsync plus the
//! copy-on-write of every B-tree page it touches, and the writer thread
//! pays both before anyone is answered. The log turns the durable part into
//! one sequential append and one `fdatasync` per group of events, made by
//! its own thread while the writer applies the previous group to redb
//! without syncing (`Durability::None`). Every so often the writer makes an
//! ordinary durable commit that records the last log position it applied (a
//! checkpoint); log segments wholly behind it are deleted. After a crash,
//! redb comes back at its last checkpoint and the records after it are
//! applied again, in order, before anyone is served.
//!
//! On disk: `<storage.path>/wal/<first lsn, 20 digits>.wal` segments, each
//! a run of frames `[payload length u32 LE][crc32 u32 LE][lsn u64 LE][payload]`
//! (the CRC covers the lsn and payload). Log sequence numbers (lsn) count
//! up by one per record across segments, so a frame that is torn, zeroed or
//! left over from an older run (wrong lsn) ends the log.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Name of the log directory inside `storage.path`.
pub const WAL_DIR: &str = "wal";

/// A segment is closed and a new one started past this size, so a
/// checkpoint can free space by deleting whole files.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes before a frame's payload.
const HEADER: usize = 16;

/// Largest payload a frame may claim; anything larger is a torn or foreign
/// frame (events are limited far below this by `limits.max_body_bytes`).
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// The open log, owned by the log thread.
pub struct Wal {
    dir: PathBuf,
    current: File,
    current_len: u64,
    /// First lsn of every closed segment, oldest first, then of the open one.
    segments: Vec<u64>,
    /// The lsn after the last synced record.
    next_lsn: u64,
    /// A group written but not yet synced.
    unsynced: Option<Unsynced>,
    /// A failed group could not be cut off the end of the file: nothing
    /// more is appended until it is, since a reader would take its frames
    /// for records and stop at the next group (whose lsns repeat them).
    torn: bool,
}

/// What [`Wal::write`] added beyond the synced end of the log.
struct Unsynced {
    bytes: u64,
    /// The lsn after the group's last record.
    next_lsn: u64,
}

impl Wal {
    /// Opens (creating) the log in `dir`: drops a torn tail left by a
    /// crash, and continues numbering after the larger of the last record
    /// found and `applied_lsn` (what the database already holds).
    pub fn open(dir: &Path, applied_lsn: u64) -> Result<Wal, StoreError> {
        super::create_private_dir(dir)?;
        let segments = list_segments(dir)?;
        let mut last_lsn = applied_lsn;
        for (index, &first) in segments.iter().enumerate() {
            let path = segment_path(dir, first);
            let is_last = index + 1 == segments.len();
            let (end, last) = scan(&path, first, |_, _| Ok(()))?;
            let len = std::fs::metadata(&path)
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
                .len();
            if end < len {
                if !is_last {
                    return Err(StoreError::Corrupt(format!(
                        "the write-ahead log segment {} is damaged at byte {end}; \
                         restore from a backup or move the wal directory aside",
                        path.display()
                    )));
                }
                // A crash mid-append: nothing in the torn part was ever
                // acknowledged (answers wait for the sync).
                tracing::warn!(file = %path.display(), bytes = len - end, "dropping the torn tail of the write-ahead log");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
                file.set_len(end)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
            }
            if let Some(last) = last {
                last_lsn = last_lsn.max(last);
            }
        }
        let next_lsn = last_lsn + 1;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            current: open_segment(dir, next_lsn)?,
            current_len: 0,
            segments,
            next_lsn,
            unsynced: None,
            torn: false,
        };
        if wal.segments.last() != Some(&next_lsn) {
            wal.segments.push(next_lsn);
        }
        Ok(wal)
    }

    /// The lsn the next record gets.
    #[cfg(test)]
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends `payloads` as consecutive records and syncs them to disk;
    /// returns the lsn of the first ([`Wal::write`] then [`Wal::sync`]).
    #[cfg(test)]
    pub fn append<'a>(
        &mut self,
        payloads: impl Iterator<Item = &'a [u8]>,
        buffer: &mut Vec<u8>,
    ) -> io::Result<u64> {
        let first = self.write(payloads, buffer)?;
        self.sync()?;
        Ok(first)
    }

    /// Writes `payloads` as consecutive records after the last synced one,
    /// without syncing; returns the lsn of the first. They are in the log
    /// only once [`Wal::sync`] succeeds: until then nothing may be made
    /// visible or durable on their account (the writer applies them
    /// meanwhile, and commits only behind the sync). On failure the log is
    /// cut back to where it was, so a half-written group never precedes
    /// later ones, and their lsns are given again.
    pub fn write<'a>(
        &mut self,
        payloads: impl Iterator<Item = &'a [u8]>,
        buffer: &mut Vec<u8>,
    ) -> io::Result<u64> {
        debug_assert!(self.unsynced.is_none(), "a written group was not synced");
        if self.torn && !self.cut_to_synced() {
            return Err(io::Error::other(
                "the end of the write-ahead log could not be cut back after a failed append",
            ));
        }
        let first = self.next_lsn;
        let mut lsn = first;
        buffer.clear();
        for payload in payloads {
            encode_frame(lsn, payload, buffer);
            lsn += 1;
        }
        // Pending before the write, so a partial write is cut back too.
        self.unsynced = Some(Unsynced {
            bytes: buffer.len() as u64,
            next_lsn: lsn,
        });
        if let Err(e) = self.current.write_all(buffer) {
            self.cut_back();
            return Err(e);
        }
        Ok(first)
    }

    /// Syncs what [`Wal::write`] wrote: from here on its records survive a
    /// crash. On failure the log is cut back to before them.
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(unsynced) = self.unsynced.take() else {
            return Ok(());
        };
        if let Err(e) = self.current.sync_data() {
            self.unsynced = Some(unsynced);
            self.cut_back();
            return Err(e);
        }
        self.current_len += unsynced.bytes;
        self.next_lsn = unsynced.next_lsn;
        if self.current_len >= SEGMENT_BYTES {
            // The records are durable either way; a segment that cannot be
            // started now is tried again after the next group.
            if let Err(e) = self.rotate() {
                tracing::warn!(error = %e, "cannot start a new write-ahead log segment; the current one grows");
            }
        }
        Ok(())
    }

    /// Drops a written but unsynced group. Best effort: if even this fails
    /// the tail is torn, and the next start drops it (the lsn check stops at
    /// the first bad frame).
    fn cut_back(&mut self) {
        if self.unsynced.take().is_some() {
            self.torn = true;
            self.cut_to_synced();
        }
    }

    /// Cuts the file back to its synced end; true once it is.
    fn cut_to_synced(&mut self) -> bool {
        if self
            .current
            .set_len(self.current_len)
            .and_then(|()| self.current.sync_data())
            .is_ok()
        {
            self.torn = false;
        }
        !self.torn
    }

    /// Proves the log writable again after a failed append (e.g. once disk
    /// space is freed): writes a block of zeros at the end — which the
    /// reader takes for the end of the log — syncs, and cuts it off again.
    pub fn probe(&mut self) -> io::Result<()> {
        let written = self
            .current
            .write_all(&[0u8; 4096])
            .and_then(|()| self.current.sync_data());
        self.torn = true;
        if !self.cut_to_synced() {
            return Err(io::Error::other(
                "the end of the write-ahead log could not be cut back",
            ));
        }
        written
    }

    /// Starts a new segment; the full one stays until a checkpoint covers it.
    fn rotate(&mut self) -> io::Result<()> {
        self.current = open_segment(&self.dir, self.next_lsn).map_err(io::Error::other)?;
        self.current_len = 0;
        self.segments.push(self.next_lsn);
        Ok(())
    }

    /// Deletes the closed segments whose every record is at or below
    /// `checkpoint` (the database holds them durably).
    pub fn retire_through(&mut self, checkpoint: u64) {
        while self.segments.len() > 1 && self.segments[1] <= checkpoint + 1 {
            let path = segment_path(&self.dir, self.segments[0]);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete an applied write-ahead log segment");
                return;
            }
            self.segments.remove(0);
        }
    }
}

/// Calls `apply` with every record after `after_lsn` up to `up_to_lsn`, in
/// order, reading the segments in `dir`. Used to bring redb forward after
/// a crash, or after the writer reopened it following a failed commit.
pub fn replay(
    dir: &Path,
    after_lsn: u64,
    up_to_lsn: u64,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut last = after_lsn;
    for first in list_segments(dir)? {
        if first > up_to_lsn {
            break;
        }
        if first > last + 1 {
            // Records between the two are gone: applying later ones would
            // silently skip acknowledged events.
            return Err(StoreError::Corrupt(format!(
                "the write-ahead log in {} has no records {}..{}; restore from a backup \
                 or move the wal directory aside",
                dir.display(),
                last + 1,
                first - 1
            )));
        }
        scan(&segment_path(dir, first), first, |lsn, payload| {
            if lsn > last && lsn <= up_to_lsn {
                apply(lsn, payload)?;
                last = lsn;
            }
            Ok(())
        })?;
    }
    Ok(last)
}

fn encode_frame(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&lsn.to_le_bytes());
    crc.update(payload);
    // Payloads are event records, far below 4 GiB (see MAX_PAYLOAD).
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads a segment's frames from the start, calling `each` for every valid
/// one; stops at the first frame that is incomplete, fails its CRC or does
/// not carry the next lsn. Returns the byte offset where the valid log ends
/// and the last lsn read.
fn scan(
    path: &Path,
    first_lsn: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(u64, Option<u64>), StoreError> {
    let file =
        File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut expected = first_lsn;
    let mut last = None;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    loop {
        if !read_full(&mut reader, &mut header, path)? {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        if lsn != expected || len > MAX_PAYLOAD {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload, path)? {
            break;
        }
        let mut check = crc32fast::Hasher::new();
        check.update(&lsn_bytes);
        check.update(&payload);
        if check.finalize() != crc {
            break;
        }
        each(lsn, &payload)?;
        offset += (HEADER + len) as u64;
        last = Some(lsn);
        expected += 1;
    }
    Ok((offset, last))
}

/// Fills `buf`; false when the file ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<bool, StoreError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(true)
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// First lsns of the segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
    let mut firsts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        firsts.push(first);
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Creates (or opens, if a previous run made it and wrote nothing valid)
/// the segment starting at `first_lsn`, empty, and makes its directory
/// entry durable before anything in it is acknowledged.
fn open_segment(dir: &Path, first_lsn: u64) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = segment_path(dir, first_lsn);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
    file.set_len(0)
        .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path, after: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        replay(dir, after, u64::MAX, |lsn, p| {
            out.push((lsn, p.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(
            wal.append([&b"a"[..], b"bb"].into_iter(), &mut buf)
                .unwrap(),
            1
        );
        assert_eq!(wal.append([&b"ccc"[..]].into_iter(), &mut buf).unwrap(), 3);
        drop(wal);
        let got = records(dir.path(), 0);
        assert_eq!(
            got,
            vec![
                (1, b"a".to_vec()),
                (2, b"bb".to_vec()),
                (3, b"ccc".to_vec())
            ]
        );
        assert_eq!(records(dir.path(), 2), vec![(3, b"ccc".to_vec())]);
        // Numbering continues after what is on disk.
        let wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(wal.next_lsn(), 4);
        // ... or after what the database already applied, if that is more.
        drop(wal);
        assert_eq!(Wal::open(dir.path(), 10).unwrap().next_lsn(), 11);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        wal.append([&b"kept"[..], b"also kept"].into_iter(), &mut buf)
            .unwrap();
        wal.append([&b"torn away"[..]].into_iter(), &mut buf)
            .unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the last append: half a frame.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 4).unwrap();
        drop(file);
        let got = records(dir.path(), 0);
        assert_eq!(got.len(), 2, "{got:?}");
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(wal.next_lsn(), 3);
        // The next append lands right after the last good frame.
        wal.append([&b"after"[..]].into_iter(), &mut buf).unwrap();
        drop(wal);
        let got = records(dir.path(), 0);
        assert_eq!(got.last().unwrap(), &(3, b"after".to_vec()));

        // A flipped byte inside a closed segment fails the CRC: that is
        // damage, not a torn tail, and the log refuses rather than skip
        // records (the later segment would otherwise be applied alone).
        let mut bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        let at = HEADER + 2; // inside the first payload
        bytes[at] ^= 0xff;
        std::fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 0),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            replay(dir.path(), 0, u64::MAX, |_, _| Ok(())),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn zeroed_space_after_the_last_record_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        wal.append([&b"one"[..]].into_iter(), &mut buf).unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0u8; 64]).unwrap();
        drop(file);
        assert_eq!(records(dir.path(), 0), vec![(1, b"one".to_vec())]);
        assert_eq!(Wal::open(dir.path(), 0).unwrap().next_lsn(), 2);
    }

    #[test]
    fn checkpointed_segments_are_deleted_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        wal.append([&b"1"[..], b"2"].into_iter(), &mut buf).unwrap();
        wal.rotate().unwrap(); // segment starting at 3
        wal.append([&b"3"[..]].into_iter(), &mut buf).unwrap();
        wal.rotate().unwrap(); // segment starting at 4
                               // Only lsn 1 is applied durably: the first segment still matters.
        wal.retire_through(1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 3, 4]);
        wal.retire_through(2);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![3, 4]);
        // The open segment is never deleted.
        wal.retire_through(100);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![4]);
        drop(wal);
        assert!(records(dir.path(), 3).is_empty());
        // Read from before the checkpoint, the deleted records are a gap.
        assert!(replay(dir.path(), 0, u64::MAX, |_, _| Ok(())).is_err());
        assert_eq!(Wal::open(dir.path(), 3).unwrap().next_lsn(), 4);
    }
}
