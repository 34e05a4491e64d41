//! `sync-git`: tether's git backend. Every checkpoint becomes a git commit,
//! pushed to a branch of a remote the user already has (GitHub, GitLab,
//! Gitea, a bare repository over ssh), without ever losing work to another
//! writer.
//!
//! ```no_run
//! use sync_git::{GitBackend, GitOptions, is_git_url};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "https://git.example.com/me/notebooks.git?branch=pod-a";
//! assert!(is_git_url(url));
//! let backend = GitBackend::from_url(
//!     url,
//!     GitOptions::new("/var/lib/tether/git").token_file("/secrets/git-token"),
//! )?;
//! # let _ = backend; Ok(()) }
//! ```
//!
//! # How a checkpoint travels
//!
//! ```text
//! Checkpoint (upserts, deletes) ──► blobs streamed from Source into the local bare repo (gix)
//!                                   └► previous tree edited path by path ──► new tree ──► commit
//!        refs/tether/base (the remote head we build on) is the commit's parent
//!                                                     │
//!                         git push <commit>:refs/heads/<branch>   (never forced)
//!                     accepted │                         │ rejected: the branch moved
//!        refs/tether/base = commit            git fetch ─► three-way: base→ours vs base→theirs
//!                                               disjoint │             │ overlapping
//!                            re-apply ours on theirs, push           push ours to tether/conflict/<host>/<time>,
//!                                                                    re-apply the non-overlapping rest on theirs,
//!                                                                    push, report the conflict in the receipt
//! ```
//!
//! Restores go the other way: `git fetch` the branch (or find the commit
//! given by `at`), list its tree with gix, validate the listing with
//! [`RestorePlan`](sync_core::restore::RestorePlan) and write every entry
//! through [`RestoreWriter`](sync_core::restore::RestoreWriter) (modes from
//! `.tether/modes`, symlinks kept; hostile names such as `..` or paths
//! through a symlink refused before anything is written; `.git` paths and
//! tree entry modes git never writes refused or skipped).
//!
//! # Design choices and trade-offs
//!
//! * **A bare repository in the state directory, never a `.git` in the
//!   watched directory.** The user's directory stays what it was: not a
//!   checkout, no `.git` for the user's own tools to trip over or for an
//!   app to delete, no index file to keep in sync, and no risk that the
//!   user's own git commands (or a notebook's) fight tether's. Trees are
//!   built from checkpoints, not from a working tree, so there is nothing to
//!   `git add`.
//! * **gix for objects, trees, commits and refs; the `git` executable for
//!   the network.** Blobs are streamed from the [`Source`](sync_core::Source)
//!   into loose objects (a file that changes while being read is refused
//!   with `SourceChanged` and never committed), and only the trees on the
//!   path of a changed file are rewritten — a one-file change in a
//!   10,000-file repository writes one blob, a few trees and a commit.
//!   Once loose objects pile up past
//!   [`GitOptions::gc_loose_objects`] (git's own 6,700 by default), the
//!   push that found them starts `git gc --auto` in the background, so a
//!   sidecar that runs for weeks keeps a few packs, not tens of thousands of
//!   small files.
//!   gix 0.90 has no complete push, and its fetch over HTTPS would need a
//!   full HTTP/TLS client stack (reqwest or curl) built into every tether
//!   binary; `git fetch`/`git push`/`git ls-remote` speak all four
//!   transports (`file://`, `git://`, `http(s)://`, `ssh://`) with one code
//!   path and identical auth handling, and keep this crate's build lean. The
//!   cost: the image needs `git`, plus `ssh` for ssh remotes, plus
//!   `libnss_wrapper` for ssh under an arbitrary UID (see below). Objects
//!   arrive through git's `index-pack`, which computes every object id from
//!   its content, so a restore writes only verified objects.
//! * **Never force-push.** A push names the commit whose parent is the head
//!   we last saw; the server refuses it if the branch moved. We then fetch
//!   and compare the changes of both sides leaf by leaf: disjoint changes
//!   are rebased (our changes re-applied on their tree — a linear history,
//!   no merge commits); overlapping ones (the same path changed to different
//!   results, or a file where the other side needs a directory) send our
//!   whole state to `tether/conflict/<host>/<time>-<id>` and the rest of our
//!   changes to the branch, so nothing from either side is lost. Conflicts
//!   of one writer less than ten minutes apart are one episode: they move
//!   that episode's branch forward (a fast-forward commit with the new
//!   conflicting tree) instead of creating a branch each, so two pods
//!   racing on one notebook make one branch whose history holds every
//!   conflicting version (the episode is kept in the state directory, so
//!   restarts and `--once` runs continue it).
//!   [`PushReceipt::conflict`](sync_core::PushReceipt) names the branch and
//!   the engine counts it in its status.
//! * **Credentials.** SSH keys are copied to a 0600 file in the state
//!   directory (secret mounts are often 0644 or 0640, which ssh refuses);
//!   host keys are always checked against the given known_hosts file;
//!   `HOME` is a directory in the state directory and ssh runs with
//!   `-F /dev/null`. When the UID has no passwd entry (OpenShift), ssh
//!   refuses to start, so `libnss_wrapper` is preloaded with a one-line
//!   passwd file. HTTPS tokens are read from a file or variable before each
//!   command and given to git by a credential helper through the child's
//!   environment — never on a command line, in a URL, in a config file or
//!   in a log; anything git prints is scrubbed before it reaches an error.
//! * **What git cannot keep.** Empty directories and modification times
//!   (see [`Capabilities`](sync_core::Capabilities)); paths named `.git` are
//!   skipped with a warning. Permission bits beyond the executable bit and
//!   directory modes go into the small JSON file `.tether/modes` in the
//!   commit (only the paths that differ from `0644`/`0755`; merged path by
//!   path on a rebase; never restored into the directory). The top-level
//!   name `.tether` is therefore reserved. Format: FORMAT.md.
//!
//! # What this crate does not do
//!
//! No watching, no debouncing, no retries (the engine in `sync-core` does
//! those: a failed push is retried with the error in its status), no merge
//! of file *contents* (overlapping changes go to a conflict branch), no
//! submodules, no LFS, and no history rewriting or garbage collection of the
//! remote.

#![forbid(unsafe_code)]

mod backend;
mod command;
#[doc(hidden)]
pub mod fuzzing;
mod options;
pub mod remote;
mod tree;

pub use backend::GitBackend;
pub use options::{DEFAULT_GC_LOOSE_OBJECTS, DEFAULT_MAX_ENTRIES, GitOptions};
pub use remote::{ConfigError, GitRemote, RemoteKind, is_git_url};

impl From<ConfigError> for sync_core::BackendError {
    fn from(e: ConfigError) -> Self {
        sync_core::BackendError::Config(e.to_string())
    }
}
