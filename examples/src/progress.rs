//! Progress on a terminal (indicatif): a bar during restores (bytes when the
//! backend knows the total size, entries otherwise) and a bar for the first
//! push. Hidden when stderr is not a terminal, so logs
//! collected from pods stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A restore bar; its length and position follow [`update_restore_bar`].
pub fn restore_bar(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), target());
    bar.set_message(crate::logging::escape_controls(&message).into_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Moves a restore bar to the writer's counters: by bytes when the backend
/// announced the total size, otherwise by entries.
pub fn update_restore_bar(bar: &ProgressBar, progress: &sync_core::RestoreProgress) {
    let (template, done, total) = if progress.bytes_total() > 0 {
        (
            "{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
            progress.bytes_done(),
            progress.bytes_total(),
        )
    } else {
        (
            "{msg} [{bar:30}] {pos}/{len} entries {elapsed}",
            progress.entries_done(),
            progress.entries_total(),
        )
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_length(total.max(done));
    bar.set_position(done);
}

/// A bar of files pushed out of files to push.
pub fn push_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), target());
    if let Ok(style) = ProgressStyle::with_template("first push [{bar:30}] {pos}/{len} files {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Updates a first-push bar from engine counters: `pushed` files done,
/// `pending` paths still to go.
pub fn update_push_bar(bar: &ProgressBar, pushed: u64, pending: usize) {
    bar.set_length(pushed + pending as u64);
    bar.set_position(pushed);
}
