//! A restore killed with SIGKILL in the middle of a file leaves a temporary
//! file next to it; the next restore into that directory (with a fresh
//! state, as a restarted init container has) removes it, and nothing that
//! merely looks like one.
//!
//! No libtest harness: run with `TETHER_RESTORE_CHILD` set, this binary is
//! the child (it starts writing a file, says `ready` and waits to be
//! killed); otherwise it is the parent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use bytes::Bytes;
use sync_core::restore::{FileSpec, RestoreWriter, is_restore_temp_name};
use sync_core::testkit::MemoryBackend;
use sync_core::{Backend, ContentHash, ExistingPolicy, FileMeta, Meta, RelPath, RestoreOptions};

const BIG: usize = 4 << 20;

fn content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn child(dest: &Path) -> ExitCode {
    let data = content();
    let w = RestoreWriter::open(dest, ExistingPolicy::Overwrite).unwrap();
    let spec = FileSpec {
        mode: 0o644,
        mtime_ns: None,
        size: Some(data.len() as u64),
        hash: Some(ContentHash::of(&data)),
    };
    let mut f = w
        .begin_file(&RelPath::new("big/file.bin").unwrap(), &spec)
        .unwrap();
    f.write_chunk(&data[..BIG / 2]).unwrap();
    println!("ready");
    // The parent never writes: wait here until SIGKILL.
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    ExitCode::FAILURE
}

fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| is_restore_temp_name(n))
        .collect()
}

fn parent() -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("TETHER_RESTORE_CHILD", &dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    if line.trim() != "ready" {
        return Err(format!("child said {line:?}"));
    }
    if status.signal() != Some(9) {
        return Err(format!("child was not killed by SIGKILL: {status:?}"));
    }
    let left = temps(&dest.join("big"));
    if left.len() != 1 {
        return Err(format!(
            "expected one leftover temporary file, found {left:?}"
        ));
    }
    // Look-alikes that are not tether's and must survive.
    let keep = [
        "big/.tether-restore-notmine.tmp",
        "big/.tether-restore-0123456789abcdef.tmp.bak",
        "big/tether-restore-0123456789abcdef.tmp",
        ".tether-restore-0123456789abcdef0.tmp",
        "notes.tmp",
    ];
    for k in keep {
        fs::write(dest.join(k), b"user data").unwrap();
    }
    // A later restore with a fresh state (a new backend instance).
    let data = Bytes::from(content());
    let meta = Meta::File(FileMeta {
        size: data.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o640,
        hash: ContentHash::of(&data),
    });
    let backend = MemoryBackend::with_raw_state(vec![("big/file.bin".into(), meta, data.clone())]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(backend.restore(
        &dest,
        &RestoreOptions {
            existing: ExistingPolicy::Overwrite,
            ..RestoreOptions::default()
        },
    ))
    .map_err(|e| format!("second restore failed: {e}"))?;
    let left = temps(&dest.join("big"));
    if !left.is_empty() {
        return Err(format!(
            "leftover temporary files after a successful restore: {left:?}"
        ));
    }
    for k in keep {
        if fs::read(dest.join(k)).ok().as_deref() != Some(&b"user data"[..]) {
            return Err(format!("{k} was removed or changed"));
        }
    }
    if fs::read(dest.join("big/file.bin")).unwrap() != data {
        return Err("big/file.bin has the wrong content".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Some(dest) = std::env::var_os("TETHER_RESTORE_CHILD") {
        return child(Path::new(&dest));
    }
    match parent() {
        Ok(()) => {
            println!("test sigkill_mid_file_leftover_is_removed_by_the_next_restore ... ok");
            println!("1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "test sigkill_mid_file_leftover_is_removed_by_the_next_restore ... FAILED\n  {e}"
            );
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}
