//! One module per subcommand; [`run`] dispatches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use sync_core::{Backend, BackendError, StateDir};

use crate::cli::{Cli, Command, GitAuthorArgs, RemoteArgs};
use crate::error::CliError;
use crate::paths::{self, BaseDirs};

pub mod app;
pub mod cat;
pub mod certs;
pub mod check;
pub mod diff;
pub mod follow;
pub mod forget;
pub mod history;
pub mod key;
pub mod kube;
pub mod ls;
pub mod prune;
pub mod restore;
pub mod sync;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Sync(args) => sync::run(*args).await,
        Command::Restore(args) => restore::run(args).await,
        Command::History(args) => history::run(args).await,
        Command::Cat(args) => cat::run(args).await,
        Command::Ls(args) => ls::run(args).await,
        Command::Diff(args) => diff::run(args).await,
        Command::Certs(cmd) => certs::run(cmd).await,
        Command::Webhook(args) => kube::webhook(args).await,
        Command::Manifests(crate::cli::ManifestsCommand::App(args)) => app::run(*args).await,
        Command::Manifests(cmd) => kube::manifests(cmd),
        Command::Follow(args) => follow::run(args).await,
        Command::Convert(args) => app::convert(args).await,
        Command::Key(cmd) => key::run(cmd).await,
        Command::Forget(args) => forget::run(args).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Check(args) => check::run(args).await,
    }
}

/// A backend error with what was being done, keeping its exit code.
pub fn context(e: BackendError, what: impl std::fmt::Display) -> CliError {
    match CliError::from(e) {
        CliError::Usage(m) => CliError::Usage(format!("{what}: {m}")),
        CliError::Runtime(m) => CliError::Runtime(format!("{what}: {m}")),
    }
}

/// A backend for a remote named by URL alone (`history`, `cat`, `ls`,
/// `diff`): its state directory is the remote's own (or `--state-dir`),
/// claimed for it.
pub fn open_remote(url: &str, remote: &RemoteArgs) -> Result<Arc<dyn Backend>, CliError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(CliError::usage("--from URL is empty"));
    }
    let state_dir = match &remote.state_dir {
        Some(s) => absolute(s)?,
        None => paths::remote_state_dir(&BaseDirs::from_env(), url)?,
    };
    sync_core::state::claim(&state_dir, None, url)?;
    crate::remote::open_backend(url, &remote.options(None), &state_dir)
}

/// A synced directory, its remote and its state directory, ready to use.
#[derive(Debug)]
pub struct Workspace {
    /// The canonical directory.
    pub dir: PathBuf,
    /// The remote URL as given (or the default local store).
    pub url: String,
    /// The state directory, claimed for `dir` and `url` and locked while
    /// this lives.
    pub state: StateDir,
    /// The backend.
    pub backend: Arc<dyn Backend>,
}

/// Resolves DIR, the remote (default: the local store of DIR) and the state
/// directory, claims and locks the state directory (sync-core refuses one
/// of another directory or remote, or in use) and opens the backend.
pub fn open_workspace(
    dir: &Path,
    url: Option<&str>,
    remote: &RemoteArgs,
    author: Option<&GitAuthorArgs>,
) -> Result<Workspace, CliError> {
    let base = BaseDirs::from_env();
    let dir = paths::prepare_dir(dir)?;
    let url = match url {
        Some(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => paths::default_store_url(&base, &dir)?,
    };
    let state_dir = match &remote.state_dir {
        Some(s) => absolute(s)?,
        None => paths::default_state_dir(&base, &dir, &url)?,
    };
    if state_dir.starts_with(&dir) {
        return Err(CliError::usage(format!(
            "state directory {} must be outside the synced directory {}",
            state_dir.display(),
            dir.display()
        )));
    }
    let state = StateDir::open(&state_dir, &dir, &url)?;
    let backend = crate::remote::open_backend(&url, &remote.options(author), &state_dir)?;
    Ok(Workspace {
        dir,
        url,
        state,
        backend,
    })
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    std::env::current_dir()
        .map(|c| c.join(p))
        .map_err(|e| CliError::usage(format!("cannot resolve {}: {e}", p.display())))
}

/// SIGTERM or SIGINT, whichever comes first.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening (call early, before long work).
    pub fn new() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| CliError::runtime(format!("cannot listen for signals: {e}"));
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    /// Waits for the next stop signal and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// `1 file`, `2 files`.
pub fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
