//! `sync-s3`: work in progress; see ARCHITECTURE.md.
