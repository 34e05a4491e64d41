//! `tether manifests app`: a folder of a tethered remote, at a pinned
//! snapshot (or following the newest), deployed as a web app — without a
//! ConfigMap, without nbconvert at run time and without giving notebooks
//! the Kubernetes API.
//!
//! [`app_objects`] turns an [`AppConfig`] into a Deployment, a Service and,
//! optionally, an Ingress and a NetworkPolicy (in that order);
//! [`app_manifests`] writes them as one YAML stream. Generation is pure and
//! offline: the caller (the `tether` command) resolves the newest snapshot
//! id and checks that the entry exists in the remote before calling it.
//!
//! # What the pod does
//!
//! ```text
//! pinned (default):  init tether-restore   tether restore /srv/app/current --from URL --at ID --existing overwrite [--path P]
//!                    init tether-convert   tether convert /srv/app/current/P/app.ipynb --output …/P/app.py   (notebooks only)
//! --follow:          sidecar tether-follow tether follow /srv/app --from URL [--path P] [--convert P/app.ipynb]
//!                                          (native sidecar; its startup probe is /readyz, so the app
//!                                           starts only after the first sync)
//! both:              init pip-install      python -m pip install --target /srv/pip -r …/requirements.txt  (--requirements)
//!                    container app         COMMAND SCRIPT in /srv/app/current/P, readiness on the app port
//! ```
//!
//! * **Files from the remote, any size.** `/srv/app` is an emptyDir;
//!   `tether restore --path` writes only the app's folder into it, verified
//!   against the snapshot's hashes. The credentials come from a Secret
//!   (files mode 0440 and `secretKeyRef` env, as the injector wires them);
//!   give the app a Secret with *read-only* credentials.
//! * **Notebook → script in Rust.** An `.ipynb` entry is converted by
//!   `tether convert` (the `notebook` crate: code cells in order, magics and
//!   shell escapes commented out, markdown as comments) into `STEM.py` next
//!   to it; the app command runs that script.
//! * **Requirements** are the app image's job by default; with
//!   [`AppConfig::requirements`] an init container runs pip *from the app
//!   image* into the emptyDir `/srv/pip`, which the app sees through
//!   `PYTHONPATH` (installed once per pod start; in follow mode a change of
//!   the requirements file needs a new rollout).
//! * **Following.** The sidecar restores every newer snapshot into a new
//!   directory and swaps the symlink `/srv/app/current` atomically (like
//!   git-sync's `--link`). The app container records the release it started
//!   in, and its liveness probe fails once `current` points elsewhere, so
//!   the kubelet restarts the app into the new release: no signals across
//!   containers, no shared process namespace, no UID coupling.
//! * **Restricted.** Every container passes the `restricted` Pod Security
//!   Standard with a read-only root filesystem; `HOME` and `/tmp` are
//!   emptyDirs, the app's code is mounted read-only into the app container,
//!   `automountServiceAccountToken: false` and `enableServiceLinks: false`.
//!   Python images usually run as root, which `runAsNonRoot` refuses, so the
//!   pod runs as [`AppConfig::run_as_user`] (default 1000, group 0; `None`
//!   where the platform assigns the UID, as OpenShift does): every
//!   container has the same UID, so the app reads what tether restored
//!   whatever modes the files had in the remote.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::annotations::{ResourceOverrides, SidecarMode};
use crate::builders::{self, AddedNames, PodPlan, WorkdirMount};
use crate::manifests::{ManifestError, to_yaml_stream, typed};
use crate::validate;

/// The emptyDir the app's files are restored into.
pub const APP_ROOT: &str = "/srv/app";
/// The name of the symlink (follow) or directory (pinned) below
/// [`APP_ROOT`] the app runs from.
pub const CURRENT: &str = "current";
/// Where `--requirements` are installed (`PYTHONPATH`).
pub const PIP_DIR: &str = "/srv/pip";
/// `HOME` of the app container.
pub const APP_HOME: &str = "/home/app";
/// Port of the follow sidecar's `/healthz`, `/readyz` and `/metrics`.
pub const FOLLOW_HTTP_PORT: u16 = 9478;
/// Annotation on the Deployment and its pods naming the pinned snapshot.
pub const SNAPSHOT_ANNOTATION: &str = "app.tether.dev/snapshot";
/// File in the app's `/tmp` naming the release the app started in
/// (follow mode).
const RELEASE_FILE: &str = "/tmp/.tether-release";

/// Which state of the remote the app runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// This snapshot or commit id, for a reproducible deploy.
    Pinned(String),
    /// The newest, polled every `interval_seconds` by a sidecar.
    Follow {
        /// Poll interval.
        interval_seconds: u32,
    },
}

/// An optional Ingress in front of the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// The host name.
    pub host: String,
    /// `ingressClassName` (default: the cluster's default class).
    pub class: Option<String>,
    /// TLS Secret for the host (no TLS when `None`).
    pub tls_secret: Option<String>,
}

/// Settings of `tether manifests app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// Name of the Deployment, Service, Ingress and NetworkPolicy.
    pub name: String,
    /// Namespace (none: the one `kubectl apply` or ArgoCD uses).
    pub namespace: Option<String>,
    /// The remote URL (no credentials in it).
    pub remote: String,
    /// Pinned snapshot or follow.
    pub source: AppSource,
    /// The app's folder inside the remote (`None`: the whole state).
    pub path: Option<String>,
    /// The entry point, relative to [`Self::path`]: `app.ipynb` or `app.py`.
    pub entry: String,
    /// The command the script is given to (`python`, `streamlit run`,
    /// `panel serve`); `{script}` in an argument is replaced by the script,
    /// otherwise the script is appended.
    pub command: Vec<String>,
    /// The port the app listens on (also in `PORT`).
    pub port: u16,
    /// HTTP path of the readiness probe.
    pub readiness_path: String,
    /// The app's image (Python and the framework).
    pub image: String,
    /// The tether image (restore, convert, follow).
    pub tether_image: String,
    /// Requirements file relative to [`Self::path`], installed by pip from
    /// the app image into `/srv/pip`; `None`: the image has everything.
    pub requirements: Option<String>,
    /// Secret with read-only credentials for the remote.
    pub credentials_secret: Option<String>,
    /// Resources of the app container (defaults: 100m / 256Mi requests,
    /// 1Gi memory limit).
    pub resources: ResourceOverrides,
    /// Replicas.
    pub replicas: i32,
    /// UID of every container of the pod (see the module docs).
    pub run_as_user: Option<i64>,
    /// Optional Ingress.
    pub ingress: Option<IngressConfig>,
    /// Add a NetworkPolicy that admits traffic to the app's port only (and,
    /// following, to the sidecar's metrics port).
    pub network_policy: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: None,
            remote: String::new(),
            source: AppSource::Follow {
                interval_seconds: 30,
            },
            path: None,
            entry: "app.ipynb".into(),
            command: vec!["python".into()],
            port: 8080,
            readiness_path: "/".into(),
            image: "docker.io/library/python:3.12-slim".into(),
            tether_image: crate::inject::DEFAULT_IMAGE.into(),
            requirements: None,
            credentials_secret: None,
            resources: ResourceOverrides::default(),
            replicas: 1,
            run_as_user: Some(1000),
            ingress: None,
            network_policy: false,
        }
    }
}

fn setting(flag: &'static str) -> impl Fn(String) -> ManifestError {
    move |reason| ManifestError::AppSetting { flag, reason }
}

/// Checks a path inside the app's folder or the remote: relative, no `..`.
fn inside(path: &str, what: &'static str) -> Result<(), ManifestError> {
    if path.split('/').any(|c| c == "..") {
        return Err(setting(what)(format!(
            "{path:?} leaves the app's folder ('..' is not allowed)"
        )));
    }
    validate::relative_path(path).map_err(setting(what))
}

impl AppConfig {
    /// Checks every setting; the messages name the flag's setting.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate::dns1123_label(&self.name).map_err(setting("--name"))?;
        if !self.name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(setting("--name")(
                "must start with a letter (it names a Service)".into(),
            ));
        }
        if let Some(ns) = &self.namespace {
            validate::dns1123_label(ns).map_err(setting("--namespace"))?;
        }
        validate::remote_url(&self.remote).map_err(setting("--remote"))?;
        match &self.source {
            AppSource::Pinned(id) => {
                if id.is_empty()
                    || id.len() > 128
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(setting("--at")(
                        "must be a snapshot or commit id (letters, digits, - _ .)".into(),
                    ));
                }
            }
            AppSource::Follow { interval_seconds } => {
                if *interval_seconds == 0 {
                    return Err(setting("--interval")("must be at least 1s".into()));
                }
            }
        }
        if let Some(path) = &self.path {
            inside(path, "--path")?;
        }
        inside(&self.entry, "--entry")?;
        if !(self.entry.ends_with(".ipynb") || self.entry.ends_with(".py")) {
            return Err(setting("--entry")(format!(
                "{:?} must be a notebook (.ipynb) or a Python script (.py)",
                self.entry
            )));
        }
        if let Some(r) = &self.requirements {
            inside(r, "--requirements")?;
        }
        if self.command.is_empty() || self.command.iter().any(|a| a.is_empty()) {
            return Err(setting("--command")(
                "must name a program (e.g. `python`, `streamlit run`)".into(),
            ));
        }
        if let Some(bad) = self
            .command
            .iter()
            .find(|a| a.chars().any(char::is_control))
        {
            return Err(setting("--command")(format!(
                "{bad:?} contains a control character"
            )));
        }
        if self.port < 1024 || self.port == FOLLOW_HTTP_PORT {
            return Err(setting("--port")(format!(
                "must be 1024 or above (the app runs unprivileged) and not {FOLLOW_HTTP_PORT} (the follow sidecar's)"
            )));
        }
        if !self.readiness_path.starts_with('/')
            || self
                .readiness_path
                .chars()
                .any(|c| c.is_control() || c == ' ')
        {
            return Err(setting("--readiness-path")(
                "must be an absolute HTTP path".into(),
            ));
        }
        validate::image_reference(&self.image).map_err(setting("--image"))?;
        validate::image_reference(&self.tether_image).map_err(setting("--tether-image"))?;
        if let Some(secret) = &self.credentials_secret {
            validate::dns1123_subdomain(secret).map_err(setting("--credentials-secret"))?;
        }
        for q in [
            &self.resources.cpu_request,
            &self.resources.memory_request,
            &self.resources.cpu_limit,
            &self.resources.memory_limit,
        ]
        .into_iter()
        .flatten()
        {
            validate::quantity(q).map_err(setting(
                "resources (--cpu-request, --memory-request, --cpu-limit, --memory-limit)",
            ))?;
        }
        if self.replicas < 0 {
            return Err(setting("--replicas")("must not be negative".into()));
        }
        if self.run_as_user == Some(0) {
            return Err(setting("--run-as-user")(
                "must not be 0 (the restricted profile refuses root)".into(),
            ));
        }
        if let Some(ingress) = &self.ingress {
            validate::dns1123_subdomain(&ingress.host).map_err(setting("--host"))?;
            if let Some(class) = &ingress.class {
                validate::dns1123_subdomain(class).map_err(setting("--ingress-class"))?;
            }
            if let Some(tls) = &ingress.tls_secret {
                validate::dns1123_subdomain(tls).map_err(setting("--tls-secret"))?;
            }
        }
        Ok(())
    }

    /// The app's folder inside [`APP_ROOT`]/[`CURRENT`].
    pub fn app_dir(&self) -> String {
        match &self.path {
            Some(p) => format!("{APP_ROOT}/{CURRENT}/{}", p.trim_end_matches('/')),
            None => format!("{APP_ROOT}/{CURRENT}"),
        }
    }

    /// The script the app command runs, relative to [`Self::app_dir`]: the
    /// entry, or for a notebook the converted `STEM.py` next to it.
    pub fn script(&self) -> String {
        script_for(&self.entry)
    }

    /// The entry relative to the remote's top (what `--convert` takes).
    pub fn entry_in_remote(&self) -> String {
        self.in_remote(&self.entry)
    }

    /// A path relative to [`Self::path`], relative to the remote's top.
    pub fn in_remote(&self, relative: &str) -> String {
        match &self.path {
            Some(p) => format!("{}/{relative}", p.trim_end_matches('/')),
            None => relative.to_owned(),
        }
    }

    /// The app's argv: [`Self::command`] with `{script}` replaced, or the
    /// script appended.
    pub fn app_argv(&self) -> Vec<String> {
        let script = self.script();
        if self.command.iter().any(|a| a.contains("{script}")) {
            self.command
                .iter()
                .map(|a| a.replace("{script}", &script))
                .collect()
        } else {
            let mut argv = self.command.clone();
            argv.push(script);
            argv
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), self.name.clone()),
            (
                "app.kubernetes.io/component".to_owned(),
                "notebook-app".to_owned(),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "tether".to_owned(),
            ),
        ])
    }

    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("app.kubernetes.io/name".to_owned(), self.name.clone())])
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: self.namespace.clone(),
            labels: Some(self.labels()),
            annotations: self.annotations(),
            ..ObjectMeta::default()
        }
    }

    fn annotations(&self) -> Option<BTreeMap<String, String>> {
        match &self.source {
            AppSource::Pinned(id) => Some(BTreeMap::from([(
                SNAPSHOT_ANNOTATION.to_owned(),
                id.clone(),
            )])),
            AppSource::Follow { .. } => None,
        }
    }
}

/// The script a notebook entry is converted to (`app.ipynb` → `app.py`);
/// a `.py` entry is its own script.
pub fn script_for(entry: &str) -> String {
    match entry.strip_suffix(".ipynb") {
        Some(stem) => format!("{stem}.py"),
        None => entry.to_owned(),
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The plan the shared builders turn into tether's containers.
fn plan(config: &AppConfig) -> Result<PodPlan, ManifestError> {
    let (_, remote_kind) = validate::remote_url(&config.remote).map_err(setting("--remote"))?;
    Ok(PodPlan {
        image: config.tether_image.clone(),
        remote: config.remote.clone(),
        remote_kind,
        sync_dir: APP_ROOT.to_owned(),
        workdir: WorkdirMount {
            volume: "app".into(),
            sub_path: None,
        },
        names: AddedNames {
            restore_container: "tether-restore".into(),
            sync_container: "tether-follow".into(),
            state_volume: "tether-state".into(),
            home_volume: "tether-home".into(),
            tmp_volume: "tether-tmp".into(),
            credentials_volume: "tether-credentials".into(),
            encryption_key_volume: "tether-encryption-key".into(),
        },
        credentials_secret: config.credentials_secret.clone(),
        // An app from an encrypted remote is not supported yet.
        encryption_key: None,
        ignore_file: None,
        resources: ResourceOverrides::default(),
        mode: SidecarMode::Native,
        grace_seconds: 0,
        http_port: FOLLOW_HTTP_PORT,
        allow_mass_delete: false,
        history_ui_port: None,
        retention: None,
    })
}

fn restore_args(config: &AppConfig, id: &str) -> Vec<String> {
    let mut args = vec![
        "restore".into(),
        format!("{APP_ROOT}/{CURRENT}"),
        "--from".into(),
        config.remote.clone(),
        "--at".into(),
        id.to_owned(),
        // A pod restarted on its node re-runs init containers on the
        // emptyDir they filled: the same id again, so overwriting is
        // idempotent where `fail` would crash-loop.
        "--existing".into(),
        "overwrite".into(),
    ];
    if let Some(p) = &config.path {
        args.push("--path".into());
        args.push(p.trim_end_matches('/').to_owned());
    }
    args
}

fn follow_args(config: &AppConfig, interval_seconds: u32) -> Vec<String> {
    let mut args = vec![
        "follow".into(),
        APP_ROOT.into(),
        "--from".into(),
        config.remote.clone(),
    ];
    if let Some(p) = &config.path {
        args.push("--path".into());
        args.push(p.trim_end_matches('/').to_owned());
    }
    if config.entry.ends_with(".ipynb") {
        args.push("--convert".into());
        args.push(config.entry_in_remote());
    }
    args.extend([
        "--interval".into(),
        format!("{interval_seconds}s"),
        "--http-bind".into(),
        format!("0.0.0.0:{FOLLOW_HTTP_PORT}"),
    ]);
    args
}

fn http_probe(path: &str, port: IntOrString, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port,
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn app_resources(o: &ResourceOverrides) -> k8s_openapi::api::core::v1::ResourceRequirements {
    builders::resource_requirements(&ResourceOverrides {
        cpu_request: o.cpu_request.clone().or(Some("100m".into())),
        memory_request: o.memory_request.clone().or(Some("256Mi".into())),
        cpu_limit: o.cpu_limit.clone(),
        memory_limit: o.memory_limit.clone().or(Some("1Gi".into())),
    })
}

fn init_containers(config: &AppConfig, plan: &PodPlan) -> Vec<Container> {
    let mut out = Vec::new();
    let app_dir = config.app_dir();
    match &config.source {
        AppSource::Pinned(id) => {
            let mut restore = builders::restore_container(plan);
            restore.args = Some(restore_args(config, id));
            out.push(restore);
            if config.entry.ends_with(".ipynb") {
                out.push(Container {
                    name: "tether-convert".into(),
                    image: Some(config.tether_image.clone()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    command: Some(vec!["tether".into()]),
                    args: Some(vec![
                        "convert".into(),
                        format!("{app_dir}/{}", config.entry),
                        "--output".into(),
                        format!("{app_dir}/{}", config.script()),
                    ]),
                    volume_mounts: Some(vec![mount("app", APP_ROOT, false)]),
                    resources: Some(builders::resource_requirements(
                        &ResourceOverrides::default(),
                    )),
                    security_context: Some(builders::security_context()),
                    termination_message_policy: Some("FallbackToLogsOnError".into()),
                    ..Container::default()
                });
            }
        }
        AppSource::Follow { interval_seconds } => {
            let mut follow = builders::sync_container(plan);
            follow.args = Some(follow_args(config, *interval_seconds));
            // The next container (pip, the app) starts once the first sync
            // is in place: a native sidecar's startup probe gates it.
            follow.startup_probe = Some(http_probe(
                "/readyz",
                IntOrString::Int(i32::from(FOLLOW_HTTP_PORT)),
                2,
                150,
            ));
            out.push(follow);
        }
    }
    if let Some(req) = &config.requirements {
        out.push(Container {
            name: "pip-install".into(),
            image: Some(config.image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(
                [
                    "python",
                    "-m",
                    "pip",
                    "install",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--target",
                    PIP_DIR,
                    "-r",
                ]
                .map(String::from)
                .into_iter()
                .chain([format!("{app_dir}/{req}")])
                .collect(),
            ),
            env: Some(vec![env("HOME", APP_HOME), env("TMPDIR", "/tmp")]),
            volume_mounts: Some(vec![
                mount("app", APP_ROOT, true),
                mount("pip", PIP_DIR, false),
                mount("app-home", APP_HOME, false),
                mount("app-tmp", "/tmp", false),
            ]),
            resources: Some(app_resources(&config.resources)),
            security_context: Some(builders::security_context()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Container::default()
        });
    }
    out
}

fn app_container(config: &AppConfig) -> Container {
    let app_dir = config.app_dir();
    let argv = config.app_argv();
    let mut env_vars = vec![
        env("HOME", APP_HOME),
        env("TMPDIR", "/tmp"),
        env("PORT", &config.port.to_string()),
        env("PYTHONUNBUFFERED", "1"),
        // The code is mounted read-only.
        env("PYTHONDONTWRITEBYTECODE", "1"),
    ];
    let mut mounts = vec![
        mount("app", APP_ROOT, true),
        mount("app-home", APP_HOME, false),
        mount("app-tmp", "/tmp", false),
    ];
    if config.requirements.is_some() {
        env_vars.push(env("PYTHONPATH", PIP_DIR));
        mounts.push(mount("pip", PIP_DIR, true));
    }
    let (command, working_dir, liveness) = match config.source {
        AppSource::Pinned(_) => (argv, Some(app_dir), None),
        AppSource::Follow { .. } => {
            let current = format!("{APP_ROOT}/{CURRENT}");
            // Record the release, enter it (the process keeps that
            // directory), run the app; restart once `current` moved on.
            let script =
                format!("readlink {current} > {RELEASE_FILE} && cd {app_dir} && exec \"$@\"");
            let mut command = vec!["sh".to_owned(), "-c".to_owned(), script, "app".to_owned()];
            command.extend(argv);
            let check = format!("test \"$(readlink {current})\" = \"$(cat {RELEASE_FILE})\"");
            let liveness = Probe {
                exec: Some(ExecAction {
                    command: Some(vec!["sh".into(), "-c".into(), check]),
                }),
                period_seconds: Some(10),
                timeout_seconds: Some(5),
                failure_threshold: Some(1),
                ..Probe::default()
            };
            (command, None, Some(liveness))
        }
    };
    Container {
        name: "app".into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        working_dir,
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(config.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe(
            &config.readiness_path,
            IntOrString::String("http".into()),
            5,
            3,
        )),
        liveness_probe: liveness,
        volume_mounts: Some(mounts),
        resources: Some(app_resources(&config.resources)),
        security_context: Some(builders::security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

fn deployment(config: &AppConfig) -> Result<Deployment, ManifestError> {
    let plan = plan(config)?;
    let mut volumes = vec![
        empty_dir("app"),
        empty_dir("app-home"),
        empty_dir("app-tmp"),
    ];
    if config.requirements.is_some() {
        volumes.push(empty_dir("pip"));
    }
    volumes.extend(builders::support_volumes(&plan));
    Ok(Deployment {
        metadata: config.meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(config.replicas),
            selector: LabelSelector {
                match_labels: Some(config.selector()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(config.labels()),
                    annotations: config.annotations(),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // One UID for every container (restore, convert,
                    // follow, pip, app): the app reads what tether wrote
                    // whatever modes the files had in the remote; group 0
                    // reads the credentials Secret (0440).
                    security_context: Some(PodSecurityContext {
                        run_as_user: config.run_as_user,
                        run_as_group: config.run_as_user.map(|_| 0),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers: Some(init_containers(config, &plan)),
                    containers: vec![app_container(config)],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

fn service(config: &AppConfig) -> Service {
    Service {
        metadata: config.meta(),
        spec: Some(ServiceSpec {
            selector: Some(config.selector()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn ingress(config: &AppConfig, ingress: &IngressConfig) -> Ingress {
    Ingress {
        metadata: config.meta(),
        spec: Some(IngressSpec {
            ingress_class_name: ingress.class.clone(),
            tls: ingress.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![ingress.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(ingress.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: config.name.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        ..Ingress::default()
    }
}

fn network_policy(config: &AppConfig) -> NetworkPolicy {
    let port = |p: u16| NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(p))),
        protocol: Some("TCP".into()),
        end_port: None,
    };
    let mut ports = vec![port(config.port)];
    // The follow sidecar's /metrics, for scraping.
    if matches!(config.source, AppSource::Follow { .. }) {
        ports.push(port(FOLLOW_HTTP_PORT));
    }
    NetworkPolicy {
        metadata: config.meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(config.selector()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(ports),
            }]),
            egress: None,
        }),
    }
}

/// The app's objects in apply order: Deployment, Service, then the Ingress
/// and the NetworkPolicy when asked for.
pub fn app_objects(config: &AppConfig) -> Result<Vec<Value>, ManifestError> {
    config.validate()?;
    let mut out = vec![typed(&deployment(config)?), typed(&service(config))];
    if let Some(i) = &config.ingress {
        out.push(typed(&ingress(config, i)));
    }
    if config.network_policy {
        out.push(typed(&network_policy(config)));
    }
    Ok(out)
}

/// [`app_objects`] as a multi-document YAML stream (for `kubectl apply`,
/// kustomize, or a GitOps repository).
pub fn app_manifests(config: &AppConfig) -> Result<String, ManifestError> {
    to_yaml_stream(&app_objects(config)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config() -> AppConfig {
        AppConfig {
            name: "sales".into(),
            remote: "s3://bucket/alice".into(),
            source: AppSource::Pinned("abc123".into()),
            path: Some("apps/sales".into()),
            ..AppConfig::default()
        }
    }

    #[test]
    fn script_and_argv() {
        let mut c = config();
        assert_eq!(c.script(), "app.py");
        assert_eq!(c.app_argv(), ["python", "app.py"]);
        c.command = vec![
            "streamlit".into(),
            "run".into(),
            "{script}".into(),
            "--server.port=8080".into(),
        ];
        assert_eq!(c.app_argv()[2], "app.py");
        assert_eq!(c.app_dir(), "/srv/app/current/apps/sales");
        assert_eq!(c.entry_in_remote(), "apps/sales/app.ipynb");
    }

    #[test]
    fn paths_outside_the_folder_are_refused() {
        for (path, entry) in [
            (Some("../x"), "app.ipynb"),
            (Some("/abs"), "app.ipynb"),
            (Some("apps"), "../app.ipynb"),
            (Some("apps"), "/etc/app.py"),
            (None, "app.txt"),
        ] {
            let c = AppConfig {
                path: path.map(str::to_owned),
                entry: entry.into(),
                ..config()
            };
            assert!(app_objects(&c).is_err(), "{path:?} {entry}");
        }
    }
}
