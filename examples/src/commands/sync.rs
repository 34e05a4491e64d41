//! `tether sync DIR [--to URL]`: restore if DIR is empty, then watch and
//! push until SIGTERM/SIGINT, which flush pending changes within `--grace`.
//! `--once` pushes the current state and exits. On an object store in the
//! snapshots layout the sidecar also keeps the remote's history bounded:
//! `--retention` (default `within=1h,hourly=48,daily=14,weekly=8`) runs as
//! forget + prune in the background every `--maintenance-interval`
//! ([`crate::maintenance::Sidecar`]), never delaying a push or the flush.

use std::process::ExitCode;
use std::time::Duration;

use sync_core::{
    Engine, EngineConfig, FlushError, IgnoreConfig, Policy, RestoreOptions, ShutdownReport, Status,
};

use super::restore::{restore_into, summary};
use super::{StopSignals, human_bytes, open_workspace};
use crate::cli::{RestoreWhen, SyncArgs};
use crate::error::CliError;
use crate::health::{Monitor, Phase};

/// How often the engine's status is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// How long `sync --once` waits for a backend's background housekeeping
/// before exiting (a gc of the local git repository; the default command
/// timeout of sync-git).
const BACKGROUND_WAIT: Duration = Duration::from_secs(600);

/// The engine configuration the flags describe.
pub fn engine_config(
    args: &SyncArgs,
    dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> EngineConfig {
    let mut config = EngineConfig::new(dir, state_dir);
    config.ignore = IgnoreConfig {
        defaults: !args.no_default_ignores,
        file: Some(args.ignore_file.clone()),
        patterns: args.ignore.clone(),
    };
    config.policy = Policy {
        quiet: args.debounce,
        max_latency: args.max_latency.max(args.debounce),
        ..Policy::default()
    };
    if let Some(interval) = args.poll_interval {
        config.use_inotify = false;
        config.poll_interval = interval;
    }
    config.verify_hashes = args.verify_hashes;
    config.delete_guard = (!args.allow_mass_delete).then_some(args.max_delete);
    config
}

/// The message for a shutdown that did not save everything, or `None`.
pub fn unsaved_message(report: &ShutdownReport, grace: Duration) -> Option<String> {
    if report.flushed {
        return None;
    }
    let shown: Vec<String> = report
        .unsaved
        .iter()
        .take(5)
        .map(|p| p.to_string())
        .collect();
    let grace = humantime::format_duration(grace);
    let n = report.unsaved.len();
    let mut msg = if shown.is_empty() {
        format!("pending changes not saved within {grace}")
    } else {
        format!(
            "{n} {} not saved within {grace}: {}{}",
            if n == 1 { "path" } else { "paths" },
            shown.join(", "),
            if report.unsaved.len() > shown.len() {
                format!(" and {} more", report.unsaved.len() - shown.len())
            } else {
                String::new()
            }
        )
    };
    if let Some(e) = &report.last_error {
        msg.push_str(&format!(" (last error: {e})"));
    }
    Some(msg)
}

/// Logs what changed between two status samples and the engine does not
/// log itself (it logs every push, failure and conflict once).
fn log_transitions(old: &Status, new: &Status) {
    if old.last_error.is_some() && new.last_error.is_none() {
        tracing::info!("pushes succeed again");
    }
    if new.watch_mode != old.watch_mode {
        tracing::warn!(mode = ?new.watch_mode, "watch mode changed");
    }
}

/// Runs `tether sync`.
pub async fn run(args: SyncArgs) -> Result<ExitCode, CliError> {
    let mut signals = StopSignals::new()?;
    let policy = crate::maintenance::sidecar_policy(args.retention, &args.keep)?;
    let ws = open_workspace(
        &args.dir,
        args.to.as_deref(),
        &args.remote,
        Some(&args.author),
    )?;
    let remote = ws.backend.describe();
    // Background retention (not for --once: a one-shot push must not
    // start deleting). Opened now, so a bad setting fails before anything
    // runs; started once the engine runs.
    let maintenance = if args.once {
        None
    } else {
        crate::maintenance::Sidecar::new(
            &ws.url,
            &args.remote.options(Some(&args.author)),
            policy,
            args.maintenance_interval,
            args.prune_grace,
        )?
    };
    let monitor = Monitor::new(args.unready_after);
    let _http = match args.http_bind {
        Some(addr) => Some(crate::health::serve(addr, monitor.clone()).await?),
        None => None,
    };
    let _ui = match args.ui_bind {
        Some(addr) => {
            if args.http_bind.is_some_and(|h| {
                h.port() == addr.port()
                    && (h.ip() == addr.ip()
                        || h.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            }) {
                return Err(CliError::usage(format!(
                    "--ui-bind {addr} is the metrics endpoint's address (--http-bind): give the history page a port of its own"
                )));
            }
            let config = crate::ui::UiConfig {
                dir: ws.dir.clone(),
                timeout: args.remote.request_timeout,
            };
            Some(crate::ui::serve(addr, ws.backend.clone(), config).await?)
        }
        None => None,
    };
    tracing::info!(dir = %ws.dir.display(), remote = %remote, state_dir = %ws.state.path().display(), "tether sync starting");

    if args.restore == RestoreWhen::IfEmpty && crate::paths::is_effectively_empty(&ws.dir)? {
        let options = RestoreOptions {
            at: None,
            existing: sync_core::ExistingPolicy::KeepNewer,
            ..Default::default()
        };
        let restored = tokio::select! {
            r = restore_into(&ws.backend, &ws.state, &options) => r?,
            sig = signals.recv() => {
                return Err(CliError::runtime(format!("{sig} during restore: {} is incomplete", ws.dir.display())));
            }
        };
        tracing::info!("{}", summary(&restored, &remote, &ws.dir));
    }

    let config = engine_config(&args, &ws.dir, ws.state.path());
    // Start-up asks the remote for its head, which a hanging remote does
    // not answer before --request-timeout: a signal must not wait for it.
    let engine = tokio::select! {
        started = Engine::start_with(config, ws.backend.clone(), ws.state) => started?,
        sig = signals.recv() => {
            return Err(CliError::runtime(format!(
                "{sig} while starting (the remote did not answer): changes in {} since the last push are not saved; the next start pushes them",
                ws.dir.display()
            )));
        }
    };
    monitor.set_phase(Phase::Syncing);

    if args.once {
        tokio::select! {
            flushed = engine.flush() => {
                if let Err(e @ FlushError::MassDelete { .. }) = &flushed {
                    // Everything else is pushed; the deletes wait for a person.
                    let _ = engine.shutdown(Duration::ZERO).await;
                    return Err(CliError::usage(format!(
                        "{e}; nothing else is pending. If the files were deleted on purpose, run again with --allow-mass-delete (or raise --max-delete); if not, restore them: `tether restore {} --from URL --existing keep-newer`",
                        args.dir.display()
                    )));
                }
                if let Err(e) = &flushed {
                    let status = engine.status();
                    if status.last_error_permanent {
                        // Retrying until the grace period ends cannot help:
                        // say what to change, at once. The index is
                        // untouched, so the next run pushes everything.
                        let _ = engine.shutdown(Duration::ZERO).await;
                        return Err(CliError::usage(format!(
                            "nothing pushed to {remote}: {e}"
                        )));
                    }
                    tracing::warn!(error = %e, "push failed; retrying until the grace period ends");
                }
            }
            sig = signals.recv() => tracing::info!(signal = sig, "stopping: pushing pending changes"),
        }
        let status = engine.status();
        let report = engine.shutdown(args.grace).await;
        if let Some(msg) = unsaved_message(&report, args.grace) {
            return Err(CliError::runtime(msg));
        }
        // A one-shot run (a CronJob) exits next: let the backend's
        // housekeeping (sync-git packing its local repository) finish,
        // unless told to stop (the push itself is done).
        tokio::select! {
            () = ws.backend.wait_background(BACKGROUND_WAIT) => {}
            sig = signals.recv() => tracing::info!(signal = sig, "not waiting for the backend's housekeeping"),
        }
        println!(
            "pushed {} ({}) to {remote}",
            super::files(status.files_pushed),
            human_bytes(status.bytes_pushed)
        );
        return Ok(ExitCode::SUCCESS);
    }

    // Aborted when dropped: at a stop signal, before the flush, and on any
    // early return. Stopping a run mid-way is safe; the next one redoes it.
    let mut maintenance = maintenance.map(|m| m.start(monitor.clone()));
    let bar = crate::progress::push_bar();
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    let mut push_events = engine.push_events();
    let signal = {
        // The first flush answers "is the first round done" exactly, also
        // when there is nothing to push.
        let first_flush = engine.flush();
        tokio::pin!(first_flush);
        let mut first_done = false;
        loop {
            tokio::select! {
                sig = signals.recv() => break sig,
                result = &mut first_flush, if !first_done => {
                    first_done = true;
                    match result {
                        Ok(()) => monitor.mark_initialized(),
                        // Everything but the held-back deletes is pushed:
                        // the first round is done; /readyz says why not ready.
                        Err(FlushError::MassDelete { .. }) => monitor.mark_initialized(),
                        // (The engine logged the failure.)
                        Err(e) => tracing::debug!(error = %e, "first push failed; retrying"),
                    }
                }
                _ = ticker.tick() => {
                    while let Ok(event) = push_events.try_recv() {
                        monitor.observe_push(event.duration);
                    }
                    let status = engine.status();
                    if !bar.is_finished() {
                        crate::progress::update_push_bar(&bar, status.files_pushed, status.pending_paths);
                    }
                    let fresh = status.clone();
                    if let Some(old) = monitor.observe(status) {
                        log_transitions(&old, &fresh);
                    }
                }
            }
            if monitor.initialized() && !bar.is_finished() {
                bar.finish_and_clear();
                let s = engine.status();
                tracing::info!(
                    files = s.files_pushed,
                    bytes = s.bytes_pushed,
                    "in sync; watching for changes"
                );
            }
        }
    };
    bar.finish_and_clear();
    // Never let maintenance compete with the flush.
    drop(maintenance.take());
    monitor.set_phase(Phase::Stopping);
    let pending = engine.status().pending_paths;
    tracing::info!(
        signal,
        pending,
        grace_s = args.grace.as_secs_f64(),
        "stopping: pushing pending changes"
    );
    let report = engine.shutdown(args.grace).await;
    match unsaved_message(&report, args.grace) {
        Some(msg) => Err(CliError::runtime(msg)),
        None => {
            tracing::info!("stopped; everything is saved");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::RelPath;

    #[test]
    fn unsaved_paths_are_named() {
        let ok = ShutdownReport {
            flushed: true,
            unsaved: vec![],
            last_error: None,
        };
        assert_eq!(unsaved_message(&ok, Duration::from_secs(25)), None);
        let paths: Vec<RelPath> = (0..7)
            .map(|i| RelPath::new(format!("f{i}.txt")).unwrap())
            .collect();
        let bad = ShutdownReport {
            flushed: false,
            unsaved: paths,
            last_error: Some("put: connection refused".into()),
        };
        let msg = unsaved_message(&bad, Duration::from_secs(25)).unwrap();
        assert!(
            msg.starts_with("7 paths not saved within 25s: f0.txt") && msg.contains("and 2 more"),
            "{msg}"
        );
        assert!(msg.contains("connection refused"), "{msg}");
    }
}
