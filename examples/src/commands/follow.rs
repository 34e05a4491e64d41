//! `tether follow DIR --from URL [--path P] [--convert NB]`: a thin wrapper
//! over [`crate::follow::Follower`] — HTTP endpoints, the on-change hooks
//! and signal handling.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::FollowArgs;
use crate::error::CliError;
use crate::follow::{FollowOptions, Follower, SyncOutcome};

fn parse_signal(name: &str) -> Result<rustix::process::Signal, CliError> {
    use rustix::process::Signal;
    Ok(
        match name.trim_start_matches("SIG").to_ascii_uppercase().as_str() {
            "HUP" => Signal::HUP,
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            "USR1" => Signal::USR1,
            "USR2" => Signal::USR2,
            _ => {
                return Err(CliError::usage(format!(
                    "--signal {name:?}: use HUP, TERM, INT, USR1 or USR2"
                )));
            }
        },
    )
}

/// Sends `signal` to the process named in `pid_file`.
fn signal_pid_file(pid_file: &std::path::Path, signal: rustix::process::Signal) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    match pid {
        Some(pid) => {
            if let Err(e) = rustix::process::kill_process(pid, signal) {
                tracing::warn!(pid = pid.as_raw_nonzero().get(), error = %e, "could not signal the app");
            } else {
                tracing::info!(
                    pid = pid.as_raw_nonzero().get(),
                    ?signal,
                    "signalled the app"
                );
            }
        }
        None => tracing::warn!(file = %pid_file.display(), "no process id in the pid file"),
    }
}

/// Runs `tether follow`.
pub async fn run(args: FollowArgs) -> Result<ExitCode, CliError> {
    if args.link.is_empty() || args.link.contains('/') || args.link.starts_with('.') {
        return Err(CliError::usage(
            "--link must be a plain name inside DIR (no '/', not hidden)",
        ));
    }
    let signal = args
        .pid_file
        .as_ref()
        .map(|_| parse_signal(&args.signal))
        .transpose()?;
    let root = crate::paths::prepare_dir(&args.dir)?;
    let backend = super::open_remote(&args.from, &args.remote)?;
    let options = FollowOptions {
        root: root.clone(),
        link: args.link.clone(),
        paths: args.paths.clone(),
        convert: args.convert.clone(),
        interval: args.interval,
        max_backoff: args.max_backoff.max(args.interval),
    };
    let follower = Arc::new(Follower::new(backend, options));
    let mut signals = super::StopSignals::new()?;
    if args.once {
        let outcome = tokio::select! {
            r = follower.sync_once() => r.map_err(|e| CliError::runtime(e.to_string()))?,
            sig = signals.recv() => return Err(CliError::runtime(format!("{sig} during the sync"))),
        };
        match outcome {
            SyncOutcome::Swapped(id) => {
                println!("{} now points at {id}", root.join(&args.link).display())
            }
            SyncOutcome::Unchanged(id) => {
                println!("{} already points at {id}", root.join(&args.link).display())
            }
            SyncOutcome::EmptyRemote => {
                return Err(CliError::runtime("the remote holds no snapshot yet"));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let _http = match args.http_bind {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                CliError::usage(format!("cannot listen on --http-bind {addr}: {e}"))
            })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz, /readyz and /metrics");
            let router = crate::follow::router(follower.monitor());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!(error = %e, "HTTP endpoint stopped");
                }
            }))
        }
        None => None,
    };
    let link: PathBuf = root.join(&args.link);
    let on_change = args.on_change.clone();
    let pid_file = args.pid_file.clone();
    let hook = move |id: &str| {
        if let (Some(file), Some(signal)) = (&pid_file, signal) {
            signal_pid_file(file, signal);
        }
        if let Some(command) = &on_change {
            let mut child = tokio::process::Command::new("sh");
            child
                .arg("-c")
                .arg(command)
                .env("TETHER_FOLLOW_ID", id)
                .env("TETHER_FOLLOW_LINK", &link)
                .stdin(std::process::Stdio::null());
            tokio::spawn(async move {
                match child.status().await {
                    Ok(s) if s.success() => tracing::info!("--on-change command finished"),
                    Ok(s) => tracing::warn!(status = %s, "--on-change command failed"),
                    Err(e) => tracing::warn!(error = %e, "--on-change command did not start"),
                }
            });
        }
    };
    let stop = async move {
        let sig = signals.recv().await;
        tracing::info!(signal = sig, "stopping");
    };
    follower.run(hook, stop).await;
    Ok(ExitCode::SUCCESS)
}
