//! When to cut a checkpoint, and how big it may be: pure functions.
//!
//! Edits arrive in bursts (a notebook save is several writes and a rename).
//! `Policy::decide` waits for a *quiet period* after the last change, but no
//! longer than the *maximum latency* after the first one, so a file written
//! continuously is still saved. A dirty set that reaches the batch size is
//! pushed at once, an explicit flush goes now, and after a failed push the
//! next try waits for the retry time. `Policy::take_batch` splits a large
//! checkpoint so one push carries at most so many files and bytes.
//! `DeleteGuard::trips` decides when a checkpoint deletes so much of the
//! remote that a person should confirm it first.

use std::time::{Duration, Instant};

use crate::checkpoint::{Change, Checkpoint};

/// Debounce and batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wait this long after the last change (default 1 s).
    pub quiet: Duration,
    /// Never wait longer than this after the first change (default 10 s).
    pub max_latency: Duration,
    /// At most this many changed paths per push (default 10,000).
    pub max_batch_files: usize,
    /// At most this many content bytes per push, unless a single file is
    /// larger (default 1 GiB).
    pub max_batch_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quiet: Duration::from_secs(1),
            max_latency: Duration::from_secs(10),
            max_batch_files: 10_000,
            max_batch_bytes: 1 << 30,
        }
    }
}

/// The mass-delete guard: a checkpoint that would delete more than
/// `min_files` files **and** more than `max_percent` % of the files the
/// remote holds is not pushed as it is; the engine holds its deletes back
/// (and pushes everything else) until the files come back or the guard is
/// turned off. This is what protects a remote from a volume that failed to
/// mount (an empty directory beside an existing index) and from an
/// accidental `rm -rf`.
///
/// The default, 100 files and 50 %, lets every ordinary clean-up through.
/// A plain count is `max_percent: 0`: more than `min_files` deletes trip
/// it whatever the remote holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    /// Deleting up to this many files never trips the guard (default 100).
    pub min_files: u64,
    /// Deleting up to this share of the remote's files never trips it
    /// (percent, default 50; 100 or more: only `min_files` counts, and only
    /// when it is exceeded by deleting everything).
    pub max_percent: u8,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            min_files: 100,
            max_percent: 50,
        }
    }
}

impl DeleteGuard {
    /// True when deleting `deletes` of the `files` files the remote holds is
    /// more than this guard lets through.
    pub fn trips(&self, deletes: u64, files: u64) -> bool {
        let share = u128::from(deletes) * 100 > u128::from(files) * u128::from(self.max_percent);
        deletes > self.min_files && share
    }
}

impl std::str::FromStr for DeleteGuard {
    type Err = String;

    /// `P%` (a share of the remote's files, 0–100, with the default floor
    /// of 100 files) or `N` (a count: more than `N` deletes trip it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let max_percent: u8 = p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{t:?} is not a percentage from 0% to 100%"))?;
            return Ok(DeleteGuard {
                max_percent,
                ..DeleteGuard::default()
            });
        }
        let min_files: u64 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a count (1000) or a percentage (50%)"))?;
        Ok(DeleteGuard {
            min_files,
            max_percent: 0,
        })
    }
}

/// What the engine knows when it asks `Policy::decide`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// When the oldest not-yet-checkpointed change was noticed.
    pub first_change: Option<Instant>,
    /// When the newest change was noticed.
    pub last_change: Option<Instant>,
    /// How many paths are dirty.
    pub dirty_paths: usize,
    /// A checkpoint failed to push and is waiting to be retried at this time.
    pub retry_at: Option<Instant>,
    /// Someone asked for everything to be pushed now.
    pub flush: bool,
}

/// Why a checkpoint is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The quiet period passed.
    Quiet,
    /// The maximum latency passed while changes kept coming.
    MaxLatency,
    /// The dirty set reached the batch size.
    BatchFull,
    /// An explicit flush.
    Flush,
    /// A failed push is due for another try.
    Retry,
}

/// What the engine should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing to do until a change arrives.
    Idle,
    /// Nothing to do before this instant (unless a change arrives).
    WaitUntil(Instant),
    /// Build and push a checkpoint.
    CheckpointNow(Reason),
}

impl Policy {
    /// Decides what to do at `now`.
    pub(crate) fn decide(&self, p: &Pending, now: Instant) -> Decision {
        if p.flush {
            return Decision::CheckpointNow(Reason::Flush);
        }
        if let Some(at) = p.retry_at {
            return if now >= at {
                Decision::CheckpointNow(Reason::Retry)
            } else {
                Decision::WaitUntil(at)
            };
        }
        let (Some(first), Some(last)) = (p.first_change, p.last_change) else {
            return Decision::Idle;
        };
        if p.dirty_paths >= self.max_batch_files {
            return Decision::CheckpointNow(Reason::BatchFull);
        }
        let latency_due = first + self.max_latency;
        let quiet_due = last + self.quiet;
        if now >= latency_due {
            Decision::CheckpointNow(Reason::MaxLatency)
        } else if now >= quiet_due {
            Decision::CheckpointNow(Reason::Quiet)
        } else {
            Decision::WaitUntil(quiet_due.min(latency_due))
        }
    }

    /// Takes the first changes of `all` (in path order) up to the batch
    /// limits, leaving the rest in `all`. Always takes at least one change.
    pub(crate) fn take_batch(&self, all: &mut Checkpoint) -> Checkpoint {
        if all.len() <= self.max_batch_files && all.stats().bytes <= self.max_batch_bytes {
            return std::mem::take(all);
        }
        let mut taken = Checkpoint::new();
        let mut bytes = 0u64;
        let mut keys = Vec::new();
        for (p, c) in all.iter() {
            let size = match c {
                Change::Upsert(m) => m.size(),
                Change::Delete => 0,
            };
            let full = keys.len() >= self.max_batch_files
                || (!keys.is_empty() && bytes + size > self.max_batch_bytes);
            if full {
                break;
            }
            bytes += size;
            keys.push(p.clone());
        }
        for k in keys {
            if let Some(c) = all.remove(&k) {
                match c {
                    Change::Upsert(m) => taken.upsert(k, m),
                    Change::Delete => taken.delete(k),
                }
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_guard_trips_above_both_limits_only() {
        let g = DeleteGuard::default();
        // Both "more than 100" and "more than half" are needed.
        assert!(!g.trips(100, 150), "100 files is not more than 100");
        assert!(g.trips(101, 150));
        assert!(!g.trips(101, 202), "exactly half is not more than half");
        assert!(g.trips(102, 202));
        assert!(!g.trips(5_000, 10_000));
        assert!(g.trips(5_001, 10_000));
        assert!(!g.trips(50, 50), "a small tree may be emptied");
        assert!(g.trips(u64::MAX, u64::MAX), "no overflow");
        // A plain count.
        let count = DeleteGuard {
            min_files: 1_000,
            max_percent: 0,
        };
        assert!(!count.trips(1_000, 1_000_000));
        assert!(count.trips(1_001, 1_000_000));
        // 100 %: only deleting more than everything, i.e. never.
        let all = DeleteGuard {
            min_files: 0,
            max_percent: 100,
        };
        assert!(!all.trips(10, 10));
    }

    #[test]
    fn a_delete_guard_is_a_share_or_a_count() {
        let g: DeleteGuard = "20%".parse().unwrap();
        assert_eq!((g.min_files, g.max_percent), (100, 20));
        let g: DeleteGuard = " 1000 ".parse().unwrap();
        assert_eq!((g.min_files, g.max_percent), (1000, 0));
        for bad in ["101%", "-1", "half", "5.5%", "", "%"] {
            assert!(bad.parse::<DeleteGuard>().is_err(), "{bad}");
        }
    }
    use crate::entry::{ContentHash, FileMeta, Meta};
    use crate::path::RelPath;

    const S: Duration = Duration::from_secs(1);

    fn pending(t0: Instant, first: u64, last: u64, n: usize) -> Pending {
        Pending {
            first_change: Some(t0 + S * first as u32),
            last_change: Some(t0 + S * last as u32),
            dirty_paths: n,
            ..Pending::default()
        }
    }

    #[test]
    fn waits_for_quiet_then_cuts() {
        let pol = Policy::default();
        let t0 = Instant::now();
        let p = pending(t0, 0, 0, 1);
        assert_eq!(pol.decide(&p, t0), Decision::WaitUntil(t0 + S));
        assert_eq!(
            pol.decide(&p, t0 + S),
            Decision::CheckpointNow(Reason::Quiet)
        );
    }

    #[test]
    fn continuous_writes_are_cut_at_max_latency() {
        let pol = Policy::default();
        let t0 = Instant::now();
        // Changes every half second for 10 s: never quiet.
        let p = pending(t0, 0, 10, 1);
        assert_eq!(
            pol.decide(&p, t0 + S * 10),
            Decision::CheckpointNow(Reason::MaxLatency)
        );
        let p = pending(t0, 0, 9, 1);
        assert_eq!(pol.decide(&p, t0 + S * 9), Decision::WaitUntil(t0 + S * 10));
    }

    #[test]
    fn full_batch_flush_retry_and_idle() {
        let pol = Policy {
            max_batch_files: 3,
            ..Policy::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            pol.decide(&pending(t0, 0, 0, 3), t0),
            Decision::CheckpointNow(Reason::BatchFull)
        );
        assert_eq!(pol.decide(&Pending::default(), t0), Decision::Idle);
        let flush = Pending {
            flush: true,
            ..Pending::default()
        };
        assert_eq!(
            pol.decide(&flush, t0),
            Decision::CheckpointNow(Reason::Flush)
        );
        let retry = Pending {
            retry_at: Some(t0 + S * 5),
            ..pending(t0, 0, 0, 1)
        };
        assert_eq!(
            pol.decide(&retry, t0 + S * 2),
            Decision::WaitUntil(t0 + S * 5)
        );
        assert_eq!(
            pol.decide(&retry, t0 + S * 5),
            Decision::CheckpointNow(Reason::Retry)
        );
    }

    fn file(size: u64) -> Meta {
        Meta::File(FileMeta {
            size,
            mtime_ns: 0,
            mode: 0o644,
            hash: ContentHash::of(b""),
        })
    }

    #[test]
    fn batches_respect_files_and_bytes() {
        let pol = Policy {
            max_batch_files: 2,
            max_batch_bytes: 100,
            ..Policy::default()
        };
        let mut all = Checkpoint::new();
        for (n, size) in [("a", 10), ("b", 10), ("c", 10), ("d", 500), ("e", 1)] {
            all.upsert(RelPath::new(n).unwrap(), file(size));
        }
        let sizes: Vec<usize> =
            std::iter::from_fn(|| (!all.is_empty()).then(|| pol.take_batch(&mut all).len()))
                .collect();
        // a+b (file limit), c (d would pass the byte limit), d alone (larger
        // than the limit but a batch takes at least one), e.
        assert_eq!(sizes, [2, 1, 1, 1]);
    }
}
