//! [`Watcher`]: turns inotify events (through `notify`) into a dirty set.
//!
//! The watcher does no file system work of its own. Its event handler maps
//! each event's paths to [`RelPath`]s, drops ignored ones and events that
//! cannot change anything (plain opens and reads — including tether's own
//! reads while hashing), and adds the rest to a shared [`DirtySet`], waking
//! the engine. Deciding what actually changed is [`detect()`](crate::detect())'s
//! job, so event order and duplicates do not matter: a rename reports both
//! sides, and each side is looked at.
//!
//! Watches are added one directory at a time (non-recursive), by the walks
//! of [`detect()`](crate::detect()) through [`Watcher::add_dir`] *before* each
//! directory is listed. So ignored directories (a `.git`, a virtualenv) cost
//! no watch, and a directory created with content already in it (notify
//! #727) is watched and then walked, missing nothing.
//!
//! Failure modes:
//! * **Queue overflow** (`IN_Q_OVERFLOW`, notify's `Rescan` flag): events were
//!   lost, so the dirty set asks for a full rescan.
//! * **Watch limit** (`fs.inotify.max_user_watches`): the watcher logs a clear
//!   error naming the sysctl, drops inotify and switches to
//!   [`WatchMode::Polling`]; the engine then rescans the whole tree at a
//!   fixed interval.
//! * **Too many dirty paths** (more than [`MAX_DIRTY_PATHS`]): collapsed into
//!   one full rescan, so memory stays bounded during huge bursts.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use parking_lot::{Mutex, RwLock};

use crate::detect::DirtySet;
use crate::path::RelPath;
use crate::rules::IgnoreRules;

/// Above this many dirty paths the set collapses into a full rescan.
pub const MAX_DIRTY_PATHS: usize = 200_000;

/// How changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify events (no polling).
    Inotify,
    /// Periodic full rescans, because inotify could not be used.
    Polling {
        /// Why inotify is not used.
        reason: String,
    },
}

/// Dirty paths and when they were noticed.
#[derive(Debug, Default)]
struct DirtyState {
    dirty: DirtySet,
    first: Option<Instant>,
    last: Option<Instant>,
    events: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<DirtyState>,
    mode: Mutex<WatchMode>,
    wake: tokio::sync::Notify,
}

/// Snapshot of the dirty set's timing, for the [`Policy`](crate::Policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyTiming {
    /// When the oldest dirty path was noticed.
    pub first: Option<Instant>,
    /// When the newest was.
    pub last: Option<Instant>,
    /// How many paths are dirty.
    pub count: usize,
    /// Events handled since start.
    pub events: u64,
}

impl Shared {
    fn mark(&self, paths: impl IntoIterator<Item = RelPath>, rescan: bool) {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.dirty.rescan |= rescan;
        // Every event counts, also for a path that is dirty already: a file
        // written again and again keeps extending the quiet period (the
        // policy's max latency still bounds the wait).
        let mut any = rescan;
        if st.dirty.rescan {
            any |= paths.into_iter().next().is_some();
        } else {
            for p in paths {
                any = true;
                st.dirty.paths.insert(p);
            }
            if st.dirty.paths.len() > MAX_DIRTY_PATHS {
                st.dirty.paths.clear();
                st.dirty.rescan = true;
            }
        }
        if any {
            st.first.get_or_insert(now);
            st.last = Some(now);
            st.events += 1;
            drop(st);
            self.wake.notify_one();
        }
    }

    fn fall_back_to_polling(&self, reason: String) {
        let mut mode = self.mode.lock();
        if *mode == WatchMode::Inotify {
            tracing::error!(%reason, "inotify unavailable; falling back to periodic rescans");
            *mode = WatchMode::Polling { reason };
        }
    }
}

/// Watches a directory tree and collects dirty paths.
#[derive(Debug)]
pub struct Watcher {
    inner: Mutex<Option<notify::RecommendedWatcher>>,
    shared: Arc<Shared>,
    /// The rules events are filtered with; replaced by [`Watcher::set_rules`].
    rules: Arc<RwLock<IgnoreRules>>,
}

impl Watcher {
    /// Starts watching nothing yet: directories are added with
    /// [`add_dir`](Self::add_dir) as they are walked. With `use_inotify`
    /// false (or if inotify cannot be initialised) the watcher starts in
    /// polling mode.
    pub fn new(root: &Path, rules: IgnoreRules, use_inotify: bool) -> Watcher {
        let shared = Arc::new(Shared {
            state: Mutex::new(DirtyState::default()),
            mode: Mutex::new(WatchMode::Inotify),
            wake: tokio::sync::Notify::new(),
        });
        let rules = Arc::new(RwLock::new(rules));
        if !use_inotify {
            *shared.mode.lock() = WatchMode::Polling {
                reason: "inotify disabled by configuration".into(),
            };
            return Watcher {
                inner: Mutex::new(None),
                shared,
                rules,
            };
        }
        let handler_shared = Arc::clone(&shared);
        let handler_rules = Arc::clone(&rules);
        let root_buf = root.to_path_buf();
        let handler = move |res: notify::Result<notify::Event>| {
            let rules = handler_rules.read();
            handle_event(&handler_shared, &root_buf, &rules, res);
        };
        let inner = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                shared.fall_back_to_polling(describe_notify_error(root, &e));
                None
            }
        };
        Watcher {
            inner: Mutex::new(inner),
            shared,
            rules,
        }
    }

    /// Replaces the ignore rules events are filtered with (after the ignore
    /// file changed). Directories already watched stay watched; their
    /// events are filtered with the new rules. Pair it with
    /// [`mark_rescan`](Self::mark_rescan) so paths no longer ignored are
    /// found and their directories watched.
    pub fn set_rules(&self, rules: IgnoreRules) {
        *self.rules.write() = rules;
    }

    /// Adds a non-recursive watch on the directory `full`. Hitting the watch
    /// limit switches to polling mode; a directory that vanished is ignored.
    pub fn add_dir(&self, full: &Path) {
        let mut inner = self.inner.lock();
        let Some(w) = inner.as_mut() else { return };
        match w.watch(full, RecursiveMode::NonRecursive) {
            Ok(()) => {}
            Err(e) => match e.kind {
                notify::ErrorKind::PathNotFound => {}
                notify::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => {}
                notify::ErrorKind::MaxFilesWatch => {
                    *inner = None;
                    drop(inner);
                    self.shared
                        .fall_back_to_polling(describe_notify_error(full, &e));
                }
                _ => tracing::warn!(dir = %full.display(), error = %e, "cannot watch directory"),
            },
        }
    }

    /// How changes are being noticed.
    pub fn mode(&self) -> WatchMode {
        self.shared.mode.lock().clone()
    }

    /// Marks paths dirty (for example files that kept changing while hashed).
    pub fn mark(&self, paths: impl IntoIterator<Item = RelPath>) {
        self.shared.mark(paths, false);
    }

    /// Asks for a full rescan.
    pub fn mark_rescan(&self) {
        self.shared.mark(std::iter::empty(), true);
    }

    /// Takes the dirty set, leaving it empty.
    pub fn take_dirty(&self) -> DirtySet {
        let mut st = self.shared.state.lock();
        st.first = None;
        st.last = None;
        std::mem::take(&mut st.dirty)
    }

    /// Timing of the current dirty set.
    pub fn timing(&self) -> DirtyTiming {
        let st = self.shared.state.lock();
        DirtyTiming {
            first: st.first,
            last: st.last,
            count: st.dirty.len(),
            events: st.events,
        }
    }

    /// Waits until something is marked dirty (returns at once if something
    /// was marked since the last wait).
    pub async fn changed(&self) {
        self.shared.wake.notified().await;
    }
}

fn describe_notify_error(path: &Path, e: &notify::Error) -> String {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "inotify watch limit reached at {} (raise fs.inotify.max_user_watches, \
             e.g. `sysctl -w fs.inotify.max_user_watches=1048576`)",
            path.display()
        ),
        _ => format!("inotify failed at {}: {e}", path.display()),
    }
}

fn handle_event(
    shared: &Shared,
    root: &Path,
    rules: &IgnoreRules,
    res: notify::Result<notify::Event>,
) {
    let event = match res {
        Ok(ev) => ev,
        Err(e) => {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                shared.fall_back_to_polling(describe_notify_error(root, &e));
            } else {
                tracing::warn!(error = %e, "watch error; rescanning");
            }
            shared.mark(std::iter::empty(), true);
            return;
        }
    };
    if event.need_rescan() {
        tracing::warn!("inotify queue overflowed; rescanning the whole tree");
        shared.mark(std::iter::empty(), true);
        return;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return,
        _ => {}
    }
    let mut rescan = false;
    let paths: Vec<RelPath> = event
        .paths
        .iter()
        .filter_map(|p| {
            if p == root {
                rescan = true;
                return None;
            }
            RelPath::from_local(root, p).ok()
        })
        .filter(|p| !rules.is_ignored(p, false))
        .collect();
    if !paths.is_empty() || rescan {
        shared.mark(paths, rescan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Flag};
    use std::path::PathBuf;

    fn shared() -> Shared {
        Shared {
            state: Mutex::new(DirtyState::default()),
            mode: Mutex::new(WatchMode::Inotify),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Result<notify::Event> {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        Ok(e)
    }

    #[test]
    fn events_become_dirty_paths_and_reads_are_ignored() {
        let s = shared();
        let rules =
            IgnoreRules::load(Path::new("/r"), &crate::rules::IgnoreConfig::default()).unwrap();
        let root = Path::new("/r");
        handle_event(
            &s,
            root,
            &rules,
            ev(EventKind::Create(CreateKind::File), &["/r/a", "/r/x.swp"]),
        );
        handle_event(
            &s,
            root,
            &rules,
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Read)),
                &["/r/b"],
            ),
        );
        handle_event(
            &s,
            root,
            &rules,
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/r/c"],
            ),
        );
        let st = s.state.lock();
        let got: Vec<_> = st.dirty.paths.iter().map(RelPath::as_str).collect();
        assert_eq!(got, ["a", "c"]);
        assert!(!st.dirty.rescan);
        assert!(st.first.is_some());
    }

    #[test]
    fn overflow_and_errors_ask_for_a_rescan() {
        let s = shared();
        let rules = IgnoreRules::none();
        let root = Path::new("/r");
        handle_event(
            &s,
            root,
            &rules,
            Ok(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)),
        );
        assert!(s.state.lock().dirty.rescan);
        let s = shared();
        handle_event(
            &s,
            root,
            &rules,
            Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)),
        );
        assert!(s.state.lock().dirty.rescan);
        assert!(
            matches!(&*s.mode.lock(), WatchMode::Polling { reason } if reason.contains("max_user_watches"))
        );
    }

    #[test]
    fn huge_dirty_sets_collapse_into_a_rescan() {
        let s = shared();
        s.mark(
            (0..=MAX_DIRTY_PATHS).map(|i| RelPath::new(format!("f{i}")).unwrap()),
            false,
        );
        let st = s.state.lock();
        assert!(st.dirty.rescan);
        assert!(st.dirty.paths.is_empty());
    }
}
