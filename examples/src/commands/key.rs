//! `tether key generate|list|add|remove`: the keys of an encrypted
//! repository (object stores, snapshots layout; FORMAT.md "Encryption
//! keys").
//!
//! ```text
//! key generate [-o PATH]           sync_s3::ObjectStoreBackend::generate_key ─► PATH (0600, never overwritten) or stdout
//! key list   --from URL            ObjectStoreBackend::list_keys (opened with --encryption-key-file if given)
//! key add    --from URL --new-key-file PATH   ObjectStoreBackend::add_key (needs the current key)
//! key remove --from URL ID [--force]          ObjectStoreBackend::remove_key (needs the current key)
//! ```
//!
//! These commands touch no state directory: they talk to the store alone.
//! Key material is read from files and handed to sync-s3; it is never
//! printed (except the new key `generate` writes to stdout when asked to),
//! logged, or part of an error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use sync_core::Backend as _;

use super::context;
use crate::error::CliError;
use crate::logging::escape_controls;
use crate::remote::RemoteOptions;

/// `tether key`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new random key (256 bits) for --encryption-key-file: written
    /// to PATH with mode 0600 (never over an existing file), or to stdout.
    /// Prefer it to a passphrase: nothing can guess it.
    Generate {
        /// Write the key to this new file instead of stdout.
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// List the key slots of an encrypted repository (id, kind, time, host,
    /// label; never a secret). With --encryption-key-file the key is
    /// checked and its slot marked.
    List(KeyRemoteArgs),
    /// Let another key open the repository: adds a key slot wrapping the
    /// repository's master secret with the key in --new-key-file. Needs
    /// the current key (--encryption-key-file).
    Add {
        /// The repository and its current key.
        #[command(flatten)]
        remote: KeyRemoteArgs,
        /// The key file (or passphrase file) to add.
        #[arg(long, value_name = "PATH")]
        new_key_file: PathBuf,
        /// A note shown by `tether key list` (who or what holds the key).
        #[arg(long, value_name = "TEXT", default_value = "")]
        label: String,
    },
    /// Remove a key slot (see `tether key list`). Needs a current key;
    /// refuses the last slot, and the slot of --encryption-key-file unless
    /// --force. Nothing is re-encrypted: whoever already read the
    /// repository with the removed key may still hold its master secret.
    Remove {
        /// The repository and a current key.
        #[command(flatten)]
        remote: KeyRemoteArgs,
        /// The key slot's id (16 hex digits).
        #[arg(value_name = "ID")]
        id: String,
        /// Also remove the slot the current key opened.
        #[arg(long)]
        force: bool,
    },
}

/// The repository a `tether key` command works on.
#[derive(Debug, Clone, Args)]
pub struct KeyRemoteArgs {
    /// Remote URL of the repository (`s3://…`, `gs://…`, `az://…`,
    /// `file:///dir`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// File holding a key that opens the repository (`tether key
    /// generate`) or its passphrase.
    #[arg(long, env = "TETHER_ENCRYPTION_KEY_FILE", value_name = "PATH")]
    pub encryption_key_file: Option<PathBuf>,
    /// Let S3 remotes run without `AWS_*` credentials (EC2 instance
    /// metadata, public buckets).
    #[arg(long, env = "TETHER_ALLOW_INSTANCE_CREDENTIALS")]
    pub allow_instance_credentials: bool,
    /// Give up on one request to the store after this long.
    #[arg(long, env = "TETHER_REQUEST_TIMEOUT", value_parser = crate::cli::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
}

impl KeyRemoteArgs {
    fn open(&self) -> Result<sync_s3::ObjectStoreBackend, CliError> {
        let url = self.from.trim();
        if url.is_empty() {
            return Err(CliError::usage("--from URL is empty"));
        }
        let options = RemoteOptions {
            allow_instance_credentials: self.allow_instance_credentials,
            request_timeout: Some(self.request_timeout),
            encryption_key_file: self.encryption_key_file.clone(),
            ..RemoteOptions::default()
        };
        crate::remote::open_object_store(
            url,
            &options,
            "encryption keys belong to object-store remotes (snapshots layout); tether does not encrypt git remotes",
        )
    }

    fn require_key(&self, what: &str) -> Result<(), CliError> {
        if self.encryption_key_file.is_none() {
            return Err(CliError::usage(format!(
                "{what} needs a key that opens the repository: --encryption-key-file PATH (or TETHER_ENCRYPTION_KEY_FILE)"
            )));
        }
        Ok(())
    }
}

/// Runs `tether key …`.
pub async fn run(cmd: KeyCommand) -> Result<ExitCode, CliError> {
    match cmd {
        KeyCommand::Generate { output } => generate(output.as_deref()),
        KeyCommand::List(remote) => {
            let backend = remote.open()?;
            let keys = backend
                .list_keys()
                .await
                .map_err(|e| context(e, "listing keys"))?;
            print!("{}", table(&keys));
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Add {
            remote,
            new_key_file,
            label,
        } => {
            remote.require_key("tether key add")?;
            let new = read_key_file(&new_key_file, "new key file")?;
            let backend = remote.open()?;
            let id = backend
                .add_key(&new, &label)
                .await
                .map_err(|e| context(e, "adding a key"))?;
            println!(
                "added key slot {id} to {}: the key in {} now opens it",
                backend.describe(),
                new_key_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Remove { remote, id, force } => {
            remote.require_key("tether key remove")?;
            let backend = remote.open()?;
            backend
                .remove_key(id.trim(), force)
                .await
                .map_err(|e| context(e, "removing a key"))?;
            println!(
                "removed key slot {} from {}; nothing was re-encrypted (anyone who already read the repository with that key may keep its master secret)",
                id.trim(),
                backend.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_key_file(path: &Path, what: &str) -> Result<sync_s3::EncryptionKey, CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(CliError::usage(format!(
                "cannot read {what} {}: not a regular file",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read {what} {}: {e}",
                path.display()
            )));
        }
    }
    sync_s3::EncryptionKey::from_file(path).map_err(CliError::usage)
}

/// `tether key generate`: a new key to `output` (created, mode 0600) or
/// stdout.
fn generate(output: Option<&Path>) -> Result<ExitCode, CliError> {
    let key = sync_s3::ObjectStoreBackend::generate_key()
        .map_err(|e| CliError::runtime(format!("generating a key: {e}")))?;
    let Some(path) = output else {
        let mut out = std::io::stdout().lock();
        out.write_all(key.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| CliError::runtime(format!("writing the key to stdout: {e}")))?;
        return Ok(ExitCode::SUCCESS);
    };
    write_new_secret(path, key.as_bytes())?;
    eprintln!(
        "tether: wrote a new key to {} (mode 0600). Keep a copy somewhere safe: without a key, an encrypted repository cannot be read by anyone.",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with mode 0600 and writes `bytes`, refusing an existing
/// file (a key file overwritten is a repository lost); a partly written
/// file is removed.
pub fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::usage(format!(
                "{} already exists: refusing to overwrite it (it may be the only copy of a key); choose another --output",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot create {}: {e}",
                path.display()
            )));
        }
    };
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CliError::runtime(format!(
            "writing {}: {e} (the partial file was removed)",
            path.display()
        )));
    }
    Ok(())
}

/// `t` as RFC 3339 seconds in UTC; a time outside 1970..=9999 (the slot's
/// creator's clock, untrusted) as seconds since the epoch.
fn utc(t: SystemTime) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => humantime::format_rfc3339_seconds(t).to_string(),
        Ok(d) => format!("@{}s (invalid)", d.as_secs()),
        Err(_) => "-".into(),
    }
}

/// The key slots as a table; the slot the given key opened is marked `*`.
/// Labels and hosts come from the store: control characters are escaped.
pub fn table(keys: &[sync_s3::KeyInfo]) -> String {
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.created.map_or_else(|| "-".into(), utc),
                k.kdf.to_string(),
                escape_controls(&k.host).into_owned(),
                escape_controls(&k.label).into_owned(),
            ]
        })
        .collect();
    let header = ["ID", "CREATED (UTC)", "KIND", "HOST", "LABEL"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .fold(header[i].len(), usize::max)
    };
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    let mut out = format!(
        "  {:<w0$} {:<w1$} {:<w2$} {:<w3$} {}\n",
        header[0], header[1], header[2], header[3], header[4]
    );
    for (k, r) in keys.iter().zip(&rows) {
        let mark = if k.opened { "*" } else { " " };
        out.push_str(&format!(
            "{mark} {:<w0$} {:<w1$} {:<w2$} {:<w3$} {}\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    if keys.iter().any(|k| k.opened) {
        out.push_str("(* = the slot your key opened)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_never_overwritten_and_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_secret(&path, b"one").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = write_new_secret(&path, b"two").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
    }
}
