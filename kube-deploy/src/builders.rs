//! Typed builders (k8s-openapi) for everything tether adds to a pod.
//!
//! A [`PodPlan`] is the fully resolved description of one injection: image,
//! remote, the volume that holds the synced directory, unique names for the
//! containers and volumes, resources, sidecar mode, flush deadline and port.
//! The functions here turn a plan into Kubernetes objects; they make no
//! decisions of their own beyond fixed, documented defaults, so the same plan
//! always yields the same containers (the injector and the manifest generator
//! share them).
//!
//! The containers are built to pass the `restricted` Pod Security Standard
//! and to run under OpenShift's arbitrary UIDs: no fixed UID, read-only root
//! filesystem, and writable emptyDirs for tether's state directory, `HOME`
//! and `/tmp`.
//!
//! # Probes: a remote outage never makes the user's pod NotReady
//!
//! A native sidecar's readiness counts towards the pod's `Ready`
//! condition, so a readiness probe on push health would take a notebook
//! off its Service whenever S3 is down. The sync sidecar therefore has no
//! readiness probe. It has a startup probe and a liveness probe, both on
//! `/healthz`, which answers while the process runs whatever the remote
//! does: the startup probe makes Kubernetes start the app only once the
//! sidecar is up (the next container of a pod waits for a native sidecar's
//! startup probe), the liveness probe restarts a process that stopped
//! answering. Neither uses `/readyz`, which waits for the first push and
//! fails while pushes fail. Push health is for alerting, from `/metrics`.
//!
//! # Credentials under any UID
//!
//! The Secret's files are mode 0440 ([`CREDENTIALS_MODE`]): with an
//! `fsGroup` the kubelet makes them `root:<fsGroup>`, which the containers
//! run with as a supplementary group; without one they are `root:root`,
//! readable by a process whose group is 0 — what OpenShift gives its
//! arbitrary UIDs, and what the tether image's user has. Never
//! world-readable. The encryption key (`tether.dev/encryption-key-secret`)
//! is mounted the same way, alone (only that Secret key, as the file
//! [`ENCRYPTION_KEY_FILE`]), read-only, and named by
//! `TETHER_ENCRYPTION_KEY_FILE`: its value never appears in the pod spec
//! or the environment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::{ResourceOverrides, SecretKeyRef, SidecarMode};
use crate::validate::RemoteKind;

/// Where the state emptyDir is mounted; exported as `TETHER_STATE_DIR`.
/// It lives outside the synced directory and is shared by the restore init
/// container and the sync sidecar, so the sidecar starts from the index the
/// restore wrote.
pub const STATE_DIR: &str = "/var/lib/tether/state";
/// Where the `HOME` emptyDir is mounted (ssh and git write below `$HOME`).
pub const HOME_DIR: &str = "/home/tether";
/// Where the scratch emptyDir is mounted; exported as `TMPDIR`.
pub const TMP_DIR: &str = "/tmp";
/// Where the credentials Secret is mounted (files mode 0440).
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/tether";
/// Where the encryption key's Secret key is mounted (one file, mode
/// [`CREDENTIALS_MODE`]).
pub const ENCRYPTION_KEY_DIR: &str = "/var/run/secrets/tether-encryption";
/// The encryption key file; exported as `TETHER_ENCRYPTION_KEY_FILE`.
pub const ENCRYPTION_KEY_FILE: &str = "/var/run/secrets/tether-encryption/key";
/// File mode of the credentials Secret's files: owner and group read, so
/// the pod's `fsGroup` or, without one, group 0 (OpenShift's arbitrary
/// UIDs) can read them; never world-readable.
pub const CREDENTIALS_MODE: i32 = 0o440;
/// Seconds added to the flush deadline for the pod's grace period: the app
/// containers stop first, then the sidecar gets SIGTERM and flushes.
pub const GRACE_MARGIN_SECONDS: u32 = 10;
/// The directories tether's own containers need; the synced directory may
/// not overlap them.
pub const RESERVED_DIRS: &[&str] = &[
    STATE_DIR,
    HOME_DIR,
    TMP_DIR,
    CREDENTIALS_DIR,
    ENCRYPTION_KEY_DIR,
];

/// Default CPU request of each tether container.
pub const DEFAULT_CPU_REQUEST: &str = "10m";
/// Default memory request of each tether container.
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
/// Default memory limit of each tether container (no CPU limit by default:
/// CPU limits throttle bursts of hashing without protecting anyone).
pub const DEFAULT_MEMORY_LIMIT: &str = "512Mi";

/// The volume (and sub-path) that holds the synced directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirMount {
    /// Volume name in the pod.
    pub volume: String,
    /// `subPath` to mount, when the directory is a sub-directory of the volume.
    pub sub_path: Option<String>,
}

/// Names of everything tether adds; chosen by the injector so that they do
/// not collide with the pod's own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedNames {
    /// The restore init container.
    pub restore_container: String,
    /// The sync sidecar.
    pub sync_container: String,
    /// The emptyDir for tether's state directory.
    pub state_volume: String,
    /// The emptyDir for `HOME`.
    pub home_volume: String,
    /// The emptyDir for `/tmp`.
    pub tmp_volume: String,
    /// The Secret volume for credentials.
    pub credentials_volume: String,
    /// The Secret volume for the encryption key.
    pub encryption_key_volume: String,
}

/// A fully resolved injection: everything the builders need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// tether image reference.
    pub image: String,
    /// Remote URL (no credentials).
    pub remote: String,
    /// Kind of remote, which decides the credential wiring.
    pub remote_kind: RemoteKind,
    /// Synced directory, the same path in the app and the tether containers.
    pub sync_dir: String,
    /// The volume holding the synced directory.
    pub workdir: WorkdirMount,
    /// Names of added containers and volumes.
    pub names: AddedNames,
    /// Secret with backend credentials.
    pub credentials_secret: Option<String>,
    /// The Secret key holding the repository's encryption key.
    pub encryption_key: Option<SecretKeyRef>,
    /// Ignore file relative to the synced directory.
    pub ignore_file: Option<String>,
    /// Resources of each tether container.
    pub resources: ResourceOverrides,
    /// Native sidecar or regular container.
    pub mode: SidecarMode,
    /// Flush deadline after SIGTERM, seconds.
    pub grace_seconds: u32,
    /// Port of the sidecar's HTTP endpoints.
    pub http_port: u16,
    /// The sidecar pushes mass deletes (`TETHER_ALLOW_MASS_DELETE`).
    pub allow_mass_delete: bool,
    /// Loopback port of the history page (`TETHER_UI_BIND`); `None`: off.
    pub history_ui_port: Option<u16>,
    /// The sidecar's retention (`TETHER_RETENTION`); `None` for remotes
    /// it does not apply to (git, the mirror layout): nothing is set.
    pub retention: Option<crate::annotations::Retention>,
}

/// The container security context shared by both tether containers. It
/// satisfies the `restricted` Pod Security Standard and sets no UID, so
/// OpenShift's restricted SCC can assign one (and plain Kubernetes uses the
/// pod's or the image's non-root user).
pub fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The path of the sidecar's process-alive endpoint, the only one its
/// probes use.
pub const HEALTH_PATH: &str = "/healthz";

fn healthz_probe(port: u16, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(HEALTH_PATH.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Startup probe on `/healthz`: up to 2 minutes for the process to serve.
/// For a native sidecar, Kubernetes starts the app after it succeeds.
pub fn startup_probe(port: u16) -> Probe {
    healthz_probe(port, 2, 60)
}

/// Liveness probe on `/healthz`: restarts the sidecar only when the process
/// has not answered for a minute (stuck), never because the remote is down.
pub fn liveness_probe(port: u16) -> Probe {
    healthz_probe(port, 10, 6)
}

/// Resource requirements from the overrides, falling back to the defaults
/// ([`DEFAULT_CPU_REQUEST`], [`DEFAULT_MEMORY_REQUEST`],
/// [`DEFAULT_MEMORY_LIMIT`], no CPU limit).
pub fn resource_requirements(overrides: &ResourceOverrides) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let q = |v: &Option<String>, default: Option<&str>| {
        v.clone().or(default.map(str::to_owned)).map(Quantity)
    };
    if let Some(v) = q(&overrides.cpu_request, Some(DEFAULT_CPU_REQUEST)) {
        requests.insert("cpu".to_owned(), v);
    }
    if let Some(v) = q(&overrides.memory_request, Some(DEFAULT_MEMORY_REQUEST)) {
        requests.insert("memory".to_owned(), v);
    }
    if let Some(v) = q(&overrides.cpu_limit, None) {
        limits.insert("cpu".to_owned(), v);
    }
    if let Some(v) = q(&overrides.memory_limit, Some(DEFAULT_MEMORY_LIMIT)) {
        limits.insert("memory".to_owned(), v);
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// The pod's grace period needed for a flush deadline: the deadline plus
/// [`GRACE_MARGIN_SECONDS`].
pub fn required_grace_period(grace_seconds: u32) -> i64 {
    i64::from(grace_seconds) + i64::from(GRACE_MARGIN_SECONDS)
}

/// The `--grace` argument for a flush deadline.
pub fn grace_argument(grace_seconds: u32) -> String {
    format!("{grace_seconds}s")
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Environment that points tether at its credentials, by kind of remote.
///
/// Keys expected in the Secret (all optional, missing ones are skipped):
/// - `s3://`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
///   `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` → same-named env;
/// - `az://`: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
///   `AZURE_STORAGE_SAS_TOKEN` → same-named env;
/// - `gs://`: file `service-account.json` → `GOOGLE_APPLICATION_CREDENTIALS`;
/// - `ssh://`: file `ssh-privatekey` (the `kubernetes.io/ssh-auth` key) →
///   `TETHER_SSH_KEY_FILE`;
/// - `https://`: file `token` → `TETHER_TOKEN_FILE`.
///
/// Secret values reach the process only through `secretKeyRef` or files;
/// they never appear in the pod spec.
pub fn credential_env(kind: RemoteKind, secret: &str) -> Vec<EnvVar> {
    let file = |name: &str| format!("{CREDENTIALS_DIR}/{name}");
    match kind {
        RemoteKind::S3 => [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_ENDPOINT_URL",
        ]
        .iter()
        .map(|key| env_from_secret(key, secret, key))
        .collect(),
        RemoteKind::Azure => [
            "AZURE_STORAGE_ACCOUNT_NAME",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
        ]
        .iter()
        .map(|key| env_from_secret(key, secret, key))
        .collect(),
        RemoteKind::Gcs => vec![env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &file("service-account.json"),
        )],
        RemoteKind::GitSsh => vec![env("TETHER_SSH_KEY_FILE", &file("ssh-privatekey"))],
        RemoteKind::GitHttps => vec![env("TETHER_TOKEN_FILE", &file("token"))],
        RemoteKind::File | RemoteKind::GitDaemon | RemoteKind::GitFile => Vec::new(),
    }
}

fn common_env(plan: &PodPlan) -> Vec<EnvVar> {
    let mut vars = vec![
        env("TETHER_STATE_DIR", STATE_DIR),
        env("HOME", HOME_DIR),
        env("TMPDIR", TMP_DIR),
        // One glibc malloc arena per thread keeps freed memory in up to 16
        // pools: two bound a 100,000-file push and restore under 128 MiB
        // (BENCHMARKS.md, "Memory at scale").
        env("MALLOC_ARENA_MAX", "2"),
    ];
    if let Some(ignore) = &plan.ignore_file {
        vars.push(env(
            "TETHER_IGNORE_FILE",
            &format!("{}/{ignore}", plan.sync_dir),
        ));
    }
    if plan.allow_mass_delete {
        vars.push(env("TETHER_ALLOW_MASS_DELETE", "true"));
    }
    if let Some(port) = plan.history_ui_port {
        // Loopback only: jupyter-server-proxy in the same pod reaches it
        // behind JupyterHub's login; no containerPort is declared.
        vars.push(env("TETHER_UI_BIND", &format!("127.0.0.1:{port}")));
    }
    if let Some(secret) = &plan.credentials_secret {
        vars.extend(credential_env(plan.remote_kind, secret));
    }
    if plan.encryption_key.is_some() {
        vars.push(env("TETHER_ENCRYPTION_KEY_FILE", ENCRYPTION_KEY_FILE));
    }
    vars
}

/// The mount of the synced directory's volume, as the app containers and
/// the tether containers both see it.
pub fn workdir_volume_mount(plan: &PodPlan) -> VolumeMount {
    VolumeMount {
        name: plan.workdir.volume.clone(),
        mount_path: plan.sync_dir.clone(),
        sub_path: plan.workdir.sub_path.clone(),
        ..VolumeMount::default()
    }
}

fn common_mounts(plan: &PodPlan) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        workdir_volume_mount(plan),
        mount(&plan.names.state_volume, STATE_DIR),
        mount(&plan.names.home_volume, HOME_DIR),
        mount(&plan.names.tmp_volume, TMP_DIR),
    ];
    if plan.credentials_secret.is_some() {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(&plan.names.credentials_volume, CREDENTIALS_DIR)
        });
    }
    if plan.encryption_key.is_some() {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(&plan.names.encryption_key_volume, ENCRYPTION_KEY_DIR)
        });
    }
    mounts
}

fn base_container(plan: &PodPlan, name: &str, args: Vec<String>) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["tether".to_owned()]),
        args: Some(args),
        env: Some(common_env(plan)),
        volume_mounts: Some(common_mounts(plan)),
        resources: Some(resource_requirements(&plan.resources)),
        security_context: Some(security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The init container that runs `tether restore DIR --from URL` and exits 0
/// only when the directory holds the complete state.
pub fn restore_container(plan: &PodPlan) -> Container {
    base_container(
        plan,
        &plan.names.restore_container,
        vec![
            "restore".into(),
            plan.sync_dir.clone(),
            "--from".into(),
            plan.remote.clone(),
        ],
    )
}

/// The sidecar that runs `tether sync DIR --to URL --grace Ns --http-bind
/// 0.0.0.0:PORT`. In [`SidecarMode::Native`] it carries
/// `restartPolicy: Always` and belongs in `initContainers`; in
/// [`SidecarMode::Container`] it is a regular container.
pub fn sync_container(plan: &PodPlan) -> Container {
    let mut container = base_container(
        plan,
        &plan.names.sync_container,
        vec![
            "sync".into(),
            plan.sync_dir.clone(),
            "--to".into(),
            plan.remote.clone(),
            "--grace".into(),
            grace_argument(plan.grace_seconds),
            "--http-bind".into(),
            format!("0.0.0.0:{}", plan.http_port),
        ],
    );
    container.ports = Some(vec![ContainerPort {
        name: Some("tether-http".to_owned()),
        container_port: i32::from(plan.http_port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }]);
    if let Some(retention) = plan.retention {
        container
            .env
            .get_or_insert_with(Vec::new)
            .push(env("TETHER_RETENTION", &retention.to_string()));
    }
    // No readiness probe: see the module docs.
    container.startup_probe = Some(startup_probe(plan.http_port));
    container.liveness_probe = Some(liveness_probe(plan.http_port));
    if plan.mode == SidecarMode::Native {
        container.restart_policy = Some("Always".to_owned());
    }
    container
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// An emptyDir for the synced directory, used when no app container mounts
/// a volume at (or above) the mount path.
pub fn workdir_empty_dir(name: &str) -> Volume {
    empty_dir(name)
}

/// The volumes every injection adds: state, `HOME`, `/tmp`, the
/// credentials Secret (mode 0440) when one is named, and the encryption
/// key's Secret key (that key only, as `key`, mode 0440) when one is named.
pub fn support_volumes(plan: &PodPlan) -> Vec<Volume> {
    let mut volumes = vec![
        empty_dir(&plan.names.state_volume),
        empty_dir(&plan.names.home_volume),
        empty_dir(&plan.names.tmp_volume),
    ];
    if let Some(secret) = &plan.credentials_secret {
        volumes.push(Volume {
            name: plan.names.credentials_volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(CREDENTIALS_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(r) = &plan.encryption_key {
        volumes.push(Volume {
            name: plan.names.encryption_key_volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.secret.clone()),
                default_mode: Some(CREDENTIALS_MODE),
                items: Some(vec![KeyToPath {
                    key: r.key.clone(),
                    path: "key".to_owned(),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    volumes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn plan() -> PodPlan {
        PodPlan {
            image: "ghcr.io/tether/tether:0.1.0".into(),
            remote: "s3://bucket/alice".into(),
            remote_kind: RemoteKind::S3,
            sync_dir: "/home/jovyan".into(),
            workdir: WorkdirMount {
                volume: "home".into(),
                sub_path: None,
            },
            names: AddedNames {
                restore_container: "tether-restore".into(),
                sync_container: "tether-sync".into(),
                state_volume: "tether-state".into(),
                home_volume: "tether-home".into(),
                tmp_volume: "tether-tmp".into(),
                credentials_volume: "tether-credentials".into(),
                encryption_key_volume: "tether-encryption-key".into(),
            },
            credentials_secret: Some("alice-s3".into()),
            encryption_key: None,
            ignore_file: Some(".tetherignore".into()),
            resources: ResourceOverrides::default(),
            mode: SidecarMode::Native,
            grace_seconds: 20,
            http_port: 9477,
            allow_mass_delete: false,
            history_ui_port: None,
            retention: Some(crate::annotations::Retention::DEFAULT),
        }
    }

    #[test]
    fn security_context_meets_restricted_without_a_uid() {
        let sc = security_context();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, None);
        assert_eq!(sc.run_as_group, None);
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_owned())
        );
    }

    #[test]
    fn sync_container_uses_the_cli_surface() {
        let c = sync_container(&plan());
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "sync",
                    "/home/jovyan",
                    "--to",
                    "s3://bucket/alice",
                    "--grace",
                    "20s",
                    "--http-bind",
                    "0.0.0.0:9477"
                ]
                .map(String::from)[..]
            )
        );
        assert_eq!(
            c.readiness_probe, None,
            "push health must not gate readiness"
        );
        for probe in [c.startup_probe.clone(), c.liveness_probe.clone()] {
            let get = probe.and_then(|p| p.http_get);
            assert_eq!(
                get.as_ref().and_then(|g| g.path.as_deref()),
                Some("/healthz")
            );
            assert_eq!(get.map(|g| g.port), Some(IntOrString::Int(9477)));
        }
        let env = c.env.unwrap_or_default();
        let state = env.iter().find(|e| e.name == "TETHER_STATE_DIR");
        assert_eq!(state.and_then(|e| e.value.as_deref()), Some(STATE_DIR));
        let ignore = env.iter().find(|e| e.name == "TETHER_IGNORE_FILE");
        assert_eq!(
            ignore.and_then(|e| e.value.as_deref()),
            Some("/home/jovyan/.tetherignore")
        );
        let key = env
            .iter()
            .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
            .and_then(|e| e.value_from.clone());
        assert_eq!(
            key.and_then(|v| v.secret_key_ref).map(|r| r.name),
            Some("alice-s3".to_owned())
        );

        assert!(!env.iter().any(|e| e.name == "TETHER_ALLOW_MASS_DELETE"));
        let mut p = plan();
        p.allow_mass_delete = true;
        let env = sync_container(&p).env.unwrap_or_default();
        let allow = env.iter().find(|e| e.name == "TETHER_ALLOW_MASS_DELETE");
        assert_eq!(allow.and_then(|e| e.value.as_deref()), Some("true"));

        assert!(!env.iter().any(|e| e.name == "TETHER_UI_BIND"));
        let mut p = plan();
        p.history_ui_port = Some(9478);
        let env = sync_container(&p).env.unwrap_or_default();
        let ui = env.iter().find(|e| e.name == "TETHER_UI_BIND");
        assert_eq!(ui.and_then(|e| e.value.as_deref()), Some("127.0.0.1:9478"));

        // Retention: the sidecar alone gets it; none for git or mirror.
        let retention = |c: Container| {
            c.env
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == "TETHER_RETENTION")
                .and_then(|e| e.value)
        };
        assert_eq!(
            retention(sync_container(&plan())).as_deref(),
            Some("within=1h,hourly=48,daily=14,weekly=8")
        );
        assert_eq!(retention(restore_container(&plan())), None);
        let mut p = plan();
        p.retention = Some(crate::annotations::Retention::Off);
        assert_eq!(retention(sync_container(&p)).as_deref(), Some("off"));
        p.retention = None;
        assert_eq!(retention(sync_container(&p)), None);

        let mut p = plan();
        p.mode = SidecarMode::Container;
        assert_eq!(sync_container(&p).restart_policy, None);
    }

    #[test]
    fn the_encryption_key_is_one_read_only_file_in_both_containers() {
        let none = plan();
        for c in [restore_container(&none), sync_container(&none)] {
            assert!(
                !c.env
                    .unwrap_or_default()
                    .iter()
                    .any(|e| e.name == "TETHER_ENCRYPTION_KEY_FILE")
            );
        }
        assert_eq!(support_volumes(&none).len(), 4);
        let mut p = plan();
        p.encryption_key = Some(SecretKeyRef {
            secret: "alice-tether".into(),
            key: "tether.key".into(),
        });
        for c in [restore_container(&p), sync_container(&p)] {
            let env = c.env.unwrap_or_default();
            let var = env
                .iter()
                .find(|e| e.name == "TETHER_ENCRYPTION_KEY_FILE")
                .unwrap();
            assert_eq!(var.value.as_deref(), Some(ENCRYPTION_KEY_FILE));
            assert!(var.value_from.is_none());
            let mounts = c.volume_mounts.unwrap_or_default();
            let m = mounts
                .iter()
                .find(|m| m.mount_path == ENCRYPTION_KEY_DIR)
                .unwrap();
            assert_eq!(m.name, "tether-encryption-key");
            assert_eq!(m.read_only, Some(true));
        }
        let volumes = support_volumes(&p);
        let secret = volumes
            .iter()
            .find(|v| v.name == "tether-encryption-key")
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("alice-tether"));
        assert_eq!(secret.default_mode, Some(0o440));
        let items = secret.items.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("tether.key", "key")
        );
        assert_eq!(
            format!("{ENCRYPTION_KEY_DIR}/{}", items[0].path),
            ENCRYPTION_KEY_FILE
        );
    }

    #[test]
    fn restore_container_is_a_plain_init_container() {
        let c = restore_container(&plan());
        assert_eq!(c.restart_policy, None);
        assert_eq!(c.readiness_probe, None);
        assert_eq!(
            c.args,
            Some(
                ["restore", "/home/jovyan", "--from", "s3://bucket/alice"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let mounts = c.volume_mounts.unwrap_or_default();
        let paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/home/jovyan",
                STATE_DIR,
                HOME_DIR,
                TMP_DIR,
                CREDENTIALS_DIR
            ]
        );
    }

    #[test]
    fn credentials_secret_is_mounted_read_only_with_mode_0440() {
        let volumes = support_volumes(&plan());
        let secret = volumes.iter().find_map(|v| v.secret.clone());
        assert_eq!(secret.and_then(|s| s.default_mode), Some(0o440));
        let mut p = plan();
        p.credentials_secret = None;
        assert!(support_volumes(&p).iter().all(|v| v.secret.is_none()));
        assert!(
            restore_container(&p)
                .env
                .unwrap_or_default()
                .iter()
                .all(|e| e.value_from.is_none())
        );
    }

    #[test]
    fn resources_apply_overrides_over_defaults() {
        let r = resource_requirements(&ResourceOverrides {
            cpu_limit: Some("500m".into()),
            memory_request: Some("128Mi".into()),
            ..ResourceOverrides::default()
        });
        let requests = r.requests.unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        assert_eq!(
            requests.get("cpu"),
            Some(&Quantity(DEFAULT_CPU_REQUEST.into()))
        );
        assert_eq!(requests.get("memory"), Some(&Quantity("128Mi".into())));
        assert_eq!(limits.get("cpu"), Some(&Quantity("500m".into())));
        assert_eq!(
            limits.get("memory"),
            Some(&Quantity(DEFAULT_MEMORY_LIMIT.into()))
        );
    }

    #[test]
    fn credential_env_by_remote_kind() {
        let names = |kind| {
            credential_env(kind, "s")
                .into_iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
        };
        assert!(names(RemoteKind::S3).contains(&"AWS_ACCESS_KEY_ID".to_owned()));
        assert_eq!(names(RemoteKind::GitSsh), ["TETHER_SSH_KEY_FILE"]);
        assert_eq!(names(RemoteKind::GitHttps), ["TETHER_TOKEN_FILE"]);
        assert_eq!(names(RemoteKind::Gcs), ["GOOGLE_APPLICATION_CREDENTIALS"]);
        assert!(names(RemoteKind::GitDaemon).is_empty());
    }

    #[test]
    fn grace_period_leaves_room_after_the_flush_deadline() {
        assert_eq!(required_grace_period(20), 30);
        assert_eq!(grace_argument(20), "20s");
    }
}
