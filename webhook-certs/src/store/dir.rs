//! Certificates as PEM files in a directory (see [`DirStore`]).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{CertStore, Revision, RevisionKind, Snapshot};
use crate::bundle::{CertBundle, PemFiles, PrivateKeyPem};
use crate::error::{Error, Result};

const LOCK_FILE: &str = ".webhook-certs.lock";
const FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// Certificates as PEM files in a directory.
///
/// Layout: `ca.crt`, `ca.key`, `tls.crt`, `tls.key` (the names a mounted
/// `kubernetes.io/tls` Secret uses, so a Secret volume can be read with the
/// same store). Each file is written to a temporary file in the same
/// directory, flushed, given its mode (0600 for keys, 0644 for
/// certificates) before it gets its content, and renamed over the old one,
/// so no reader ever sees a half-written file.
///
/// Writers take an exclusive lock on `.webhook-certs.lock`, compare the
/// files with the revision they loaded, and only then write; readers take a
/// shared lock, so processes using this store never see a mix of old and
/// new files. Readers that do not lock (a web server reading `tls.crt`
/// itself) may briefly see a new certificate with the old key; serve through
/// [`CertResolver`](crate::CertResolver) to avoid that. A read-only
/// directory (a mounted Secret volume) is read without the lock.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl CertStore for DirStore {
    fn location(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn load(&self) -> Result<Snapshot> {
        let dir = self.dir.clone();
        blocking(&self.location(), move || load_blocking(&dir)).await
    }

    async fn save(&self, bundle: &CertBundle, expected: &Revision) -> Result<()> {
        let dir = self.dir.clone();
        let location = self.location();
        let files = bundle.to_pem_files();
        let expected = expected.clone();
        blocking(&self.location(), move || {
            save_blocking(&dir, &location, &files, &expected)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            what: what.to_owned(),
            reason: e.to_string(),
        })?
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

// `File::lock` is stable since Rust 1.89; the workspace's kube 5 already
// requires 1.89, so the declared rust-version (1.85) is not reachable anyway.
#[allow(clippy::incompatible_msrv)]
fn lock(dir: &Path, exclusive: bool) -> Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e)
            if !exclusive
                && matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err("open lock file", &path)(e)),
    };
    if exclusive {
        file.lock().map_err(io_err("lock", &path))?;
    } else {
        file.lock_shared().map_err(io_err("lock", &path))?;
    }
    // The lock is released when the file is closed.
    Ok(Some(file))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Parse {
                what: path.display().to_string(),
                reason: "not UTF-8 text".into(),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Reads the four files (without locking) and the revision they form.
fn read_files(dir: &Path) -> Result<Snapshot> {
    let mut contents: [Option<String>; 4] = Default::default();
    for (slot, name) in contents.iter_mut().zip(FILES) {
        *slot = read_optional(&dir.join(name))?;
    }
    let revision = if contents.iter().all(Option::is_none) {
        Revision(RevisionKind::Absent)
    } else {
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        for content in &contents {
            match content {
                None => bytes.push(0),
                Some(text) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
                    bytes.extend_from_slice(text.as_bytes());
                }
            }
        }
        Revision(RevisionKind::Contents(bytes))
    };
    let [ca_crt, ca_key, tls_crt, tls_key] = contents;
    Ok(Snapshot {
        files: PemFiles {
            ca_crt,
            ca_key: ca_key.map(PrivateKeyPem::new),
            tls_crt,
            tls_key: tls_key.map(PrivateKeyPem::new),
        },
        revision,
    })
}

fn load_blocking(dir: &Path) -> Result<Snapshot> {
    if !dir.exists() {
        return Ok(Snapshot {
            files: PemFiles::default(),
            revision: Revision::absent(),
        });
    }
    let _lock = lock(dir, false)?;
    read_files(dir)
}

fn save_blocking(dir: &Path, location: &str, files: &PemFiles, expected: &Revision) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let _lock = lock(dir, true)?;
    let current = read_files(dir)?;
    if current.revision != *expected {
        return Err(Error::Conflict {
            location: location.to_owned(),
        });
    }
    let contents = [
        (files.ca_crt.as_deref(), false),
        (files.ca_key.as_ref().map(PrivateKeyPem::expose), true),
        (files.tls_key.as_ref().map(PrivateKeyPem::expose), true),
        (files.tls_crt.as_deref(), false),
    ];
    let names = ["ca.crt", "ca.key", "tls.key", "tls.crt"];
    for (name, (content, secret)) in names.into_iter().zip(contents) {
        if let Some(content) = content {
            write_atomically(dir, name, content.as_bytes(), secret)?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))?;
    tracing::debug!(dir = %dir.display(), "wrote certificates");
    Ok(())
}

fn write_atomically(dir: &Path, name: &str, content: &[u8], secret: bool) -> Result<()> {
    let target = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err("create temporary file in", dir))?;
    // tempfile creates the file with mode 0600; certificates are public.
    #[cfg(unix)]
    if !secret {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err("set permissions of", tmp.path()))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", &target))?;
    tmp.persist(&target)
        .map_err(|e| io_err("replace", &target)(e.error))?;
    Ok(())
}
