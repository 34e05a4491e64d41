//! `tether manifests app` and `tether convert`: thin wrappers over
//! [`kube_deploy::app`] and the `notebook` crate.
//!
//! `manifests app` reads the remote before it writes anything: the id to
//! pin (the newest unless `--at`), the listing at that id (the folder, the
//! entry and the requirements must be there), and a notebook entry itself
//! (it must parse, or the pod would fail at its convert step). With `--to
//! GIT-URL` the YAML is committed into a GitOps repository through the git
//! backend: its newest state is restored into a private directory, the
//! file is written there and pushed as a checkpoint based on that state,
//! so the push is a fast-forward or, if someone pushed the same file in
//! between, goes to a conflict branch — never a force-push.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use kube_deploy::annotations::ResourceOverrides;
use kube_deploy::app::{AppConfig, AppSource, IngressConfig, script_for};
use sync_core::{Backend, BackendError, Checkpoint, RelPath, RestoreOptions, Source};

use super::cat::{fetch_file, private_temp_dir};
use super::{context, open_remote};
use crate::cli::{AppManifestArgs, ConvertArgs};
use crate::error::CliError;

fn config(args: &AppManifestArgs, source: AppSource) -> Result<AppConfig, CliError> {
    let command = shlex::split(&args.command)
        .ok_or_else(|| CliError::usage("--command: unbalanced quotes"))?;
    let config = AppConfig {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        remote: args.remote.trim().to_owned(),
        source,
        path: args
            .path
            .as_deref()
            .map(|p| p.trim_end_matches('/').to_owned())
            .filter(|p| !p.is_empty() && p != "."),
        entry: args.entry.clone(),
        command,
        port: args.port,
        readiness_path: args.readiness_path.clone(),
        image: args.image.clone(),
        tether_image: args.tether_image.clone(),
        requirements: args.requirements.clone(),
        credentials_secret: args.credentials_secret.clone(),
        resources: ResourceOverrides {
            cpu_request: args.cpu_request.clone(),
            memory_request: args.memory_request.clone(),
            cpu_limit: args.cpu_limit.clone(),
            memory_limit: args.memory_limit.clone(),
        },
        replicas: args.replicas,
        run_as_user: (!args.platform_uid).then_some(args.run_as_user),
        ingress: args.host.as_ref().map(|host| IngressConfig {
            host: host.clone(),
            class: args.ingress_class.clone(),
            tls_secret: args.tls_secret.clone(),
        }),
        network_policy: args.network_policy,
    };
    config
        .validate()
        .map_err(|e| CliError::usage(format!("manifests app: {e}")))?;
    Ok(config)
}

fn rel(path: &str, what: &str) -> Result<RelPath, CliError> {
    RelPath::new(path).map_err(|e| CliError::usage(format!("{what} {path:?}: {e}")))
}

/// Checks the app's folder, entry and requirements against the state `id`
/// of the remote, and that a notebook entry parses; returns the full id of
/// that state (a git commit named by a prefix becomes its whole id).
async fn check_remote(
    backend: &dyn Backend,
    config: &AppConfig,
    id: &str,
) -> Result<String, CliError> {
    let remote = backend.describe();
    let listing = backend.list(Some(id)).await.map_err(|e| match e {
        BackendError::NotFound { what } => CliError::usage(format!(
            "--at {id}: no {what}: `tether history --from URL` lists the ids it keeps"
        )),
        e => context(e, format!("listing {id} of {remote}")),
    })?;
    let kind_of = |p: &RelPath| {
        listing
            .entries
            .iter()
            .find(|e| &e.path == p)
            .map(|e| e.kind)
    };
    use sync_core::restore::PlanKind;
    if let Some(path) = &config.path {
        let dir = rel(path, "--path")?;
        // Git keeps no directories: a folder exists when something is below it.
        let exists = kind_of(&dir) == Some(PlanKind::Dir)
            || listing
                .entries
                .iter()
                .any(|e| e.path.starts_with(&dir) && e.path != dir);
        if !exists {
            return Err(CliError::usage(format!(
                "--path {path}: {remote} at {id} has no such folder (`tether ls --from URL --at {id}` lists it)"
            )));
        }
    }
    let entry = rel(&config.entry_in_remote(), "--entry")?;
    if kind_of(&entry) != Some(PlanKind::File) {
        return Err(CliError::usage(format!(
            "--entry {}: {remote} at {id} has no file {entry}",
            config.entry
        )));
    }
    if let Some(req) = &config.requirements {
        let req = rel(&config.in_remote(req), "--requirements")?;
        if kind_of(&req) != Some(PlanKind::File) {
            return Err(CliError::usage(format!(
                "--requirements: {remote} at {id} has no file {req}"
            )));
        }
    }
    if config.entry.ends_with(".ipynb") {
        let script = rel(&config.in_remote(&script_for(&config.entry)), "script")?;
        if kind_of(&script).is_some() {
            return Err(CliError::usage(format!(
                "--entry {}: the folder already holds {script}, which the converted notebook would replace; rename one of them",
                config.entry
            )));
        }
        let tmp = private_temp_dir()?;
        let file = fetch_file(backend, Some(id), &entry, tmp.path()).await?;
        let bytes = tokio::task::spawn_blocking(move || crate::follow::read_notebook(&file))
            .await
            .map_err(|e| CliError::runtime(format!("reading {entry}: {e}")))?
            .map_err(|e| CliError::usage(format!("--entry {entry} at {id}: {e}")))?;
        notebook::Notebook::parse(&bytes).map_err(|e| {
            CliError::usage(format!(
                "--entry {entry} at {id} is not a valid notebook: {e}"
            ))
        })?;
    }
    Ok(listing.id.clone().unwrap_or_else(|| id.to_owned()))
}

/// Runs `tether manifests app`.
pub async fn run(args: AppManifestArgs) -> Result<ExitCode, CliError> {
    // Settings first (exit 2 before any network), with a placeholder id.
    let placeholder = if args.follow {
        AppSource::Follow {
            interval_seconds: 1,
        }
    } else {
        AppSource::Pinned(args.at.clone().unwrap_or_else(|| "newest".into()))
    };
    config(&args, placeholder)?;
    let interval_seconds = u32::try_from(args.interval.as_secs())
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| CliError::usage("--interval must be from 1s to 136 years"))?;
    let backend = open_remote(&args.remote, &args.remote_options)?;
    let remote = backend.describe();
    let head = backend
        .head()
        .await
        .map_err(|e| context(e, format!("reading the newest state of {remote}")))?;
    let (source, check_id) = match (&args.at, args.follow) {
        (_, true) => {
            let head = head.ok_or_else(|| {
                CliError::usage(format!("{remote} is empty: push the app's folder first"))
            })?;
            (AppSource::Follow { interval_seconds }, head.id)
        }
        (Some(at), false) => (AppSource::Pinned(at.clone()), at.clone()),
        (None, false) => {
            let head = head.ok_or_else(|| {
                CliError::usage(format!("{remote} is empty: push the app's folder first"))
            })?;
            (AppSource::Pinned(head.id.clone()), head.id)
        }
    };
    let mut config = config(&args, source)?;
    let full_id = check_remote(backend.as_ref(), &config, &check_id).await?;
    if let AppSource::Pinned(id) = &mut config.source {
        *id = full_id;
        config.validate().map_err(CliError::usage)?;
    }
    let yaml = kube_deploy::app::app_manifests(&config).map_err(CliError::usage)?;
    match &args.to {
        None => print!("{yaml}"),
        Some(url) => {
            let file = match &args.to_file {
                Some(f) => f.clone(),
                None => rel(&format!("apps/{0}/{0}.yaml", config.name), "--to-file")?,
            };
            let line = commit_to_git(url, &file, &yaml, &args).await?;
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Commits `yaml` as `file` into the git repository `url` (see the module
/// docs) and returns one line saying what happened.
async fn commit_to_git(
    url: &str,
    file: &RelPath,
    yaml: &str,
    args: &AppManifestArgs,
) -> Result<String, CliError> {
    let spec = crate::remote::check(url)?;
    if spec.family() != remote_spec::Family::Git {
        return Err(CliError::usage(
            "--to must be a git repository URL (ssh://, https://….git, git://, file:///….git)",
        ));
    }
    let state = private_temp_dir()?;
    let backend: Arc<dyn Backend> = crate::remote::open_backend(
        url,
        &args.remote_options.options(Some(&args.author)),
        &state.path().join("state"),
    )?;
    let remote = backend.describe();
    let work = state.path().join("work");
    let report = backend
        .restore(&work, &RestoreOptions::default())
        .await
        .map_err(|e| context(e, format!("reading {remote}")))?;
    let path = file.to_path(&work);
    let unchanged = tokio::fs::read(&path)
        .await
        .is_ok_and(|old| old == yaml.as_bytes());
    if unchanged {
        return Ok(format!("{file} in {remote} is already up to date"));
    }
    let meta = {
        let (path, yaml) = (path.clone(), yaml.to_owned());
        tokio::task::spawn_blocking(move || write_file_meta(&path, yaml.as_bytes()))
            .await
            .map_err(|e| CliError::runtime(format!("writing {}: {e}", file)))?
            .map_err(|e| CliError::runtime(format!("writing {file}: {e}")))?
    };
    let mut checkpoint = Checkpoint::new();
    // Parent folders first, as a scan would list them.
    let mut parents: Vec<RelPath> = Vec::new();
    let mut parent = file.parent();
    while let Some(p) = parent {
        parent = p.parent();
        parents.push(p);
    }
    for p in parents.into_iter().rev() {
        checkpoint.upsert(p, sync_core::Meta::Dir { mode: 0o755 });
    }
    checkpoint.upsert(file.clone(), meta);
    checkpoint.set_base(report.head.clone());
    let receipt = backend
        .push(&checkpoint, &Source::new(&work))
        .await
        .map_err(|e| context(e, format!("pushing {file} to {remote}")))?;
    backend
        .wait_background(std::time::Duration::from_secs(5))
        .await;
    if let Some(conflict) = receipt.conflict {
        return Err(CliError::runtime(format!(
            "{remote} changed {file} meanwhile: this version went to {conflict} (nothing was force-pushed); merge it there"
        )));
    }
    Ok(format!(
        "committed {file} to {remote}{}",
        receipt.head.map(|h| format!(" as {h}")).unwrap_or_default()
    ))
}

fn write_file_meta(path: &Path, bytes: &[u8]) -> std::io::Result<sync_core::Meta> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)?;
    let mtime_ns = std::fs::metadata(path)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or_default();
    Ok(sync_core::Meta::File(sync_core::FileMeta {
        size: bytes.len() as u64,
        mtime_ns,
        mode: 0o644,
        hash: sync_core::ContentHash::of(bytes),
    }))
}

/// Runs `tether convert`.
pub async fn convert(args: ConvertArgs) -> Result<ExitCode, CliError> {
    let input = args.notebook.clone();
    let bytes = {
        let input = input.clone();
        tokio::task::spawn_blocking(move || crate::follow::read_notebook(&input))
            .await
            .map_err(|e| CliError::runtime(e.to_string()))?
    }
    .map_err(|e| CliError::usage(format!("cannot read {}: {e}", input.display())))?;
    let parsed = notebook::Notebook::parse(&bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", input.display())))?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let script = parsed.to_script(&name);
    match args.output {
        None => print!("{script}"),
        Some(out) => {
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
                std::io::Write::write_all(&mut tmp, script.as_bytes())?;
                // Readable by the app container, whatever UID it runs as.
                std::fs::set_permissions(
                    tmp.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )?;
                tmp.persist(&out).map_err(|e| e.error)?;
                Ok(())
            })
            .await
            .map_err(|e| CliError::runtime(e.to_string()))?
            .map_err(|e| CliError::runtime(format!("writing the script: {e}")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
