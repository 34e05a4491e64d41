//! `kube-deploy`: gives any Kubernetes pod tether's restore-before-start and
//! continuous sync from one annotation.
//!
//! A pod (or a Deployment's, StatefulSet's, Job's pod template) opts in with
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     tether.dev/inject: "true"
//!     tether.dev/remote: s3://notebooks/users/alice
//!     tether.dev/mount-path: /home/jovyan
//! ```
//!
//! and gets, before its own init containers, a `tether restore` init
//! container and a `tether sync` native sidecar (an init container with
//! `restartPolicy: Always`), sharing the volume that holds the directory.
//! See [`annotations`] for every key.
//!
//! # What it does
//!
//! * [`builders`]: typed k8s-openapi builders for the restore container, the
//!   sync sidecar (native, or a regular container for clusters older than
//!   1.29), the emptyDirs for tether's state directory, `HOME` and `/tmp`,
//!   the credentials Secret volume (mode 0440: the pod's `fsGroup` or group
//!   0 reads it) and its env, resources, startup and liveness probes on
//!   `/healthz` (no readiness probe: a remote outage never makes the user's
//!   pod NotReady), and a security context that passes the `restricted`
//!   Pod Security Standard without fixing a UID (OpenShift).
//! * [`mod@inject`]: [`inject()`]`(pod, config) -> JSON patch`, a pure function.
//! * [`webhook`]: the mutating admission webhook (axum + rustls): a pure
//!   [`webhook::review`] plus a router and a TLS server whose
//!   [`webhook::ServerLimits`] bound what any client can hold (time,
//!   connections, request-body bytes); [`metrics`] for `/metrics`.
//! * [`manifests`]: offline injection into multi-document YAML
//!   ([`manifests::inject_yaml`], for `tether manifests inject`) and the
//!   webhook's deployment bundle ([`manifests::webhook_bundle`], for
//!   `tether manifests webhook`).
//! * [`app`]: a folder of a remote deployed as a web app
//!   ([`app::app_manifests`], for `tether manifests app`): Deployment,
//!   Service, optional Ingress and NetworkPolicy; the files restored from
//!   the remote at a pinned snapshot (or followed by a `tether follow`
//!   sidecar), a notebook entry converted to a script by `tether convert`.
//!
//! # What it does not do
//!
//! * No certificates: the server takes a [`rustls::ServerConfig`]; the
//!   `webhook-certs` crate makes, stores, publishes and rotates them and
//!   offers an in-memory resolver ([`webhook::tls_server_config`] accepts
//!   any `ResolvesServerCert`).
//! * No command line: `tether webhook` and `tether manifests` in the
//!   examples binary are thin wrappers over [`webhook::serve`],
//!   [`manifests::inject_yaml`] and [`manifests::webhook_bundle`].
//! * No Kubernetes API calls: injection happens in admission or offline.
//! * No syncing: the containers run the `tether` CLI (`tether restore DIR
//!   --from URL`, `tether sync DIR --to URL --grace Ns --http-bind ADDR`).
//!
//! # How data flows
//!
//! ```text
//! AdmissionReview (JSON) ─► webhook::review ─► Pod ─► inject::inject ─► JSON patch ─► AdmissionReview
//!                                                        │
//! YAML stream ─► manifests::inject_yaml ─► pod template ─┘ (patch applied to the document)
//!
//! inject: annotations::TetherRequest (validated) + InjectorConfig + pod spec
//!         ─► builders::PodPlan (names, volume, port) ─► builders::* ─► add operations
//! ```
//!
//! # Design choices and trade-offs
//!
//! * **Hand-built `add` operations, not a diff.** The patch only appends
//!   (and sets the status annotation and, when too short, the grace
//!   period), so it never drops fields this crate's k8s-openapi does not
//!   know and stays readable in audit logs. Paths go through `jsonptr`
//!   (re-exported by `json-patch`), which escapes annotation keys per
//!   RFC 6901.
//! * **Own AdmissionReview wire types** (a private module): the response
//!   sends the patch base64-encoded, the documented JSON form of the API's
//!   `[]byte` (kube-core's types send an array of numbers, kube-rs #1781),
//!   and the request's object is parsed once, straight into a `Pod`, only
//!   for pod CREATEs. This cut [`webhook::review`] for an injected pod from
//!   about 140 to 90 µs (criterion) and dropped the `kube` dependency.
//! * **Restore, then the sidecar, after the pod's own init containers.**
//!   The sidecar never watches a half-restored directory; the pod's init
//!   containers (which may prepare the volume or the network, like
//!   JupyterHub's `block-cloud-metadata`) run first unless the pod asks
//!   for `tether.dev/init-position: first`. A native sidecar anywhere in
//!   `initContainers` is running before the app starts.
//! * **Nothing changed silently.** `tether.dev/changes` lists what the
//!   injector added (containers, volumes, mounts) and changed (a raised
//!   `terminationGracePeriodSeconds`, also a warning).
//! * **Reuse the app's volume.** If an app container mounts a volume at (or
//!   above) the mount path, tether mounts the same volume (with a `subPath`
//!   when needed); otherwise it adds an emptyDir. A JupyterHub home PVC thus
//!   stays the source of truth on the node, and tether syncs it.
//! * **Refuse early, name the annotation.** Every annotation is checked
//!   (URLs without embedded credentials, image references, quantities,
//!   paths without control or shell characters); unknown `tether.dev/` keys
//!   are refused so typos do not pass silently. Messages never echo URLs.
//! * **Idempotent by marker.** `tether.dev/status: injected` makes a second
//!   pass (re-invocation, re-running `manifests inject`) a no-op.
//! * **Opt-in by label, fail closed only for those.** The generated
//!   MutatingWebhookConfiguration selects only pods labelled
//!   `tether.dev/inject: "true"` (plus an optional namespace label), for
//!   CREATE only, never `kube-system` or its own namespace; for them it
//!   uses `failurePolicy: Fail` (an opted-in pod never starts without its
//!   restore), and only with the CA bundle embedded, so no `Fail`
//!   configuration ever exists without one. Two replicas spread over nodes
//!   run behind a PodDisruptionBudget. See [`manifests`].
//! * **YAML via `serde_norway`**, a maintained fork of the deprecated
//!   `serde_yaml`; `serde_yml` is listed by RustSec as unsound/unmaintained.
#![forbid(unsafe_code)]

mod admission;
pub mod annotations;
pub mod app;
mod budget;
pub mod builders;
mod connections;
pub mod inject;
pub mod manifests;
pub mod metrics;
pub mod validate;
pub mod webhook;

pub use annotations::{AnnotationError, SidecarMode, TetherRequest};
pub use inject::{Changes, InjectError, InjectionOutcome, InjectorConfig, inject};
pub use manifests::{
    InjectionReport, ManifestError, WebhookManifestConfig, inject_yaml, inject_yaml_report,
    webhook_bundle,
};
pub use webhook::{ServerLimits, WebhookConfig, WebhookError, WebhookState, router, serve};
