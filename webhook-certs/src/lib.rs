//! `webhook-certs`: work in progress; see ARCHITECTURE.md.
