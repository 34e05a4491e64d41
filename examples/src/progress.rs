//! Progress on a terminal (indicatif): a spinner during restores and a bar
//! for the first push. Hidden when stderr is not a terminal, so logs
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

/// A spinner with elapsed time, e.g. "restoring from s3://… 3s".
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
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
