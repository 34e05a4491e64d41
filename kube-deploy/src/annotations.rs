//! The pod annotations that ask for tether, and their validation.
//!
//! All keys live under one prefix, [`PREFIX`] (`tether.dev/`). A pod opts in
//! with the **label** `tether.dev/inject: "true"` ([`INJECT_LABEL`]; the
//! webhook's `objectSelector` selects on it, so the API server never calls
//! the webhook for any other pod) and names its remote and the directory to
//! keep in annotations (`tether.dev/remote`, `tether.dev/mount-path`); every
//! other key is optional. The annotation `tether.dev/inject: "true"` is
//! accepted too (offline `tether manifests inject` needs no label), but only
//! the label brings a pod to the webhook.
//! [`TetherRequest::from_metadata`] turns labels and annotations into a
//! checked request or an [`AnnotationError`] whose message names the
//! annotation, so `kubectl` shows the user exactly which line to fix.

use std::collections::BTreeMap;

use url::Url;

use crate::validate::{self, RemoteKind};

/// The prefix of every annotation tether reads or writes.
pub const PREFIX: &str = "tether.dev/";
/// `"true"` opts the pod in, `"false"` (or absence) opts it out. Read as a
/// label ([`INJECT_LABEL`], what the webhook selects on) and as an
/// annotation; when both are set they must agree.
pub const INJECT: &str = "tether.dev/inject";
/// The pod label the webhook's `objectSelector` matches (`"true"`).
pub const INJECT_LABEL: &str = INJECT;
/// The remote URL to restore from and sync to (required).
pub const REMOTE: &str = "tether.dev/remote";
/// The directory, as the app container(s) see it, to keep in sync (required).
pub const MOUNT_PATH: &str = "tether.dev/mount-path";
/// Comma-separated names of the app containers that see the directory
/// (default: every regular container).
pub const CONTAINERS: &str = "tether.dev/containers";
/// The tether image to run (default: the injector's configured image).
pub const IMAGE: &str = "tether.dev/image";
/// Object-store layout, `mirror` or `snapshots`; added to the URL as
/// `?layout=`.
pub const LAYOUT: &str = "tether.dev/layout";
/// Name of a Secret in the pod's namespace holding backend credentials.
pub const CREDENTIALS_SECRET: &str = "tether.dev/credentials-secret";
/// `<secret>/<key>`: the key of a Secret in the pod's namespace that holds
/// the repository's encryption key (`tether key generate`) or passphrase.
/// Mounted read-only as a file into the restore and sync containers, which
/// get `TETHER_ENCRYPTION_KEY_FILE`. Object-store remotes in the snapshots
/// layout only.
pub const ENCRYPTION_KEY_SECRET: &str = "tether.dev/encryption-key-secret";
/// Path of an ignore file, relative to the synced directory.
pub const IGNORE_FILE: &str = "tether.dev/ignore-file";
/// CPU request of each tether container.
pub const CPU_REQUEST: &str = "tether.dev/cpu-request";
/// Memory request of each tether container.
pub const MEMORY_REQUEST: &str = "tether.dev/memory-request";
/// CPU limit of each tether container.
pub const CPU_LIMIT: &str = "tether.dev/cpu-limit";
/// Memory limit of each tether container.
pub const MEMORY_LIMIT: &str = "tether.dev/memory-limit";
/// `native` (init container with `restartPolicy: Always`, Kubernetes ≥ 1.29)
/// or `container` (a regular container, for older clusters).
pub const SIDECAR_MODE: &str = "tether.dev/sidecar-mode";
/// Seconds the sidecar has to flush pending changes after SIGTERM.
pub const GRACE_SECONDS: &str = "tether.dev/grace-seconds";
/// TCP port of the sidecar's `/healthz`, `/readyz` and `/metrics`.
pub const HTTP_PORT: &str = "tether.dev/http-port";
/// Where tether's restore init container and native sidecar go among the
/// pod's own init containers: `last` (default: after them, because they may
/// prepare the volume or the network) or `first`.
pub const INIT_POSITION: &str = "tether.dev/init-position";
/// `"true"`: the sidecar pushes deletes however many files they remove
/// (`--allow-mass-delete`, confirming what the mass-delete guard held back);
/// `"false"` (default): the guard holds back a checkpoint that would delete
/// more than half of the remote's files (and more than 100).
pub const ALLOW_MASS_DELETE: &str = "tether.dev/allow-mass-delete";
/// `"true"`: the sidecar serves the history page (`tether sync --ui-bind`)
/// on loopback, port [`crate::inject::DEFAULT_HISTORY_UI_PORT`] (the next
/// free one if a container declares it), for `jupyter-server-proxy` to
/// show at `/user/<name>/proxy/<port>/`; `"false"` (default): off.
pub const HISTORY_UI: &str = "tether.dev/history-ui";
/// Retention of the remote's history (object stores in the snapshots
/// layout): `"off"`, or a policy spec such as
/// `"within=24h,hourly=48,daily=14,weekly=8"` (rules `within`, `hourly`,
/// `daily`, `weekly`, `monthly`, `yearly`, `last`; see
/// `sync_core::retention`). The sidecar runs forget + prune with it in the
/// background (`TETHER_RETENTION`). Default: the injector's
/// ([`Retention::DEFAULT`]).
pub const RETENTION: &str = "tether.dev/retention";
/// Written by the injector: `injected` once a pod carries tether.
pub const STATUS: &str = "tether.dev/status";
/// Written by the injector: JSON listing everything it added or changed
/// (see [`crate::inject::Changes`]).
pub const CHANGES: &str = "tether.dev/changes";
/// The value of [`STATUS`] on an injected pod.
pub const STATUS_INJECTED: &str = "injected";

/// Every key the injector understands; any other key under [`PREFIX`] is
/// refused so that a typo (`tether.dev/remote-url`) is not silently ignored.
pub const KNOWN_KEYS: &[&str] = &[
    INJECT,
    REMOTE,
    MOUNT_PATH,
    CONTAINERS,
    IMAGE,
    LAYOUT,
    CREDENTIALS_SECRET,
    ENCRYPTION_KEY_SECRET,
    IGNORE_FILE,
    CPU_REQUEST,
    MEMORY_REQUEST,
    CPU_LIMIT,
    MEMORY_LIMIT,
    SIDECAR_MODE,
    GRACE_SECONDS,
    HTTP_PORT,
    INIT_POSITION,
    ALLOW_MASS_DELETE,
    HISTORY_UI,
    RETENTION,
    STATUS,
    CHANGES,
];

/// Longest flush deadline accepted, in seconds. Kubernetes has no upper
/// bound on grace periods, but a sidecar that needs minutes to flush is a
/// configuration mistake worth catching.
pub const MAX_GRACE_SECONDS: u32 = 600;

/// An annotation that could not be accepted. The message names the
/// annotation and never echoes a value that might carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {reason}")]
pub struct AnnotationError {
    /// The full annotation key, e.g. `tether.dev/remote`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AnnotationError {
    pub(crate) fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How the sync container is added to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes ≥ 1.29):
    /// starts before the app, stops after it, and lets Jobs complete.
    #[default]
    Native,
    /// A regular container, for clusters older than 1.29. A Job whose pod
    /// carries it never completes, because the sidecar keeps running.
    Container,
}

/// Where tether's init containers go among the pod's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitPosition {
    /// After the pod's init containers: they may prepare the volume
    /// (permissions, a checkout) or the network (JupyterHub's
    /// `block-cloud-metadata`), and the restore should see the result.
    #[default]
    Last,
    /// Before them, so they already see the restored directory.
    First,
}

/// What a sidecar keeps of its remote's history ([`RETENTION`],
/// `TETHER_RETENTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// No background forget or prune.
    Off,
    /// Forget + prune with this policy.
    Policy(sync_core::retention::ForgetPolicy),
}

impl Retention {
    /// tether's default for injected sidecars
    /// (`within=1h,hourly=48,daily=14,weekly=8`): every checkpoint of the
    /// last hour, hourly ones for two days, daily ones for two weeks,
    /// weekly ones for two months — at most about 430 snapshots.
    pub const DEFAULT: Retention = Retention::Policy(sync_core::retention::DEFAULT_SIDECAR_POLICY);
}

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `off`, or a policy spec (`sync_core::retention::ForgetPolicy`'s
    /// `FromStr`, the same reading as `tether sync --retention`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Retention::Off);
        }
        s.parse()
            .map(Retention::Policy)
            .map_err(|e: sync_core::retention::ParsePolicyError| {
                format!("must be \"off\" or a retention policy: {}", e.reason)
            })
    }
}

/// `off`, or the policy's spec (what `TETHER_RETENTION` carries).
impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Off => f.write_str("off"),
            Retention::Policy(p) => p.fmt(f),
        }
    }
}

/// Resource settings for the tether containers, as Kubernetes quantities.
/// `None` leaves the injector's default in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceOverrides {
    /// CPU request, e.g. `10m`.
    pub cpu_request: Option<String>,
    /// Memory request, e.g. `64Mi`.
    pub memory_request: Option<String>,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory limit, e.g. `256Mi`.
    pub memory_limit: Option<String>,
}

/// One key of a Secret ([`ENCRYPTION_KEY_SECRET`]'s `<secret>/<key>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name (a DNS-1123 subdomain).
    pub secret: String,
    /// The key inside it (`[-._a-zA-Z0-9]+`, as Kubernetes allows).
    pub key: String,
}

/// Reads `<secret>/<key>`: a Secret name and one of its data keys.
fn secret_key_ref(value: &str) -> Result<SecretKeyRef, String> {
    let Some((secret, key)) = value.split_once('/') else {
        return Err(
            "must be \"<secret>/<key>\": the Secret's name and the key in it that holds the encryption key"
                .into(),
        );
    };
    validate::dns1123_subdomain(secret).map_err(|e| format!("the Secret name: {e}"))?;
    let valid_key = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_key {
        return Err(
            "the key after \"/\" must be a Secret data key: 1-253 characters of letters, digits, '-', '_' and '.' (not \".\" or \"..\")"
                .into(),
        );
    }
    Ok(SecretKeyRef {
        secret: secret.to_owned(),
        key: key.to_owned(),
    })
}

/// A pod's validated request for tether, read from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TetherRequest {
    /// The remote, with `?layout=` folded in when the layout annotation was set.
    pub remote: Url,
    /// What kind of remote that is.
    pub remote_kind: RemoteKind,
    /// The synced directory as the app containers see it (no trailing `/`).
    pub mount_path: String,
    /// App containers to mount the directory into; empty means all.
    pub containers: Vec<String>,
    /// Image override.
    pub image: Option<String>,
    /// Secret holding backend credentials.
    pub credentials_secret: Option<String>,
    /// The Secret key holding the encryption key ([`ENCRYPTION_KEY_SECRET`]).
    pub encryption_key: Option<SecretKeyRef>,
    /// Ignore file relative to the synced directory.
    pub ignore_file: Option<String>,
    /// Resource overrides.
    pub resources: ResourceOverrides,
    /// Sidecar mode override.
    pub sidecar_mode: Option<SidecarMode>,
    /// Flush deadline override, seconds.
    pub grace_seconds: Option<u32>,
    /// HTTP port override.
    pub http_port: Option<u16>,
    /// Where the init containers go.
    pub init_position: InitPosition,
    /// [`ALLOW_MASS_DELETE`] is `"true"`.
    pub allow_mass_delete: bool,
    /// [`HISTORY_UI`] is `"true"`.
    pub history_ui: bool,
    /// [`RETENTION`], when set.
    pub retention: Option<Retention>,
    /// Whether the pod carries the opt-in label (the webhook only sees pods
    /// that do).
    pub labelled: bool,
}

/// What the annotations say about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationVerdict {
    /// The pod did not opt in (no `tether.dev/inject: "true"`).
    NotRequested,
    /// The pod already carries tether (`tether.dev/status: injected`).
    AlreadyInjected,
    /// The pod asks for tether and the annotations are valid.
    Requested(Box<TetherRequest>),
}

fn opt_in(value: Option<&str>, what: &str) -> Result<Option<bool>, AnnotationError> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(AnnotationError::new(
            INJECT,
            format!("{what} must be \"true\" or \"false\""),
        )),
    }
}

impl TetherRequest {
    /// Reads and checks the annotations of a pod (or pod template) that
    /// carries no labels; see [`Self::from_metadata`].
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<AnnotationVerdict, AnnotationError> {
        Self::from_metadata(&BTreeMap::new(), annotations)
    }

    /// Reads and checks the opt-in label and the annotations of a pod (or
    /// pod template). The pod opts in when the label or the annotation
    /// `tether.dev/inject` is `"true"`; when both are set they must agree.
    ///
    /// Unknown keys under [`PREFIX`] are refused only when the pod opted in,
    /// so that an unrelated pod never fails admission because of tether.
    pub fn from_metadata(
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<AnnotationVerdict, AnnotationError> {
        let get = |key: &str| annotations.get(key).map(String::as_str);
        if get(STATUS) == Some(STATUS_INJECTED) {
            return Ok(AnnotationVerdict::AlreadyInjected);
        }
        let label = opt_in(labels.get(INJECT_LABEL).map(String::as_str), "the label")?;
        let annotation = opt_in(get(INJECT), "the annotation")?;
        match (label, annotation) {
            (Some(true), Some(false)) | (Some(false), Some(true)) => {
                return Err(AnnotationError::new(
                    INJECT,
                    "the label and the annotation disagree; set one, or both to the same value",
                ));
            }
            (Some(true), _) | (_, Some(true)) => {}
            _ => return Ok(AnnotationVerdict::NotRequested),
        }
        let labelled = label == Some(true);
        if let Some(unknown) = annotations
            .keys()
            .find(|k| k.starts_with(PREFIX) && !KNOWN_KEYS.contains(&k.as_str()))
        {
            return Err(AnnotationError::new(
                unknown,
                format!(
                    "unknown tether annotation (known: {})",
                    KNOWN_KEYS.join(", ")
                ),
            ));
        }
        if let Some(status) = get(STATUS) {
            return Err(AnnotationError::new(
                STATUS,
                format!(
                    "is written by the injector; only {STATUS_INJECTED:?} is meaningful, got {status:?}"
                ),
            ));
        }
        if get(CHANGES).is_some() {
            return Err(AnnotationError::new(
                CHANGES,
                format!("is written by the injector, together with {STATUS}"),
            ));
        }

        let remote_raw = get(REMOTE).ok_or_else(|| AnnotationError::new(REMOTE, "is required"))?;
        let (mut remote, remote_kind) =
            validate::remote_url(remote_raw).map_err(|e| AnnotationError::new(REMOTE, e))?;
        if let Some(layout) = get(LAYOUT) {
            if layout != "mirror" && layout != "snapshots" {
                return Err(AnnotationError::new(
                    LAYOUT,
                    "must be \"mirror\" or \"snapshots\"",
                ));
            }
            if !remote_kind.is_object_store() {
                return Err(AnnotationError::new(
                    LAYOUT,
                    "applies only to object-store remotes (file, s3, gs, az), not to git",
                ));
            }
            let existing = remote
                .query_pairs()
                .find(|(k, _)| k == "layout")
                .map(|(_, v)| v.into_owned());
            match existing {
                Some(existing) if existing != layout => {
                    return Err(AnnotationError::new(
                        LAYOUT,
                        format!("is {layout:?} but {REMOTE} already says layout={existing}"),
                    ));
                }
                Some(_) => {}
                None => {
                    remote.query_pairs_mut().append_pair("layout", layout);
                }
            }
        }

        let mount_path_raw =
            get(MOUNT_PATH).ok_or_else(|| AnnotationError::new(MOUNT_PATH, "is required"))?;
        validate::absolute_path(mount_path_raw).map_err(|e| AnnotationError::new(MOUNT_PATH, e))?;
        let mount_path = mount_path_raw.trim_end_matches('/').to_owned();

        let containers = match get(CONTAINERS) {
            None => Vec::new(),
            Some(list) => {
                let names: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
                for name in &names {
                    validate::dns1123_label(name)
                        .map_err(|e| AnnotationError::new(CONTAINERS, e))?;
                }
                names
            }
        };

        let image = get(IMAGE)
            .map(|image| {
                validate::image_reference(image)
                    .map(|()| image.to_owned())
                    .map_err(|e| {
                        AnnotationError::new(IMAGE, format!("not a valid image reference: {e}"))
                    })
            })
            .transpose()?;

        let credentials_secret = get(CREDENTIALS_SECRET)
            .map(|name| {
                validate::dns1123_subdomain(name)
                    .map(|()| name.to_owned())
                    .map_err(|e| AnnotationError::new(CREDENTIALS_SECRET, e))
            })
            .transpose()?;
        if credentials_secret.is_some()
            && matches!(
                remote_kind,
                RemoteKind::File | RemoteKind::GitDaemon | RemoteKind::GitFile
            )
        {
            return Err(AnnotationError::new(
                CREDENTIALS_SECRET,
                "is set, but file:// and git:// remotes take no credentials",
            ));
        }

        let encryption_key = get(ENCRYPTION_KEY_SECRET)
            .map(|value| {
                secret_key_ref(value).map_err(|e| AnnotationError::new(ENCRYPTION_KEY_SECRET, e))
            })
            .transpose()?;
        if encryption_key.is_some() {
            if !remote_kind.is_object_store() {
                return Err(AnnotationError::new(
                    ENCRYPTION_KEY_SECRET,
                    "applies only to object-store remotes (file, s3, gs, az) in the snapshots layout; tether does not encrypt git remotes",
                ));
            }
            if remote
                .query_pairs()
                .any(|(k, v)| k == "layout" && v == "mirror")
            {
                return Err(AnnotationError::new(
                    ENCRYPTION_KEY_SECRET,
                    "the mirror layout is never encrypted (its objects are the files, browsable with any S3 tool): use the snapshots layout",
                ));
            }
        }

        let ignore_file = get(IGNORE_FILE)
            .map(|path| {
                validate::relative_path(path)
                    .map(|()| path.to_owned())
                    .map_err(|e| AnnotationError::new(IGNORE_FILE, e))
            })
            .transpose()?;

        let quantity = |key: &str| {
            get(key)
                .map(|q| {
                    validate::quantity(q)
                        .map(|()| q.to_owned())
                        .map_err(|e| AnnotationError::new(key, e))
                })
                .transpose()
        };
        let resources = ResourceOverrides {
            cpu_request: quantity(CPU_REQUEST)?,
            memory_request: quantity(MEMORY_REQUEST)?,
            cpu_limit: quantity(CPU_LIMIT)?,
            memory_limit: quantity(MEMORY_LIMIT)?,
        };

        let sidecar_mode = match get(SIDECAR_MODE) {
            None => None,
            Some("native") => Some(SidecarMode::Native),
            Some("container") => Some(SidecarMode::Container),
            Some(_) => {
                return Err(AnnotationError::new(
                    SIDECAR_MODE,
                    "must be \"native\" or \"container\"",
                ));
            }
        };

        let grace_seconds = get(GRACE_SECONDS)
            .map(|g| match g.parse::<u32>() {
                Ok(n) if (1..=MAX_GRACE_SECONDS).contains(&n) => Ok(n),
                _ => Err(AnnotationError::new(
                    GRACE_SECONDS,
                    format!("must be a whole number of seconds from 1 to {MAX_GRACE_SECONDS}"),
                )),
            })
            .transpose()?;

        let http_port = get(HTTP_PORT)
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n >= 1024 => Ok(n),
                _ => Err(AnnotationError::new(
                    HTTP_PORT,
                    "must be a port number from 1024 to 65535 (unprivileged)",
                )),
            })
            .transpose()?;

        let init_position = match get(INIT_POSITION) {
            None | Some("last") => InitPosition::Last,
            Some("first") => InitPosition::First,
            Some(_) => {
                return Err(AnnotationError::new(
                    INIT_POSITION,
                    "must be \"last\" (after the pod's init containers) or \"first\"",
                ));
            }
        };

        let allow_mass_delete = match get(ALLOW_MASS_DELETE) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(AnnotationError::new(
                    ALLOW_MASS_DELETE,
                    "must be \"true\" (push deletes however many files they remove) or \"false\"",
                ));
            }
        };

        let history_ui = match get(HISTORY_UI) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(AnnotationError::new(
                    HISTORY_UI,
                    "must be \"true\" (serve the history page on loopback) or \"false\"",
                ));
            }
        };

        let retention = get(RETENTION)
            .map(|v| {
                v.parse::<Retention>()
                    .map_err(|e| AnnotationError::new(RETENTION, e))
            })
            .transpose()?;
        if let Some(Retention::Policy(_)) = retention {
            if !remote_kind.is_object_store() {
                return Err(AnnotationError::new(
                    RETENTION,
                    "applies only to object-store remotes (file, s3, gs, az) in the snapshots layout: a git remote keeps every commit (use \"off\" or leave it out)",
                ));
            }
            if remote
                .query_pairs()
                .any(|(k, v)| k == "layout" && v == "mirror")
            {
                return Err(AnnotationError::new(
                    RETENTION,
                    "the mirror layout keeps only the newest state, there is no history to forget: use the snapshots layout (or \"off\")",
                ));
            }
        }

        Ok(AnnotationVerdict::Requested(Box::new(TetherRequest {
            remote,
            remote_kind,
            mount_path,
            containers,
            image,
            credentials_secret,
            encryption_key,
            ignore_file,
            resources,
            sidecar_mode,
            grace_seconds,
            http_port,
            init_position,
            allow_mass_delete,
            history_ui,
            retention,
            labelled,
        })))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requested(pairs: &[(&str, &str)]) -> TetherRequest {
        match TetherRequest::from_annotations(&map(pairs)) {
            Ok(AnnotationVerdict::Requested(r)) => *r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error(pairs: &[(&str, &str)]) -> AnnotationError {
        match TetherRequest::from_annotations(&map(pairs)) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const BASE: [(&str, &str); 3] = [
        (INJECT, "true"),
        (REMOTE, "s3://bucket/users/alice"),
        (MOUNT_PATH, "/home/jovyan/"),
    ];

    #[test]
    fn minimal_request_is_accepted_and_normalised() {
        let r = requested(&BASE);
        assert_eq!(r.remote.as_str(), "s3://bucket/users/alice");
        assert_eq!(r.mount_path, "/home/jovyan");
        assert_eq!(r.remote_kind, RemoteKind::S3);
        assert!(r.containers.is_empty());
    }

    #[test]
    fn opt_out_and_already_injected_are_recognised() {
        assert_eq!(
            TetherRequest::from_annotations(&map(&[])),
            Ok(AnnotationVerdict::NotRequested)
        );
        assert_eq!(
            TetherRequest::from_annotations(&map(&[(INJECT, "false"), ("tether.dev/typo", "x")])),
            Ok(AnnotationVerdict::NotRequested)
        );
        let mut injected = BASE.to_vec();
        injected.push((STATUS, STATUS_INJECTED));
        assert_eq!(
            TetherRequest::from_annotations(&map(&injected)),
            Ok(AnnotationVerdict::AlreadyInjected)
        );
    }

    #[test]
    fn the_label_opts_in_and_must_agree_with_the_annotation() {
        let labels = map(&[(INJECT_LABEL, "true")]);
        let settings = map(&[(REMOTE, "s3://b/p"), (MOUNT_PATH, "/work")]);
        match TetherRequest::from_metadata(&labels, &settings) {
            Ok(AnnotationVerdict::Requested(r)) => assert!(r.labelled),
            other => panic!("label alone must opt in: {other:?}"),
        }
        match TetherRequest::from_metadata(&BTreeMap::new(), &map(&BASE)) {
            Ok(AnnotationVerdict::Requested(r)) => assert!(!r.labelled),
            other => panic!("annotation alone must opt in: {other:?}"),
        }
        assert_eq!(
            TetherRequest::from_metadata(&map(&[(INJECT_LABEL, "false")]), &settings),
            Ok(AnnotationVerdict::NotRequested)
        );
        let mut disagree = settings.clone();
        disagree.insert(INJECT.into(), "false".into());
        let err = TetherRequest::from_metadata(&labels, &disagree).unwrap_err();
        assert_eq!(err.key, INJECT);
        assert!(TetherRequest::from_metadata(&map(&[(INJECT_LABEL, "yes")]), &settings).is_err());
    }

    #[test]
    fn init_position_and_injector_keys() {
        assert_eq!(requested(&BASE).init_position, InitPosition::Last);
        let mut first = BASE.to_vec();
        first.push((INIT_POSITION, "first"));
        assert_eq!(requested(&first).init_position, InitPosition::First);
        let mut bad = BASE.to_vec();
        bad.push((INIT_POSITION, "middle"));
        assert_eq!(error(&bad).key, INIT_POSITION);
        let mut forged = BASE.to_vec();
        forged.push((CHANGES, "{}"));
        assert_eq!(error(&forged).key, CHANGES);
    }

    #[test]
    fn layout_is_folded_into_the_url() {
        let mut pairs = BASE.to_vec();
        pairs.push((LAYOUT, "snapshots"));
        assert_eq!(
            requested(&pairs).remote.as_str(),
            "s3://bucket/users/alice?layout=snapshots"
        );
    }

    #[test]
    fn the_encryption_key_names_a_secret_key() {
        assert_eq!(requested(&BASE).encryption_key, None);
        let mut pairs = BASE.to_vec();
        pairs.push((ENCRYPTION_KEY_SECRET, "alice-tether.key/tether-key_1.txt"));
        assert_eq!(
            requested(&pairs).encryption_key,
            Some(SecretKeyRef {
                secret: "alice-tether.key".into(),
                key: "tether-key_1.txt".into(),
            })
        );
        pairs.push((LAYOUT, "snapshots"));
        assert!(requested(&pairs).encryption_key.is_some());
        let e = error(&[
            (INJECT, "true"),
            (REMOTE, "s3://b/p?layout=mirror"),
            (MOUNT_PATH, "/d"),
            (ENCRYPTION_KEY_SECRET, "s/k"),
        ]);
        assert!(e.reason.contains("mirror layout"), "{e}");
    }

    #[test]
    fn every_error_names_its_annotation() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(INJECT, "yes")], INJECT),
            (vec![(INJECT, "true"), (MOUNT_PATH, "/x")], REMOTE),
            (vec![(INJECT, "true"), (REMOTE, "s3://b/p")], MOUNT_PATH),
            (vec![(IMAGE, "Not A Ref")], IMAGE),
            (vec![(IMAGE, "ghcr.io/x:$(reboot)")], IMAGE),
            (vec![(REMOTE, "https://u:p@h/r")], REMOTE),
            (vec![(REMOTE, "s3://b/p\nx")], REMOTE),
            (vec![(MOUNT_PATH, "/home/a;rm -rf")], MOUNT_PATH),
            (vec![(MOUNT_PATH, "/home/a\n")], MOUNT_PATH),
            (vec![(LAYOUT, "flat")], LAYOUT),
            (vec![(REMOTE, "git://h/r"), (LAYOUT, "mirror")], LAYOUT),
            (vec![(CREDENTIALS_SECRET, "Bad_Name")], CREDENTIALS_SECRET),
            (vec![(IGNORE_FILE, "../../etc/shadow")], IGNORE_FILE),
            (
                vec![(ENCRYPTION_KEY_SECRET, "no-slash")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(ENCRYPTION_KEY_SECRET, "Bad_Secret/key")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(ENCRYPTION_KEY_SECRET, "secret/")],
                ENCRYPTION_KEY_SECRET,
            ),
            (vec![(ENCRYPTION_KEY_SECRET, "/key")], ENCRYPTION_KEY_SECRET),
            (
                vec![(ENCRYPTION_KEY_SECRET, "secret/a/b")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(ENCRYPTION_KEY_SECRET, "secret/..")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(ENCRYPTION_KEY_SECRET, "secret/key\n")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(REMOTE, "git://h/r"), (ENCRYPTION_KEY_SECRET, "s/k")],
                ENCRYPTION_KEY_SECRET,
            ),
            (
                vec![(LAYOUT, "mirror"), (ENCRYPTION_KEY_SECRET, "s/k")],
                ENCRYPTION_KEY_SECRET,
            ),
            (vec![(ALLOW_MASS_DELETE, "yes")], ALLOW_MASS_DELETE),
            (vec![(HISTORY_UI, "on")], HISTORY_UI),
            (vec![(RETENTION, "daily=0")], RETENTION),
            (vec![(RETENTION, "forever")], RETENTION),
            (vec![(RETENTION, "")], RETENTION),
            (vec![(RETENTION, "daily=7,daily=8")], RETENTION),
            (
                vec![(REMOTE, "git://h/r"), (RETENTION, "daily=7")],
                RETENTION,
            ),
            (vec![(LAYOUT, "mirror"), (RETENTION, "daily=7")], RETENTION),
            (vec![(CPU_LIMIT, "lots")], CPU_LIMIT),
            (vec![(MEMORY_REQUEST, "-1Gi")], MEMORY_REQUEST),
            (vec![(SIDECAR_MODE, "sometimes")], SIDECAR_MODE),
            (vec![(GRACE_SECONDS, "0")], GRACE_SECONDS),
            (vec![(GRACE_SECONDS, "9999")], GRACE_SECONDS),
            (vec![(HTTP_PORT, "80")], HTTP_PORT),
            (vec![(CONTAINERS, "app,")], CONTAINERS),
            (
                vec![("tether.dev/remote-url", "s3://b/p")],
                "tether.dev/remote-url",
            ),
        ];
        for (overrides, key) in cases {
            let mut pairs: BTreeMap<String, String> = map(&BASE);
            for (k, v) in overrides.iter() {
                pairs.insert((*k).to_owned(), (*v).to_owned());
            }
            // Drop a base key when the case wants it missing.
            if key == REMOTE && !overrides.iter().any(|(k, _)| *k == REMOTE) {
                pairs.remove(REMOTE);
            }
            if key == MOUNT_PATH && !overrides.iter().any(|(k, _)| *k == MOUNT_PATH) {
                pairs.remove(MOUNT_PATH);
            }
            let err = match TetherRequest::from_annotations(&pairs) {
                Err(e) => e,
                other => panic!("{overrides:?}: expected an error, got {other:?}"),
            };
            assert_eq!(err.key, key, "{overrides:?}: {err}");
            assert!(
                err.to_string().starts_with(&format!("annotation {key}: ")),
                "{err}"
            );
            assert!(!err.to_string().contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn retention_is_off_or_a_policy_read_by_the_one_parser() {
        assert_eq!(requested(&BASE).retention, None);
        let mut pairs = BASE.to_vec();
        pairs.push((RETENTION, "within=24h, hourly=48,daily=14,weekly=8"));
        let r = requested(&pairs).retention.unwrap();
        assert_eq!(r.to_string(), "within=1d,hourly=48,daily=14,weekly=8");
        let mut off = BASE.to_vec();
        off.push((RETENTION, "off"));
        assert_eq!(requested(&off).retention, Some(Retention::Off));
        // "off" is accepted on any remote.
        let git = requested(&[
            (INJECT, "true"),
            (REMOTE, "git://h/r.git"),
            (MOUNT_PATH, "/d"),
            (RETENTION, "off"),
        ]);
        assert_eq!(git.retention, Some(Retention::Off));
        let e = error(&[
            (INJECT, "true"),
            (REMOTE, "s3://b/p"),
            (MOUNT_PATH, "/d"),
            (RETENTION, "daily=0"),
        ]);
        assert!(e.reason.contains("daily=0 keeps nothing"), "{e}");
        assert_eq!(
            Retention::DEFAULT.to_string(),
            sync_core::retention::DEFAULT_SIDECAR_POLICY_SPEC
        );
    }

    #[test]
    fn secrets_in_urls_are_not_echoed() {
        let e = error(&[
            (INJECT, "true"),
            (REMOTE, "https://x:s3cr3t@h/r"),
            (MOUNT_PATH, "/d"),
        ]);
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
