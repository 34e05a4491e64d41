//! `sync-core`: tether's change pipeline.
//!
//! tether keeps a directory tethered to durable storage. This crate is
//! everything that does not depend on *which* storage: it notices edits,
//! turns them into consistent, debounced checkpoints, hands them to a
//! [`Backend`], and remembers what the backend confirmed. Backends
//! (`sync-git`, `sync-s3`) implement one trait; the `tether` command and
//! other programs compose the pieces.
//!
//! # How a change travels
//!
//! ```text
//! edit ─► inotify ─► watcher::Watcher ─► DirtySet ─► policy::Policy::decide
//!                                                      │ (quiet period / max latency / flush)
//!                                                      ▼
//!        index::Index (confirmed state) ──► detect::detect ─► Checkpoint (upserts + deletes, hashed)
//!                                                      │
//!                                 Backend::push(checkpoint, Source) ─► remote
//!                                                      │ Ok
//!                                          Index::apply (journal, fsync)
//! ```
//!
//! 1. The watcher maps inotify events to dirty paths (it reads nothing).
//! 2. The [`Engine`] asks the [`Policy`] when to cut a checkpoint.
//! 3. [`detect()`] compares dirty paths with the [`Index`] (stat first, hash
//!    only if size/mtime/mode moved) and builds a [`Checkpoint`].
//! 4. The [`Backend`] pushes it, reading contents through [`Source`], which
//!    verifies every byte against the checkpoint's hash as it streams.
//! 5. Only then does the [`Index`] advance. A crash re-sends exactly what was
//!    not confirmed; a failed push is merged with newer changes and retried.
//!
//! Restores go the other way: a backend lists remote state, validates it
//! with [`restore::RestorePlan`] and writes through
//! [`restore::RestoreWriter`], which never writes outside the destination.
//! [`restore_and_seed`] restores and seeds the index, so the engine started
//! next pushes nothing back.
//!
//! # The state directory
//!
//! [`Engine::start`] (and [`StateDir::open`]) claim the state directory for
//! one directory and remote and lock it while the engine runs: a state
//! directory of another directory or remote, or one in use, is refused with
//! a [`StateError`] (see [`state`]). An embedder gets these rules without
//! asking.
//!
//! The public API is what an embedder or a backend needs; `detect` and
//! `index` are `#[doc(hidden)]` (benchmarks use them), the watcher and the
//! tree walk are private. The library needs tokio's `rt`, not the
//! multi-thread runtime.
//!
//! # What this crate does not do
//!
//! No network, no storage formats, no CLI. Conflict handling between writers
//! is the backend's job (it knows the remote); the engine only reports it.
//!
//! # Testing backends
//!
//! The `testkit` feature provides [`testkit::conformance`], the suite every
//! backend runs against its real server, and [`testkit::MemoryBackend`], a
//! recording in-memory backend for engine tests.

#![forbid(unsafe_code)]

pub mod backend;
pub mod checkpoint;
#[doc(hidden)]
pub mod detect;
pub mod engine;
pub mod entry;
#[doc(hidden)]
pub mod index;
pub mod path;
pub mod policy;
pub mod restore;
pub mod retention;
pub mod rules;
pub(crate) mod scan;
pub mod source;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub(crate) mod watcher;

pub use backend::{
    Backend, BackendError, Capabilities, HistoryEntry, Listed, Listing, PushReceipt, RemoteHead,
};
pub use checkpoint::{Change, Checkpoint, CheckpointStats};
#[doc(hidden)]
pub use detect::{DirtySet, detect};
pub use engine::{
    Engine, EngineConfig, EngineError, EngineHandle, FlushError, PushEvent, RetryConfig,
    ShutdownReport, Status,
};
pub use entry::{ContentHash, DEFAULT_DIR_MODE, Entry, FileMeta, Meta, PERMISSION_BITS};
#[doc(hidden)]
pub use index::Index;
pub use index::IndexError;
pub use path::{PathError, RelPath, is_repository_component};
pub use policy::{DeleteGuard, Policy};
pub use restore::{
    CopiesReport, ExistingPolicy, RestoreOptions, RestoreProgress, RestoreReport, RestoredCopy,
    restore_copies,
};
pub use rules::{IgnoreConfig, IgnoreRules};
pub use source::Source;
pub use state::{Restored, SeedError, StateDir, StateError, restore_and_seed};
pub use watcher::WatchMode;
