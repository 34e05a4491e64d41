//! The `tether` command, as a library: each subcommand is a thin
//! composition of the tether crates, which stay usable on their own.
//!
//! ```text
//! tether sync DIR --to URL     sync_core::StateDir::open (claim + lock) ─► remote::open_backend
//!                              ─► (sync_core::restore_and_seed if DIR is empty) ─► sync_core::Engine::start_with
//!                              └► health::Monitor (status every 250 ms) ─► /healthz /readyz /metrics
//! tether restore DIR --from URL  sync_core::StateDir::open ─► sync_core::restore_and_seed (restore, seed the index)
//! tether history --from URL      Backend::history
//! tether key generate|list|add|remove  sync_s3::ObjectStoreBackend::{generate_key, list_keys, add_key, remove_key}
//! tether forget|prune|check --from URL  sync_s3::ObjectStoreBackend::{forget, maintain, prune, check} (maintenance)
//! tether sync … (object store, snapshots)  maintenance::Sidecar: ObjectStoreBackend::maintain every --maintenance-interval
//! tether sync … --ui-bind ADDR   ui (the history page): Backend::{history, list, restore}, diff::report, restore_copies
//! tether certs create|patch|show webhook_certs::{ensure_certs, patch_ca_bundle_by_name, describe}
//! tether webhook                 webhook_certs::CertRotation + kube_deploy::webhook::serve
//! tether manifests inject|webhook kube_deploy::{inject_yaml, webhook_bundle}
//! tether manifests app           Backend::{head, list} + notebook::Notebook::parse (checks) ─► kube_deploy::app::app_manifests
//!                                └► --to GIT-URL: Backend::restore (GitOps repo) ─► Checkpoint ─► Backend::push (never forced)
//! tether follow DIR --from URL   follow::Follower: Backend::head ─► Backend::restore --at into .releases/ID ─► rename(link)
//! tether convert NOTEBOOK        notebook::Notebook::to_script
//! ```
//!
//! # What it does not do
//!
//! No sync logic, storage format, certificate logic or injection logic of
//! its own: those live in `sync-core`, `sync-s3`, `sync-git`,
//! `webhook-certs` and `kube-deploy`. This crate parses flags and
//! environment ([`cli`]), picks a backend from a URL ([`remote`]), decides
//! readiness and exports metrics ([`health`]), and turns every failure into
//! one line and an exit code ([`error`]).
//!
//! # Design choices
//!
//! * **One binary for every role.** The init container (`restore`), the
//!   sidecar (`sync`), the admission webhook (`webhook`) and a person's
//!   laptop (`sync ./dir`) run the same program, so what works locally works
//!   in the pod.
//! * **The state directory is outside the synced directory** (the index,
//!   git's bare repository). Its default is keyed by the canonical directory
//!   and the remote, so two directories or two remotes never share an index;
//!   an explicit `TETHER_STATE_DIR` carries an owner file that refuses to be
//!   reused for another directory or remote, and a lock that refuses a
//!   second `sync` or `restore` at the same time (both `sync_core::state`).
//! * **Status is polled; pushes are events.** `sync-core` exposes a status
//!   snapshot, which the command samples every 250 ms for readiness, gauges,
//!   counters, logs and the progress bar; the push-duration histogram
//!   observes every push attempt from the engine's push events.
//! * **Exit codes:** 0 success, 1 runtime failure (remote unreachable,
//!   changes not saved), 2 usage or configuration (bad flag, bad URL,
//!   missing credentials, unreadable key file).
//!
//! The single-idea programs under `examples/` show the crates without this
//! command around them.

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod error;
pub mod follow;
pub mod health;
pub mod logging;
pub mod maintenance;
pub mod paths;
pub mod progress;
pub mod remote;
pub mod ui;

pub use error::CliError;
