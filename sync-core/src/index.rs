//! [`Index`]: what the backend is known to hold, kept on local disk.
//!
//! The index maps every synced path to the [`Meta`] last confirmed by the
//! backend, plus the remote head that confirmation returned. It only ever
//! advances after a backend confirms a push, so after a crash the start-up
//! scan re-sends exactly what was not confirmed.
//!
//! It lives in a state directory **outside** the synced tree (so it is never
//! synced itself and a restore cannot overwrite it) as two files:
//!
//! * `index.jsonl` — a snapshot: a header line (format version, sequence
//!   number, remote head) and one JSON line per entry. Replaced atomically:
//!   written to a temporary file, fsynced, renamed, directory fsynced.
//! * `journal.jsonl` — one JSON line per confirmed checkpoint (its upserts and
//!   deletes, sequence number and new remote head), appended and fsynced.
//!   Each checkpoint costs O(changed paths), not O(tree). A torn last line
//!   (a crash mid-append) is ignored on load with a warning and cut off, so
//!   the next record starts on a line of its own: that checkpoint was not
//!   confirmed locally and is simply pushed again, which backends accept.
//!   An append that fails (a full state directory) is cut back off the
//!   file, and the in-memory index never advances past what is on disk, so
//!   the caller can treat the checkpoint as unconfirmed and push it again.
//!
//! The state directory is made `0700` and both files are created `0600`,
//! whatever the umask: paths and hashes of a private tree are not for other
//! users of the node ([`create_state_dir`](crate::state::create_state_dir)).
//!
//! When the journal outgrows half the snapshot (and 1 MiB) it is folded into
//! a new snapshot. JSON lines keep the state greppable when something goes
//! wrong, at a load cost of well under a second for 100k entries.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Change, Checkpoint};
use crate::entry::{Entry, Meta};
use crate::path::RelPath;

const SNAPSHOT: &str = "index.jsonl";
const JOURNAL: &str = "journal.jsonl";
const FORMAT: u32 = 1;
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// Checkpoints larger than this (and than half the index) go straight to a snapshot.
const COMPACT_BULK: usize = 1_000;

/// The index could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// I/O on a state file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A snapshot line could not be parsed (the snapshot is written
    /// atomically, so this means outside damage).
    #[error("corrupt index {path} line {line}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The snapshot was written by a newer tether (another format).
    #[error("index {path} has format {format}, this tether reads format {FORMAT}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The format it names.
        format: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    seq: u64,
    remote_head: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JournalRecord {
    seq: u64,
    remote_head: Option<String>,
    #[serde(default)]
    put: Vec<Entry>,
    #[serde(default)]
    del: Vec<RelPath>,
}

/// Opens `path` for writing with mode `0600` (for new files), whatever the
/// umask.
fn private_file(path: &Path, append: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.truncate(true);
    }
    o.open(path)
}

/// The confirmed state of the remote, as the local side knows it.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    entries: BTreeMap<RelPath, Meta>,
    remote_head: Option<String>,
    seq: u64,
    snapshot_bytes: u64,
    journal_bytes: u64,
    /// The journal may end in a partial line that could not be cut off: the
    /// next record starts with a newline.
    journal_torn: bool,
}

impl Index {
    /// Opens (or creates, `0700`) the index in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Index, IndexError> {
        crate::state::create_state_dir(state_dir).map_err(|source| IndexError::Io {
            op: "create state directory",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let mut index = Index {
            dir: state_dir.to_path_buf(),
            entries: BTreeMap::new(),
            remote_head: None,
            seq: 0,
            snapshot_bytes: 0,
            journal_bytes: 0,
            journal_torn: false,
        };
        index.load_snapshot()?;
        index.replay_journal()?;
        Ok(index)
    }

    fn io(&self, op: &'static str, name: &str) -> impl FnOnce(io::Error) -> IndexError {
        let path = self.dir.join(name);
        move |source| IndexError::Io { op, path, source }
    }

    fn load_snapshot(&mut self) -> Result<(), IndexError> {
        let path = self.dir.join(SNAPSHOT);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("open", SNAPSHOT)(e)),
        };
        self.snapshot_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let corrupt = |line: usize, source| IndexError::Corrupt {
            path: path.clone(),
            line,
            source,
        };
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(self.io("read", SNAPSHOT))?;
            if i == 0 {
                let h: Header = serde_json::from_str(&line).map_err(|e| corrupt(1, e))?;
                if h.format != FORMAT {
                    return Err(IndexError::UnknownFormat {
                        path,
                        format: h.format,
                    });
                }
                self.seq = h.seq;
                self.remote_head = h.remote_head;
            } else {
                let e: Entry = serde_json::from_str(&line).map_err(|e| corrupt(i + 1, e))?;
                self.entries.insert(e.path, e.meta);
            }
        }
        Ok(())
    }

    fn replay_journal(&mut self) -> Result<(), IndexError> {
        let text = match fs::read(self.dir.join(JOURNAL)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("read", JOURNAL)(e)),
        };
        self.journal_bytes = text.len() as u64;
        let path = self.dir.join(JOURNAL);
        // Everything after the last newline is a torn final append: that
        // checkpoint was never confirmed locally and will be pushed again.
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            tracing::warn!(path = %path.display(), bytes = text.len() - complete, "ignoring an incomplete journal record at the end (an interrupted write)");
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(complete as u64).and_then(|()| f.sync_data()));
            match cut {
                Ok(()) => self.journal_bytes = complete as u64,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot cut the incomplete journal record off");
                    self.journal_torn = true;
                }
            }
        }
        for line in text[..complete].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let Ok(rec) = serde_json::from_slice::<JournalRecord>(line) else {
                // A record torn earlier that could not be cut off. Skipping
                // it is safe: the index only records what the remote
                // confirmed, so a missing record means a path is pushed
                // again.
                tracing::warn!(path = %path.display(), "ignoring an unreadable journal record");
                continue;
            };
            if rec.seq <= self.seq {
                continue; // already folded into the snapshot
            }
            self.apply_in_memory(rec.put, &rec.del);
            self.seq = rec.seq;
            self.remote_head = rec.remote_head;
        }
        Ok(())
    }

    fn apply_in_memory(&mut self, put: Vec<Entry>, del: &[RelPath]) {
        for p in del {
            self.entries.remove(p);
        }
        for e in put {
            self.entries.insert(e.path, e.meta);
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the backend holds at `path`.
    pub fn get(&self, path: &RelPath) -> Option<&Meta> {
        self.entries.get(path)
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Meta)> {
        self.entries.iter()
    }

    /// The paths strictly below the directory `dir`.
    pub fn under<'a>(&'a self, dir: &'a RelPath) -> impl Iterator<Item = (&'a RelPath, &'a Meta)> {
        let start = format!("{}/", dir.as_str());
        // '/' + 1 == '0': every path starting with "dir/" sorts before "dir0".
        let end = format!("{}0", dir.as_str());
        self.entries.range::<str, _>((
            Bound::Included(start.as_str()),
            Bound::Excluded(end.as_str()),
        ))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The remote head recorded with the last confirmed push.
    pub fn remote_head(&self) -> Option<&str> {
        self.remote_head.as_deref()
    }

    /// Records a checkpoint the backend confirmed: appended to the journal and
    /// fsynced before this returns.
    pub fn apply(
        &mut self,
        checkpoint: &Checkpoint,
        remote_head: Option<String>,
    ) -> Result<(), IndexError> {
        if checkpoint.len() > COMPACT_BULK.max(self.entries.len() / 2) {
            // A bulk change (the first push of a tree): a fresh snapshot is
            // cheaper than a huge journal line and needs no extra buffer.
            for (p, c) in checkpoint.iter() {
                match c {
                    Change::Upsert(meta) => {
                        self.entries.insert(p.clone(), meta.clone());
                    }
                    Change::Delete => {
                        self.entries.remove(p);
                    }
                }
            }
            self.remote_head = remote_head;
            self.seq += 1;
            if let Err(e) = self.compact() {
                // Never advance past what is on disk.
                self.reload();
                return Err(e);
            }
            return Ok(());
        }
        let mut put = Vec::new();
        let mut del = Vec::new();
        for (p, c) in checkpoint.iter() {
            match c {
                Change::Upsert(meta) => put.push(Entry {
                    path: p.clone(),
                    meta: meta.clone(),
                }),
                Change::Delete => del.push(p.clone()),
            }
        }
        self.record(put, del, remote_head)
    }

    /// Updates entries whose content did not change but whose local metadata
    /// did (an mtime touched by a save of identical content), without a push.
    pub fn refresh(&mut self, entries: Vec<Entry>) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let head = self.remote_head.clone();
        self.record(entries, Vec::new(), head)
    }

    fn record(
        &mut self,
        put: Vec<Entry>,
        del: Vec<RelPath>,
        remote_head: Option<String>,
    ) -> Result<(), IndexError> {
        let rec = JournalRecord {
            seq: self.seq + 1,
            remote_head,
            put,
            del,
        };
        let mut line = Vec::new();
        if self.journal_torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, &rec)
            .map_err(|e| self.io("encode", JOURNAL)(io::Error::other(e)))?;
        line.push(b'\n');
        let mut f =
            private_file(&self.dir.join(JOURNAL), true).map_err(self.io("open", JOURNAL))?;
        let before = f.metadata().map_err(self.io("stat", JOURNAL))?.len();
        let written = f
            .write_all(&line)
            .map_err(self.io("append to", JOURNAL))
            .and_then(|()| f.sync_data().map_err(self.io("fsync", JOURNAL)));
        if let Err(e) = written {
            // Leave no partial line behind: cut the file back. If even that
            // fails, the next record starts on a new line.
            let cut = f.set_len(before).and_then(|()| f.sync_data());
            self.journal_torn = cut.is_err();
            return Err(e);
        }
        self.journal_torn = false;
        self.journal_bytes = before + line.len() as u64;
        self.seq = rec.seq;
        self.remote_head = rec.remote_head;
        self.apply_in_memory(rec.put, &rec.del);
        if self.journal_bytes > COMPACT_MIN_BYTES.max(self.snapshot_bytes / 2)
            && let Err(e) = self.compact()
        {
            // The record is durable in the journal; compaction waits.
            tracing::warn!(error = %e, "cannot compact the index; the journal keeps growing");
        }
        Ok(())
    }

    /// Replaces the whole index (after a restore, or when the remote was
    /// found empty) and writes a fresh snapshot.
    pub fn replace_all(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        remote_head: Option<String>,
    ) -> Result<(), IndexError> {
        self.entries = entries.into_iter().map(|e| (e.path, e.meta)).collect();
        self.remote_head = remote_head;
        self.seq += 1;
        let done = self.compact();
        if done.is_err() {
            self.reload();
        }
        done
    }

    /// Reloads the state from disk after a failed write, so memory never
    /// holds more than the files do. If even that fails, the index is
    /// emptied: everything is compared and pushed again (safe, only slow).
    fn reload(&mut self) {
        match Index::open(&self.dir) {
            Ok(fresh) => *self = fresh,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the index; it starts over empty");
                self.entries.clear();
                self.remote_head = None;
            }
        }
    }

    /// Writes the in-memory state as a new snapshot and empties the journal.
    pub fn compact(&mut self) -> Result<(), IndexError> {
        let tmp_name = format!("{SNAPSHOT}.tmp");
        let tmp = self.dir.join(&tmp_name);
        let written = self.write_snapshot(&tmp, &tmp_name);
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    fn write_snapshot(&mut self, tmp: &Path, tmp_name: &str) -> Result<(), IndexError> {
        {
            let f = private_file(tmp, false).map_err(self.io("create", tmp_name))?;
            let mut w = BufWriter::new(f);
            let header = Header {
                format: FORMAT,
                seq: self.seq,
                remote_head: self.remote_head.clone(),
            };
            write_json_line(&mut w, &header).map_err(self.io("write", tmp_name))?;
            for (path, meta) in &self.entries {
                write_json_line(&mut w, &EntryRef { path, meta })
                    .map_err(self.io("write", tmp_name))?;
            }
            let f = w
                .into_inner()
                .map_err(|e| self.io("write", tmp_name)(e.into_error()))?;
            f.sync_all().map_err(self.io("fsync", tmp_name))?;
        }
        fs::rename(tmp, self.dir.join(SNAPSHOT)).map_err(self.io("rename", SNAPSHOT))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("fsync", "."))?;
        self.snapshot_bytes = fs::metadata(self.dir.join(SNAPSHOT))
            .map(|m| m.len())
            .unwrap_or(0);
        // Records up to `seq` are in the snapshot; a crash before this
        // removal leaves records that replay skips by their sequence number.
        match fs::remove_file(self.dir.join(JOURNAL)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("remove", JOURNAL)(e)),
        }
        self.journal_bytes = 0;
        Ok(())
    }
}

#[derive(Serialize)]
struct EntryRef<'a> {
    path: &'a RelPath,
    #[serde(flatten)]
    meta: &'a Meta,
}

fn write_json_line(w: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ContentHash, FileMeta};
    use std::os::unix::fs::PermissionsExt;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn file(n: u8) -> Meta {
        Meta::File(FileMeta {
            size: 1,
            mtime_ns: i64::from(n),
            mode: 0o644,
            hash: ContentHash::of(&[n]),
        })
    }

    #[test]
    fn survives_reopen_via_journal_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(1));
        c.upsert(p("d"), Meta::dir(0o755));
        c.upsert(p("d/x"), file(2));
        idx.apply(&c, Some("h1".into())).unwrap();
        let mut c2 = Checkpoint::new();
        c2.delete(p("a"));
        idx.apply(&c2, Some("h2".into())).unwrap();

        let idx2 = Index::open(dir.path()).unwrap();
        assert_eq!(idx2.len(), 2);
        assert!(idx2.get(&p("a")).is_none());
        assert_eq!(idx2.get(&p("d/x")), Some(&file(2)));
        assert_eq!(idx2.remote_head(), Some("h2"));

        let mut idx3 = idx2;
        idx3.compact().unwrap();
        assert!(!dir.path().join(JOURNAL).exists());
        let idx4 = Index::open(dir.path()).unwrap();
        assert_eq!(idx4.len(), 2);
        assert_eq!(idx4.remote_head(), Some("h2"));
    }

    #[test]
    fn state_is_private_whatever_the_directory_started_as() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let mut idx = Index::open(&state).unwrap();
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(1));
        idx.apply(&c, None).unwrap();
        idx.compact().unwrap();
        idx.apply(&c, None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(SNAPSHOT)), 0o600);
        assert_eq!(mode(&state.join(JOURNAL)), 0o600);
        let fresh = dir.path().join("new/deeper/state");
        Index::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn torn_journal_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(1));
        idx.apply(&c, None).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(br#"{"seq":2,"remote_head":null,"put":[{"path":"b","ty"#)
            .unwrap();
        let idx = Index::open(dir.path()).unwrap();
        assert_eq!(idx.len(), 1);
        assert!(idx.get(&p("b")).is_none());
    }

    #[test]
    fn a_failed_append_advances_nothing_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(1));
        idx.apply(&c, Some("h1".into())).unwrap();
        // A full disk: every write to the journal fails with ENOSPC.
        let journal = dir.path().join(JOURNAL);
        let kept = fs::read(&journal).unwrap();
        fs::remove_file(&journal).unwrap();
        std::os::unix::fs::symlink("/dev/full", &journal).unwrap();
        let mut c2 = Checkpoint::new();
        c2.upsert(p("b"), file(2));
        let err = idx.apply(&c2, Some("h2".into())).unwrap_err();
        assert!(err.to_string().contains("append"), "{err}");
        assert!(idx.get(&p("b")).is_none(), "memory advanced past the disk");
        assert_eq!(idx.remote_head(), Some("h1"));
        // Space again (and a torn tail left by a crash): the next record
        // lands on a line of its own and replays.
        fs::remove_file(&journal).unwrap();
        let mut torn = kept.clone();
        torn.extend_from_slice(br#"{"seq":2,"remote_head":"x","put":[{"pa"#);
        fs::write(&journal, &torn).unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        assert_eq!(fs::read(&journal).unwrap(), kept, "torn tail not cut off");
        idx.apply(&c2, Some("h2".into())).unwrap();
        let idx = Index::open(dir.path()).unwrap();
        assert_eq!(idx.get(&p("b")), Some(&file(2)));
        assert_eq!(idx.remote_head(), Some("h2"));
    }

    #[test]
    fn a_failed_bulk_snapshot_advances_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        // The snapshot's temporary file cannot be written.
        std::os::unix::fs::symlink("/dev/full", dir.path().join("index.jsonl.tmp")).unwrap();
        let mut c = Checkpoint::new();
        for i in 0..=COMPACT_BULK {
            c.upsert(p(&format!("f{i}")), file(1));
        }
        assert!(idx.apply(&c, Some("h".into())).is_err());
        assert!(idx.is_empty(), "memory advanced past the disk");
        assert_eq!(idx.remote_head(), None);
    }

    #[test]
    fn journal_records_already_in_snapshot_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(1));
        idx.apply(&c, None).unwrap();
        let journal = fs::read(dir.path().join(JOURNAL)).unwrap();
        let mut del = Checkpoint::new();
        del.delete(p("a"));
        idx.apply(&del, None).unwrap();
        idx.compact().unwrap();
        // Simulate a crash between snapshot rename and journal removal: an
        // old record (seq 1, upsert a) must not resurrect `a`.
        fs::write(dir.path().join(JOURNAL), journal).unwrap();
        let idx = Index::open(dir.path()).unwrap();
        assert!(idx.get(&p("a")).is_none());
    }

    #[test]
    fn under_lists_a_subtree_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(dir.path()).unwrap();
        let mut c = Checkpoint::new();
        for s in ["a", "a/b", "a/b/c", "a b", "a0", "ab", "b"] {
            c.upsert(p(s), file(1));
        }
        idx.apply(&c, None).unwrap();
        let a = p("a");
        let under: Vec<_> = idx.under(&a).map(|(p, _)| p.as_str()).collect();
        assert_eq!(under, ["a/b", "a/b/c"]);
    }

    #[test]
    fn corrupt_snapshot_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(SNAPSHOT),
            "{\"format\":1,\"seq\":1,\"remote_head\":null}\n{bad\n",
        )
        .unwrap();
        let err = Index::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
