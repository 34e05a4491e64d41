//! `tether webhook` and `tether manifests`: thin wrappers over kube-deploy
//! (admission server, offline injection, deployment bundle) with
//! webhook-certs providing the webhook's TLS.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use kube_deploy::manifests::{FailurePolicy, WebhookManifestConfig};
use kube_deploy::webhook::{self, WebhookConfig, WebhookState};
use webhook_certs::{
    CertRequest, CertRotation, DirStore, RotationPolicy, SecretStore, WebhookConfigRef,
};

use super::StopSignals;
use super::certs::kube_client;
use crate::cli::{FailurePolicyArg, ManifestsCommand, WebhookArgs};
use crate::error::CliError;

/// Runs `tether webhook`: certificates first (created or renewed in the
/// Secret or directory, caBundle published), then the HTTPS server until
/// SIGTERM/SIGINT, renewing certificates in the background.
pub async fn webhook(args: WebhookArgs) -> Result<ExitCode, CliError> {
    let mut signals = StopSignals::new()?;
    let request = CertRequest::new(&args.service, &args.namespace).map_err(CliError::usage)?;
    let policy = RotationPolicy::default();
    let mut rotation = match (&args.cert_dir, &args.secret) {
        (Some(dir), _) => CertRotation::new(DirStore::new(dir.clone()), request, policy),
        (None, Some(secret)) => CertRotation::new(
            SecretStore::new(kube_client().await?, &args.namespace, secret),
            request,
            policy,
        ),
        (None, None) => return Err(CliError::usage("give --secret or --cert-dir")),
    };
    if let Some(name) = &args.webhook_config {
        rotation =
            rotation.publish_to(kube_client().await?, vec![WebhookConfigRef::mutating(name)]);
    }
    let reconciled = rotation
        .reconcile(SystemTime::now())
        .await
        .map_err(|e| CliError::runtime(format!("preparing the webhook certificates: {e}")))?;
    tracing::info!(plan = %reconciled.ensured.plan, published = reconciled.published.len(), "webhook certificates ready");
    let tls = webhook::tls_server_config(rotation.resolver())
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let mut config = WebhookConfig {
        injector: args.injector.config(),
        ..WebhookConfig::default()
    };
    config.skip_namespaces.insert(args.namespace.clone());
    let listener = webhook::bind(args.bind).await.map_err(CliError::usage)?;
    let check_interval = args.check_interval;
    let renewals = tokio::spawn(async move {
        let Err(e) = rotation.run(check_interval).await;
        tracing::error!(error = %e, "certificate renewal stopped");
    });
    let shutdown = async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "stopping the webhook");
    };
    let served = webhook::serve(listener, Arc::new(tls), WebhookState::new(config), shutdown).await;
    renewals.abort();
    served.map_err(|e| CliError::runtime(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn read_input(file: &std::path::Path) -> Result<String, CliError> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))
    }
}

/// Runs `tether manifests`.
pub fn manifests(cmd: ManifestsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ManifestsCommand::Inject { file, injector } => {
            let input = read_input(&file)?;
            let (out, reports) = kube_deploy::inject_yaml_report(&input, &injector.config())
                .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
            print!("{out}");
            // Nothing changed silently: one line per injected workload.
            for report in &reports {
                eprintln!("tether: injected {report}");
                for warning in &report.warnings {
                    eprintln!("tether: warning: {warning}");
                }
            }
        }
        // Needs the remote, so it is async: commands::run dispatches it.
        ManifestsCommand::App(_) => {
            return Err(CliError::runtime(
                "`manifests app` is run by commands::run, not here",
            ));
        }
        ManifestsCommand::Webhook(a) => {
            let a = *a;
            let ca_bundle_pem = a
                .ca_file
                .as_deref()
                .map(|path| {
                    std::fs::read_to_string(path).map_err(|e| {
                        CliError::usage(format!("cannot read {}: {e}", path.display()))
                    })
                })
                .transpose()?;
            let failure_policy = match (a.failure_policy, &ca_bundle_pem) {
                (Some(FailurePolicyArg::Fail), _) => FailurePolicy::Fail,
                (Some(FailurePolicyArg::Ignore), _) => FailurePolicy::Ignore,
                (None, Some(_)) => FailurePolicy::Fail,
                (None, None) => {
                    eprintln!(
                        "tether: no --ca-file: the MutatingWebhookConfiguration uses failurePolicy Ignore \
                         (opted-in pods start without tether while the webhook is down); \
                         see README \"Kubernetes\" for the install with the CA bundle and Fail"
                    );
                    FailurePolicy::Ignore
                }
            };
            // One place for the image: --image also names the injected
            // containers' image unless --sidecar-image says otherwise.
            let mut injector = a.injector.config();
            if a.injector.sidecar_image == kube_deploy::inject::DEFAULT_IMAGE {
                injector.image = a.image.clone();
            }
            let config = WebhookManifestConfig {
                namespace: a.namespace,
                name: a.name,
                secret_name: a.secret_name,
                image: a.image,
                injector,
                replicas: a.replicas,
                port: a.port,
                failure_policy,
                timeout_seconds: a.timeout_seconds,
                excluded_namespaces: a.exclude_namespace,
                namespace_label: a.namespace_label,
                ca_bundle_pem,
                priority_class_name: a.priority_class,
                ..WebhookManifestConfig::default()
            };
            config.validate().map_err(CliError::usage)?;
            print!(
                "{}",
                kube_deploy::webhook_bundle(&config).map_err(CliError::usage)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
