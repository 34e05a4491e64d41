//! A notebook folder of a store as a web app's manifests, pinned to the
//! store's newest snapshot, with `Backend::head` and
//! `kube_deploy::app::app_manifests`: what `tether manifests app` does
//! (without its checks of the folder and the notebook, and without
//! `--to`). The script the pod would run is shown first, converted by the
//! `notebook` crate as the pod's `tether convert` step converts it.
//!
//! Run: `cargo run -p examples --example notebook_app -- file:///tmp/tether-demo apps/sales app.ipynb`
//! after `tether sync` pushed a folder `apps/sales` holding `app.ipynb`.

use kube_deploy::app::{AppConfig, AppSource, app_manifests};
use sync_core::{Backend, ExistingPolicy, RelPath, RestoreOptions};
use sync_s3::{BackendOptions, ObjectStoreBackend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(path), Some(entry)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: notebook_app URL DIR-IN-STORE ENTRY.ipynb".into());
    };
    let backend = ObjectStoreBackend::from_url(&url, BackendOptions::default())?;
    let id = backend.head().await?.ok_or("the store is empty")?.id;

    // The notebook at that id, converted as the pod converts it.
    let notebook = RelPath::new(format!("{path}/{entry}"))?;
    let tmp = tempfile::tempdir()?;
    let options = RestoreOptions {
        at: Some(id.clone()),
        existing: ExistingPolicy::Fail,
        paths: vec![notebook.clone()],
        ..RestoreOptions::default()
    };
    backend.restore(tmp.path(), &options).await?;
    let bytes = std::fs::read(notebook.to_path(tmp.path()))?;
    let script = notebook::Notebook::parse(&bytes)?.to_script(&entry);
    eprintln!("--- the script the app runs ---\n{script}--- the manifests ---");

    let config = AppConfig {
        name: "notebook-app".into(),
        remote: url,
        source: AppSource::Pinned(id),
        path: Some(path),
        entry,
        command: vec!["python".into()],
        ..AppConfig::default()
    };
    print!("{}", app_manifests(&config)?);
    Ok(())
}
