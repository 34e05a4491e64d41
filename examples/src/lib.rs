//! Shared code of the `tether` command and the examples: work in progress.
