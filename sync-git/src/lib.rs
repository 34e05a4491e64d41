//! `sync-git`: work in progress; see ARCHITECTURE.md.
