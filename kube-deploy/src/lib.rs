//! `kube-deploy`: work in progress; see ARCHITECTURE.md.
