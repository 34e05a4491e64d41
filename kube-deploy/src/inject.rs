//! The injector: a pure function from a pod (or pod template) and the
//! injector's defaults to an RFC 6902 JSON patch.
//!
//! The patch is built by hand from `add` operations — the same approach as
//! vault-k8s — rather than by diffing a mutated copy, so that it only ever
//! appends to what the pod already has and never rewrites fields that this
//! crate's k8s-openapi version does not know about. Paths are built with
//! `jsonptr` (re-exported by `json-patch`), which applies RFC 6901 escaping
//! (`tether.dev/status` → `tether.dev~1status`).
//!
//! The patch:
//! 1. marks the pod `tether.dev/status: injected` (idempotency) and records
//!    everything it changes in `tether.dev/changes` ([`Changes`], JSON), so
//!    nothing is changed silently;
//! 2. adds the state, `HOME`, `/tmp` (and credentials) volumes, plus an
//!    emptyDir for the synced directory when no app container mounts one;
//! 3. mounts the synced directory into the app containers that lack it;
//! 4. adds the restore init container and, in native mode, the sync
//!    sidecar right after it (so the sidecar never sees a half-restored
//!    directory) — after the pod's own init containers by default, which
//!    may prepare the volume or the network, or before them with
//!    `tether.dev/init-position: first`; in container mode the sidecar is
//!    appended to `containers`. A native sidecar anywhere in
//!    `initContainers` runs before the app starts, which is all tether needs;
//! 5. raises `terminationGracePeriodSeconds` when it is shorter than the
//!    flush deadline plus a margin, with a warning.

use std::collections::BTreeSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::annotations::{
    self, AnnotationError, AnnotationVerdict, InitPosition, ResourceOverrides, Retention,
    SidecarMode, TetherRequest,
};
use crate::builders::{self, AddedNames, PodPlan, WorkdirMount};
use crate::validate;

/// The default tether image, the one place every image default (the
/// injected containers', the webhook's) comes from: `TETHER_DEFAULT_IMAGE`
/// at build time (`scripts/image.sh` sets it to the image it builds, so the
/// binary inside an image names that image), else the release image
/// matching this crate's version.
pub const DEFAULT_IMAGE: &str = match option_env!("TETHER_DEFAULT_IMAGE") {
    Some(image) if !image.is_empty() => image,
    _ => concat!("ghcr.io/tether/tether:", env!("CARGO_PKG_VERSION")),
};
/// Default flush deadline of the sidecar after SIGTERM, seconds (below the
/// CLI's 30 s ceiling).
pub const DEFAULT_GRACE_SECONDS: u32 = 20;
/// Default port of the sidecar's HTTP endpoints; the injector moves to the
/// next free port when a container of the pod already declares it.
pub const DEFAULT_HTTP_PORT: u16 = 9477;
/// Loopback port of the history page when [`annotations::HISTORY_UI`] is
/// `"true"` (the next free one if a container declares it).
pub const DEFAULT_HISTORY_UI_PORT: u16 = 9478;
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const KUBERNETES_DEFAULT_GRACE_PERIOD: i64 = 30;

/// Injector-wide defaults; annotations override them per pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorConfig {
    /// Image used when the pod has no `tether.dev/image`.
    pub image: String,
    /// Sidecar mode used when the pod has no `tether.dev/sidecar-mode`.
    pub sidecar_mode: SidecarMode,
    /// Resources used when the pod sets none.
    pub resources: ResourceOverrides,
    /// Flush deadline used when the pod has no `tether.dev/grace-seconds`.
    pub grace_seconds: u32,
    /// Port used when the pod has no `tether.dev/http-port`.
    pub http_port: u16,
    /// Retention used when the pod has no `tether.dev/retention` (object
    /// stores in the snapshots layout; default [`Retention::DEFAULT`]).
    pub retention: Retention,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_owned(),
            sidecar_mode: SidecarMode::Native,
            resources: ResourceOverrides::default(),
            grace_seconds: DEFAULT_GRACE_SECONDS,
            http_port: DEFAULT_HTTP_PORT,
            retention: Retention::DEFAULT,
        }
    }
}

/// Why a pod could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// An annotation is invalid or contradicts the pod spec.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The pod itself cannot carry tether (e.g. it has no containers).
    #[error("pod spec: {0}")]
    PodSpec(String),
    /// A built object could not be serialised (not expected in practice).
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
}

/// What the injector decided for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum InjectionOutcome {
    /// The pod did not ask for tether; nothing to do.
    NotRequested,
    /// The pod already carries tether; nothing to do.
    AlreadyInjected,
    /// The patch to apply, plus warnings for the user (not errors).
    Patched {
        /// RFC 6902 patch.
        patch: Patch,
        /// Human-readable warnings (AdmissionResponse `warnings`).
        warnings: Vec<String>,
    },
}

/// Computes the JSON patch that adds tether to a pod. Pure: no I/O, same
/// input, same output.
pub fn inject(pod: &Pod, config: &InjectorConfig) -> Result<InjectionOutcome, InjectError> {
    let spec = pod.spec.as_ref();
    inject_template(&pod.metadata, spec, &PointerBuf::root(), config)
}

/// Like [`inject`], for a pod template inside another object: `metadata`
/// and `spec` are the template's, and `base` is where the template sits in
/// the document (`/spec/template` for a Deployment, StatefulSet or Job).
pub fn inject_template(
    metadata: &ObjectMeta,
    spec: Option<&PodSpec>,
    base: &PointerBuf,
    config: &InjectorConfig,
) -> Result<InjectionOutcome, InjectError> {
    let empty = Default::default();
    let annotations = metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = metadata.labels.as_ref().unwrap_or(&empty);
    let request = match TetherRequest::from_metadata(labels, annotations)? {
        AnnotationVerdict::NotRequested => return Ok(InjectionOutcome::NotRequested),
        AnnotationVerdict::AlreadyInjected => return Ok(InjectionOutcome::AlreadyInjected),
        AnnotationVerdict::Requested(request) => request,
    };
    let spec = spec.ok_or_else(|| InjectError::PodSpec("has no spec".into()))?;
    if spec.containers.is_empty() {
        return Err(InjectError::PodSpec("has no containers".into()));
    }
    let mut warnings = Vec::new();
    let plan_parts = resolve(&request, spec, config, &mut warnings)?;
    let patch = build_patch(base, metadata, spec, &plan_parts, &mut warnings)?;
    Ok(InjectionOutcome::Patched { patch, warnings })
}

/// What an injection added to or changed in a pod, written as JSON to the
/// `tether.dev/changes` annotation (like Istio's `sidecar.istio.io/status`)
/// and printed by `tether manifests inject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// Init containers added (restore, and the native sidecar), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<String>,
    /// Where they went: `first` or `last` among the pod's init containers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub init_position: String,
    /// Regular containers added (the sidecar in container mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// Volumes added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Volume mounts added to app containers, as `container:path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<String>,
    /// `terminationGracePeriodSeconds` raised `[from, to]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<[i64; 2]>,
}

impl Changes {
    /// One line for people: `added init containers a, b (last); …`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.init_containers.is_empty() {
            let position = if self.init_position.is_empty() {
                String::new()
            } else {
                format!(" ({} among the init containers)", self.init_position)
            };
            parts.push(format!(
                "added init containers {}{position}",
                self.init_containers.join(", ")
            ));
        }
        if !self.containers.is_empty() {
            parts.push(format!("added containers {}", self.containers.join(", ")));
        }
        if !self.volumes.is_empty() {
            parts.push(format!("added volumes {}", self.volumes.join(", ")));
        }
        if !self.volume_mounts.is_empty() {
            parts.push(format!("mounted {}", self.volume_mounts.join(", ")));
        }
        if let Some([from, to]) = self.termination_grace_period_seconds {
            parts.push(format!(
                "raised terminationGracePeriodSeconds from {from} to {to}"
            ));
        }
        parts.join("; ")
    }
}

/// Everything [`resolve`] decides, beyond the builders' [`PodPlan`].
struct Resolved {
    plan: PodPlan,
    /// Indices (in `spec.containers`) of app containers to mount into.
    mount_into: Vec<usize>,
    /// Whether the workdir volume is a new emptyDir.
    new_workdir_volume: bool,
    /// Where the init containers go.
    init_position: InitPosition,
}

fn is_within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn unique_name(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = base.to_owned();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn resolve(
    request: &TetherRequest,
    spec: &PodSpec,
    config: &InjectorConfig,
    warnings: &mut Vec<String>,
) -> Result<Resolved, InjectError> {
    let sync_dir = request.mount_path.clone();
    for reserved in builders::RESERVED_DIRS {
        if is_within(&sync_dir, reserved) || is_within(reserved, &sync_dir) {
            return Err(AnnotationError::new(
                annotations::MOUNT_PATH,
                format!("{sync_dir} overlaps {reserved}, which tether's containers use for their own files"),
            )
            .into());
        }
    }

    // Which app containers see the directory.
    let mount_into: Vec<usize> = if request.containers.is_empty() {
        (0..spec.containers.len()).collect()
    } else {
        let mut indices = Vec::new();
        for name in &request.containers {
            match spec.containers.iter().position(|c| &c.name == name) {
                Some(i) => indices.push(i),
                None => {
                    return Err(AnnotationError::new(
                        annotations::CONTAINERS,
                        format!("names container {name:?}, which the pod does not have"),
                    )
                    .into());
                }
            }
        }
        indices
    };

    let mut taken_containers: BTreeSet<String> =
        all_containers(spec).map(|c| c.name.clone()).collect();
    let mut taken_volumes: BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();

    // Find the volume that already holds the directory, if any: a mount at
    // the path itself, or at an ancestor (then mounted with a subPath).
    let mut existing: Option<WorkdirMount> = None;
    for &i in &mount_into {
        let container = &spec.containers[i];
        let best = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| is_within(&sync_dir, &m.mount_path))
            .max_by_key(|m| m.mount_path.trim_end_matches('/').len());
        let Some(mount) = best else { continue };
        if mount.sub_path_expr.is_some() {
            return Err(AnnotationError::new(
                annotations::MOUNT_PATH,
                format!(
                    "{sync_dir} is on volume {:?} mounted with subPathExpr in container {:?}, which tether cannot mirror",
                    mount.name, container.name
                ),
            )
            .into());
        }
        let rest = sync_dir[mount.mount_path.trim_end_matches('/').len()..].trim_start_matches('/');
        let sub_path = match (
            mount.sub_path.as_deref().filter(|s| !s.is_empty()),
            rest.is_empty(),
        ) {
            (None, true) => None,
            (None, false) => Some(rest.to_owned()),
            (Some(sub), true) => Some(sub.to_owned()),
            (Some(sub), false) => Some(format!("{}/{rest}", sub.trim_end_matches('/'))),
        };
        let found = WorkdirMount {
            volume: mount.name.clone(),
            sub_path,
        };
        match &existing {
            None => existing = Some(found),
            Some(previous) if *previous == found => {}
            Some(previous) => {
                return Err(AnnotationError::new(
                    annotations::MOUNT_PATH,
                    format!(
                        "{sync_dir} comes from different volumes in different containers ({:?} and {:?}); name one container with {}",
                        previous.volume, found.volume, annotations::CONTAINERS
                    ),
                )
                .into());
            }
        }
    }
    let new_workdir_volume = existing.is_none();
    let workdir = match existing {
        Some(w) => w,
        None => WorkdirMount {
            volume: unique_name("tether-workdir", &mut taken_volumes),
            sub_path: None,
        },
    };

    let names = AddedNames {
        restore_container: unique_name("tether-restore", &mut taken_containers),
        sync_container: unique_name("tether-sync", &mut taken_containers),
        state_volume: unique_name("tether-state", &mut taken_volumes),
        home_volume: unique_name("tether-home", &mut taken_volumes),
        tmp_volume: unique_name("tether-tmp", &mut taken_volumes),
        credentials_volume: unique_name("tether-credentials", &mut taken_volumes),
        encryption_key_volume: unique_name("tether-encryption-key", &mut taken_volumes),
    };

    // The sidecar's port must not collide with a declared port.
    let used_ports: BTreeSet<i32> = all_containers(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port)
        .collect();
    let http_port = match request.http_port {
        Some(port) if used_ports.contains(&i32::from(port)) => {
            return Err(AnnotationError::new(
                annotations::HTTP_PORT,
                format!("port {port} is already declared by a container of the pod"),
            )
            .into());
        }
        Some(port) => port,
        None => {
            let mut port = config.http_port;
            while used_ports.contains(&i32::from(port)) {
                port = port.checked_add(1).ok_or_else(|| {
                    InjectError::PodSpec("no free port for tether's HTTP endpoints".into())
                })?;
            }
            port
        }
    };

    // The history page: loopback, its own port (not the HTTP endpoints').
    let history_ui_port = if request.history_ui {
        let mut port = DEFAULT_HISTORY_UI_PORT;
        while used_ports.contains(&i32::from(port)) || port == http_port {
            port = port.checked_add(1).ok_or_else(|| {
                InjectError::PodSpec("no free port for tether's history page".into())
            })?;
        }
        Some(port)
    } else {
        None
    };

    // Containers run with runAsNonRoot; a pod that forces UID 0 would fail
    // to start them, so say so now.
    let pod_uid = spec.security_context.as_ref().and_then(|sc| sc.run_as_user);
    if pod_uid == Some(0) {
        return Err(InjectError::PodSpec(
            "spec.securityContext.runAsUser is 0, but tether's containers must run as non-root"
                .into(),
        ));
    }

    let mode = request.sidecar_mode.unwrap_or(config.sidecar_mode);
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if mode == SidecarMode::Container && restart_policy != "Always" {
        warnings.push(format!(
            "{}: container mode on a pod with restartPolicy {restart_policy} (a Job?) keeps the pod running after the app exits; use native",
            annotations::SIDECAR_MODE
        ));
    }
    // Credential files are 0440: root:<fsGroup> with an fsGroup, else
    // root:root. Without an fsGroup only group 0 can read them, so a pod
    // that forces another group (and does not add 0) locks tether out.
    let secret_files = [
        (
            annotations::CREDENTIALS_SECRET,
            request.credentials_secret.is_some(),
        ),
        (
            annotations::ENCRYPTION_KEY_SECRET,
            request.encryption_key.is_some(),
        ),
    ];
    for (annotation, _) in secret_files.iter().filter(|(_, set)| *set) {
        let sc = spec.security_context.as_ref();
        let fs_group = sc.and_then(|sc| sc.fs_group);
        let run_as_group = sc.and_then(|sc| sc.run_as_group);
        let group_zero = sc
            .and_then(|sc| sc.supplemental_groups.as_ref())
            .is_some_and(|groups| groups.contains(&0));
        if let (None, Some(group)) = (fs_group, run_as_group)
            && group != 0
            && !group_zero
        {
            warnings.push(format!(
                "{annotation}: credential files are mode 0440 owned by root:root without spec.securityContext.fsGroup, and the pod runs as group {group}: set fsGroup (or supplementalGroups: [0]) so tether can read them"
            ));
        }
    }

    let image = request
        .image
        .clone()
        .unwrap_or_else(|| config.image.clone());
    validate::image_reference(&image)
        .map_err(|e| InjectError::PodSpec(format!("injector image: {e}")))?;
    let resources = ResourceOverrides {
        cpu_request: request
            .resources
            .cpu_request
            .clone()
            .or_else(|| config.resources.cpu_request.clone()),
        memory_request: request
            .resources
            .memory_request
            .clone()
            .or_else(|| config.resources.memory_request.clone()),
        cpu_limit: request
            .resources
            .cpu_limit
            .clone()
            .or_else(|| config.resources.cpu_limit.clone()),
        memory_limit: request
            .resources
            .memory_limit
            .clone()
            .or_else(|| config.resources.memory_limit.clone()),
    };

    // Retention runs on object stores in the snapshots layout only (the
    // annotation refuses a policy elsewhere); the effective setting is
    // always written, so the pod spec says what the sidecar does whatever
    // the image's own default.
    let snapshots_store = request.remote_kind.is_object_store()
        && !request
            .remote
            .query_pairs()
            .any(|(k, v)| k == "layout" && v == "mirror");
    let retention = snapshots_store.then(|| request.retention.unwrap_or(config.retention));
    let plan = PodPlan {
        image,
        remote: request.remote.to_string(),
        remote_kind: request.remote_kind,
        sync_dir,
        workdir,
        names,
        credentials_secret: request.credentials_secret.clone(),
        encryption_key: request.encryption_key.clone(),
        ignore_file: request.ignore_file.clone(),
        resources,
        mode,
        grace_seconds: request.grace_seconds.unwrap_or(config.grace_seconds),
        http_port,
        allow_mass_delete: request.allow_mass_delete,
        history_ui_port,
        retention,
    };
    Ok(Resolved {
        plan,
        mount_into,
        new_workdir_volume,
        init_position: request.init_position,
    })
}

fn to_value<T: Serialize>(what: &'static str, value: &T) -> Result<serde_json::Value, InjectError> {
    serde_json::to_value(value).map_err(|source| InjectError::Serialize { what, source })
}

fn pointer(base: &PointerBuf, tokens: &[&str]) -> PointerBuf {
    let mut p = base.clone();
    for token in tokens {
        p.push_back(*token);
    }
    p
}

fn add(path: PointerBuf, value: serde_json::Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Appends `items` to the array at `path`, creating it when `exists` is false.
fn append_all(
    ops: &mut Vec<PatchOperation>,
    path: PointerBuf,
    exists: bool,
    items: Vec<serde_json::Value>,
) {
    if items.is_empty() {
        return;
    }
    if exists {
        for item in items {
            ops.push(add(pointer(&path, &["-"]), item));
        }
    } else {
        ops.push(add(path, serde_json::Value::Array(items)));
    }
}

fn build_patch(
    base: &PointerBuf,
    metadata: &ObjectMeta,
    spec: &PodSpec,
    resolved: &Resolved,
    warnings: &mut Vec<String>,
) -> Result<Patch, InjectError> {
    let plan = &resolved.plan;
    let mut ops = Vec::new();
    let mut changes = Changes::default();

    // Volumes.
    let mut volumes = Vec::new();
    if resolved.new_workdir_volume {
        volumes.push(builders::workdir_empty_dir(&plan.workdir.volume));
    }
    volumes.extend(builders::support_volumes(plan));
    changes.volumes = volumes.iter().map(|v| v.name.clone()).collect();
    let volumes = volumes
        .iter()
        .map(|v| to_value("volume", v))
        .collect::<Result<Vec<_>, _>>()?;

    // Mount the directory into app containers that do not see it yet.
    let workdir_mount = to_value("volume mount", &builders::workdir_volume_mount(plan))?;
    let mut mount_ops = Vec::new();
    for &i in &resolved.mount_into {
        let container = &spec.containers[i];
        let already = container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| is_within(&plan.sync_dir, &m.mount_path));
        if already {
            continue;
        }
        changes
            .volume_mounts
            .push(format!("{}:{}", container.name, plan.sync_dir));
        let index = i.to_string();
        append_all(
            &mut mount_ops,
            pointer(base, &["spec", "containers", &index, "volumeMounts"]),
            container.volume_mounts.is_some(),
            vec![workdir_mount.clone()],
        );
    }

    // Containers: restore, then the native sidecar, after (or before) the
    // pod's own init containers.
    let restore = builders::restore_container(plan);
    let sync = builders::sync_container(plan);
    let mut leading = vec![restore];
    if plan.mode == SidecarMode::Native {
        leading.push(sync.clone());
    }
    changes.init_containers = leading.iter().map(|c| c.name.clone()).collect();
    let has_own_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
    if has_own_init {
        changes.init_position = match resolved.init_position {
            InitPosition::First => "first",
            InitPosition::Last => "last",
        }
        .to_owned();
    }
    if plan.mode == SidecarMode::Container {
        changes.containers.push(sync.name.clone());
    }

    // Grace period.
    let required = builders::required_grace_period(plan.grace_seconds);
    let current = spec
        .termination_grace_period_seconds
        .unwrap_or(KUBERNETES_DEFAULT_GRACE_PERIOD);
    if current < required {
        changes.termination_grace_period_seconds = Some([current, required]);
        warnings.push(format!(
            "terminationGracePeriodSeconds raised from {current} to {required}: the sidecar flushes for {}s after the app stops ({})",
            plan.grace_seconds,
            annotations::GRACE_SECONDS
        ));
    }

    // 1. Mark the pod and record the changes. Annotations exist unless the
    // pod opted in by label alone.
    let changes_json =
        serde_json::to_string(&changes).map_err(|source| InjectError::Serialize {
            what: "changes annotation",
            source,
        })?;
    if metadata.annotations.is_some() {
        for (key, value) in [
            (annotations::STATUS, annotations::STATUS_INJECTED.to_owned()),
            (annotations::CHANGES, changes_json),
        ] {
            ops.push(add(
                pointer(base, &["metadata", "annotations", key]),
                serde_json::Value::String(value),
            ));
        }
    } else {
        ops.push(add(
            pointer(base, &["metadata", "annotations"]),
            serde_json::json!({
                annotations::STATUS: annotations::STATUS_INJECTED,
                annotations::CHANGES: changes_json,
            }),
        ));
    }

    // 2. Volumes, 3. mounts.
    append_all(
        &mut ops,
        pointer(base, &["spec", "volumes"]),
        spec.volumes.is_some(),
        volumes,
    );
    ops.extend(mount_ops);

    // 4. Containers.
    let init_path = pointer(base, &["spec", "initContainers"]);
    let leading = leading
        .iter()
        .map(|c| to_value("tether container", c))
        .collect::<Result<Vec<_>, _>>()?;
    match (spec.init_containers.is_some(), resolved.init_position) {
        (false, _) => ops.push(add(init_path, serde_json::Value::Array(leading))),
        (true, InitPosition::Last) => {
            for item in leading {
                ops.push(add(pointer(&init_path, &["-"]), item));
            }
        }
        (true, InitPosition::First) => {
            for (i, item) in leading.into_iter().enumerate() {
                ops.push(add(pointer(&init_path, &[&i.to_string()]), item));
            }
        }
    }
    if plan.mode == SidecarMode::Container {
        ops.push(add(
            pointer(base, &["spec", "containers", "-"]),
            to_value("sync container", &sync)?,
        ));
    }

    // 5. Grace period.
    if let Some([_, required]) = changes.termination_grace_period_seconds {
        ops.push(add(
            pointer(base, &["spec", "terminationGracePeriodSeconds"]),
            serde_json::Value::from(required),
        ));
    }
    Ok(Patch(ops))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("test pod: {e}"))
    }

    fn patched(value: serde_json::Value) -> (serde_json::Value, Vec<String>) {
        let p = pod(value.clone());
        let mut doc = value;
        match inject(&p, &InjectorConfig::default()) {
            Ok(InjectionOutcome::Patched { patch, warnings }) => {
                json_patch::patch(&mut doc, &patch).unwrap_or_else(|e| panic!("apply: {e}"));
                (doc, warnings)
            }
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    fn annotated(extra: serde_json::Value) -> serde_json::Value {
        let mut annotations = json!({
            "tether.dev/inject": "true",
            "tether.dev/remote": "s3://bucket/alice",
            "tether.dev/mount-path": "/work",
        });
        if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                a.insert(k.clone(), v.clone());
            }
        }
        annotations
    }

    fn names(doc: &serde_json::Value, field: &str) -> Vec<String> {
        doc["spec"][field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn minimal_pod_gets_restore_then_native_sidecar() {
        let (doc, warnings) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            names(&doc, "initContainers"),
            ["tether-restore", "tether-sync"]
        );
        assert_eq!(doc["spec"]["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(
            doc["metadata"]["annotations"]["tether.dev/status"],
            "injected"
        );
        assert_eq!(
            names(&doc, "volumes"),
            [
                "tether-workdir",
                "tether-state",
                "tether-home",
                "tether-tmp"
            ]
        );
        assert_eq!(
            doc["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/work"
        );
        assert_eq!(
            doc["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "tether-workdir"
        );
        // 20 s flush + 10 s margin == the default 30 s: left alone.
        assert!(doc["spec"].get("terminationGracePeriodSeconds").is_none());
    }

    #[test]
    fn second_pass_over_an_injected_pod_does_nothing() {
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }));
        assert_eq!(
            inject(&pod(doc), &InjectorConfig::default()).ok(),
            Some(InjectionOutcome::AlreadyInjected)
        );
    }

    #[test]
    fn existing_names_are_respected() {
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {
                "initContainers": [{"name": "tether-restore", "image": "busybox"}],
                "containers": [{"name": "tether-sync", "image": "busybox"}],
                "volumes": [{"name": "tether-state", "emptyDir": {}}, {"name": "tether-workdir", "emptyDir": {}}]
            }
        }));
        // The pod's own init container runs first (default position).
        assert_eq!(
            names(&doc, "initContainers"),
            ["tether-restore", "tether-restore-2", "tether-sync-2"]
        );
        assert_eq!(
            names(&doc, "volumes"),
            [
                "tether-state",
                "tether-workdir",
                "tether-workdir-2",
                "tether-state-2",
                "tether-home",
                "tether-tmp"
            ]
        );
    }

    #[test]
    fn existing_volume_at_the_path_is_reused_and_ancestor_gets_a_subpath() {
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/mount-path": "/home/jovyan"}))},
            "spec": {
                "containers": [{"name": "nb", "image": "jupyter/base-notebook",
                    "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}],
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}]
            }
        }));
        assert_eq!(
            doc["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            "home"
        );
        assert!(
            doc["spec"]["initContainers"][0]["volumeMounts"][0]
                .get("subPath")
                .is_none()
        );
        assert_eq!(
            doc["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/mount-path": "/data/project"}))},
            "spec": {
                "containers": [{"name": "app", "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "alice"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        }));
        assert_eq!(
            doc["spec"]["initContainers"][1]["volumeMounts"][0]["subPath"],
            "alice/project"
        );
        assert_eq!(
            doc["spec"]["initContainers"][1]["volumeMounts"][0]["mountPath"],
            "/data/project"
        );
    }

    #[test]
    fn container_mode_appends_the_sidecar_and_warns_for_jobs() {
        let (doc, warnings) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/sidecar-mode": "container"}))},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox"}]}
        }));
        assert_eq!(names(&doc, "initContainers"), ["tether-restore"]);
        assert_eq!(names(&doc, "containers"), ["app", "tether-sync"]);
        assert!(doc["spec"]["containers"][1].get("restartPolicy").is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn grace_period_and_ports_are_adjusted() {
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/grace-seconds": "45"}))},
            "spec": {"terminationGracePeriodSeconds": 5,
                "containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 9477}]}]}
        }));
        assert_eq!(doc["spec"]["terminationGracePeriodSeconds"], 55);
        assert_eq!(
            doc["spec"]["initContainers"][1]["ports"][0]["containerPort"],
            9478
        );
        assert_eq!(doc["spec"]["initContainers"][1]["args"][5], "45s");
    }

    #[test]
    fn history_ui_annotation_serves_the_page_on_loopback_off_the_http_port() {
        let ui_bind = |doc: &serde_json::Value| {
            doc["spec"]["initContainers"][1]["env"]
                .as_array()
                .and_then(|env| env.iter().find(|e| e["name"] == "TETHER_UI_BIND"))
                .and_then(|e| e["value"].as_str().map(str::to_owned))
        };
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }));
        assert_eq!(ui_bind(&doc), None);
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/history-ui": "true"}))},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }));
        assert_eq!(ui_bind(&doc).as_deref(), Some("127.0.0.1:9478"));
        // 9477 taken: the endpoints move to 9478, the page to 9479.
        let (doc, _) = patched(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({"tether.dev/history-ui": "true"}))},
            "spec": {"containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 9477}]}]}
        }));
        assert_eq!(
            doc["spec"]["initContainers"][1]["ports"][0]["containerPort"],
            9478
        );
        assert_eq!(ui_bind(&doc).as_deref(), Some("127.0.0.1:9479"));
    }

    #[test]
    fn annotation_keys_are_escaped_in_paths() {
        let p = pod(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }));
        let Ok(InjectionOutcome::Patched { patch, .. }) = inject(&p, &InjectorConfig::default())
        else {
            panic!("expected a patch")
        };
        let text = serde_json::to_string(&patch).unwrap_or_default();
        assert!(
            text.contains("/metadata/annotations/tether.dev~1status"),
            "{text}"
        );
    }

    #[test]
    fn refusals_name_the_annotation_or_the_field() {
        let cases = [
            (
                json!({"tether.dev/containers": "nope"}),
                json!([{"name": "app", "image": "b"}]),
                "tether.dev/containers",
            ),
            (
                json!({"tether.dev/mount-path": "/tmp/x"}),
                json!([{"name": "app", "image": "b"}]),
                "tether.dev/mount-path",
            ),
            (
                json!({"tether.dev/mount-path": "/home"}),
                json!([{"name": "app", "image": "b"}]),
                "tether.dev/mount-path",
            ),
            (
                json!({"tether.dev/http-port": "8080"}),
                json!([{"name": "app", "image": "b", "ports": [{"containerPort": 8080}]}]),
                "tether.dev/http-port",
            ),
            (
                json!({}),
                json!([
                    {"name": "a", "image": "b", "volumeMounts": [{"name": "v1", "mountPath": "/work"}]},
                    {"name": "c", "image": "b", "volumeMounts": [{"name": "v2", "mountPath": "/work"}]}
                ]),
                "tether.dev/mount-path",
            ),
        ];
        for (extra, containers, key) in cases {
            let p = pod(json!({
                "metadata": {"name": "p", "annotations": annotated(extra.clone())},
                "spec": {"containers": containers}
            }));
            let err = inject(&p, &InjectorConfig::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let root = pod(json!({
            "metadata": {"name": "p", "annotations": annotated(json!({}))},
            "spec": {"securityContext": {"runAsUser": 0}, "containers": [{"name": "app", "image": "b"}]}
        }));
        let err = inject(&root, &InjectorConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("runAsUser"), "{err}");
    }

    #[test]
    fn unannotated_pod_is_left_alone() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "b"}]}}),
        );
        assert_eq!(
            inject(&p, &InjectorConfig::default()).ok(),
            Some(InjectionOutcome::NotRequested)
        );
    }
}
