//! `kube-deploy`: gives any Kubernetes pod tether's restore-before-start and
//! continuous sync from one annotation.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod builders;
pub mod inject;
pub mod manifests;
pub mod metrics;
pub mod validate;
pub mod webhook;
