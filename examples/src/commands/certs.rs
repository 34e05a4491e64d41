//! `tether certs create|patch|show`: one webhook-certs call each.

use std::process::ExitCode;
use std::time::SystemTime;

use webhook_certs::{CertRequest, CertStore, DirStore, RotationPolicy, SecretStore};

use crate::cli::{CertStoreArgs, CertsCommand};
use crate::error::CliError;

/// A Kubernetes client from the kubeconfig or the in-cluster service account.
pub async fn kube_client() -> Result<kube::Client, CliError> {
    kube::Client::try_default().await.map_err(|e| {
        CliError::usage(format!(
            "no Kubernetes API access (kubeconfig or in-cluster service account): {e}"
        ))
    })
}

async fn open_store(
    args: &CertStoreArgs,
    namespace: &str,
) -> Result<Box<dyn CertStore + Send + Sync>, CliError> {
    match (&args.dir, &args.secret) {
        (Some(dir), _) => Ok(Box::new(DirStore::new(dir.clone()))),
        (None, Some(secret)) => Ok(Box::new(SecretStore::new(
            kube_client().await?,
            namespace,
            secret,
        ))),
        (None, None) => Err(CliError::usage("give --dir or --secret")),
    }
}

fn certs_error(e: webhook_certs::Error) -> CliError {
    use webhook_certs::Error as E;
    match e {
        E::WebhookConfigNotFound { .. } => CliError::usage(e),
        _ => CliError::runtime(e),
    }
}

/// Runs `tether certs`.
pub async fn run(cmd: CertsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        CertsCommand::Create {
            service,
            namespace,
            store,
        } => {
            let request = CertRequest::new(&service, &namespace).map_err(CliError::usage)?;
            let store = open_store(&store, &namespace).await?;
            let ensured = webhook_certs::ensure_certs(
                store.as_ref(),
                &request,
                &RotationPolicy::default(),
                SystemTime::now(),
            )
            .await
            .map_err(certs_error)?;
            let verb = if ensured.written { "stored" } else { "kept" };
            println!(
                "{verb} certificates for {} in {} ({})",
                request.dns_names().join(", "),
                store.location(),
                ensured.plan
            );
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Patch {
            webhook_config,
            namespace,
            store,
        } => {
            let store = open_store(&store, &namespace).await?;
            let snapshot = store.load().await.map_err(certs_error)?;
            let Some(bundle) = snapshot.files.ca_crt else {
                return Err(CliError::usage(format!(
                    "{} holds no ca.crt: run `tether certs create` first",
                    store.location()
                )));
            };
            let client = kube_client().await?;
            let patched = webhook_certs::patch_ca_bundle_by_name(&client, &webhook_config, &bundle)
                .await
                .map_err(certs_error)?;
            for p in patched {
                println!("{p}");
            }
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Show { namespace, store } => {
            let store = open_store(&store, &namespace).await?;
            let description = webhook_certs::describe(store.as_ref(), SystemTime::now())
                .await
                .map_err(certs_error)?;
            print!("{description}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
