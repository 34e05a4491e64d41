//! The admission webhook and the `tether` command read remote URLs the same
//! way (issue 14 item 3): for every URL below, the webhook's verdict on the
//! `tether.dev/remote` annotation equals the CLI's verdict before it builds
//! a backend, both agree on the family (git or object store), the URL the
//! webhook writes into the pod is one the sidecar accepts, and every
//! refusal is one line without the secret. Pure: no network, no files.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use examples::remote::{RemoteFamily, check};
use kube_deploy::annotations::{AnnotationVerdict, INJECT, MOUNT_PATH, REMOTE, TetherRequest};

const SECRET: &str = "SUPERSECRET";

/// `Some(family)` when the URL must be accepted, `None` when refused.
fn table() -> Vec<(&'static str, Option<RemoteFamily>)> {
    use RemoteFamily::{Git, ObjectStore as Store};
    vec![
        // Object stores.
        ("s3://bucket/prefix", Some(Store)),
        ("s3://bucket", Some(Store)),
        ("s3a://bucket/a/b", Some(Store)),
        ("s3://bucket/p?layout=mirror", Some(Store)),
        (
            "s3://bucket/p?layout=snapshots&endpoint=http://127.0.0.1:8333&allow_http=true&region=eu-west-1",
            Some(Store),
        ),
        (
            "s3://bucket/p?concurrency=8&pack_size=4MiB&max_entries=5000",
            Some(Store),
        ),
        (
            "s3://bucket/p?skip_signature=true&virtual_hosted_style=false",
            Some(Store),
        ),
        ("gs://bucket/prefix", Some(Store)),
        (
            "gs://bucket/p?endpoint=https://storage.example",
            Some(Store),
        ),
        ("az://container/prefix", Some(Store)),
        ("azure://container/prefix", Some(Store)),
        ("file:///mnt/backup", Some(Store)),
        ("file:///mnt/store%20dir?layout=mirror", Some(Store)),
        ("s3:///no-bucket", None),
        ("az:///p", None),
        ("s3://bucket:9000/p", None),
        ("s3://bucket/a//b", None),
        ("s3://bucket/p?layout=tree", None),
        ("s3://bucket/p?colour=red", None),
        ("s3://bucket/p?branch=main", None),
        ("s3://bucket/p?concurrency=0", None),
        ("s3://bucket/p?allow_http=maybe", None),
        ("s3://bucket/p?layout=mirror&layout=snapshots", None),
        ("gs://bucket/p?region=eu", None),
        ("file:///mnt/x?endpoint=http://h", None),
        ("file://host/mnt/x", None),
        ("s3://bucket/p?endpoint=ftp://h", None),
        // Git.
        ("ssh://git@git.example.com/org/repo.git", Some(Git)),
        (
            "ssh://git@git.example.com:2222/org/repo?branch=pod-a",
            Some(Git),
        ),
        ("git://127.0.0.1:9418/notes.git", Some(Git)),
        ("git://h/notes", Some(Git)),
        ("https://github.com/me/notes.git", Some(Git)),
        (
            "https://github.com/me/notes.git?branch=pods/alice",
            Some(Git),
        ),
        ("http://127.0.0.1:8081/git/notes.git", Some(Git)),
        ("git+https://gitea.example/me/notes", Some(Git)),
        ("git+ssh://git@h/me/notes", Some(Git)),
        ("https://gitea.example/me/notes?branch=main", Some(Git)),
        ("file:///srv/notes.git", Some(Git)),
        ("file:///srv/notes?branch=main", Some(Git)),
        ("file:///srv/notes.git?max_entries=2000000", Some(Git)),
        ("ssh://git@host/notes.git?max_entries=0", None),
        ("git+file:///srv/notes", Some(Git)),
        // The case that crash-looped pods: admitted, refused by the sidecar.
        ("https://gitea.example/me/notes", None),
        ("http://minio.local:9000/bucket", None),
        ("git@github.com:me/notes.git", None),
        ("git:///notes.git", None),
        ("ssh://git@h", None),
        ("git://h/x.git?layout=mirror", None),
        ("git://h/x.git?depth=1", None),
        ("git://h/x.git?branch=a..b", None),
        ("git://h/x.git?branch=", None),
        ("git+s3://bucket/p", None),
        // Credentials, never echoed.
        ("https://me:SUPERSECRET@github.com/me/notes.git", None),
        ("https://SUPERSECRET@github.com/me/notes.git", None),
        ("ssh://git:SUPERSECRET@h/x.git", None),
        ("s3://AKIA:SUPERSECRET@bucket/p", None),
        ("s3://bucket/p?aws_secret_access_key=SUPERSECRET", None),
        ("s3://bucket/p?X-Amz-Signature=SUPERSECRET", None),
        ("az://c/p?sas=SUPERSECRET", None),
        ("https://h/x.git?access_token=SUPERSECRET", None),
        ("s3://bucket/p?endpoint=https://u:SUPERSECRET@h", None),
        // Syntax.
        ("", None),
        ("ftp://host/x", None),
        ("not a url SUPERSECRET", None),
        ("s3://bucket/p#frag", None),
        ("s3://bucket/p;rm", None),
        ("s3://bucket/$(id)", None),
        ("s3://bucket/p\nx", None),
        ("s3://bucket/p\tq", None),
    ]
}

/// The webhook's verdict: the annotations admission reads, through the
/// function admission calls. `Ok` holds the family and the URL it writes
/// into the pod.
fn webhook(url: &str) -> Result<(RemoteFamily, String), String> {
    let annotations: BTreeMap<String, String> = [
        (INJECT, "true"),
        (REMOTE, url),
        (MOUNT_PATH, "/home/jovyan"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    match TetherRequest::from_annotations(&annotations) {
        Ok(AnnotationVerdict::Requested(r)) => {
            let family = if r.remote_kind.is_git() {
                RemoteFamily::Git
            } else {
                RemoteFamily::ObjectStore
            };
            Ok((family, r.remote.to_string()))
        }
        Ok(other) => panic!("{url:?}: unexpected verdict {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

fn assert_clean(who: &str, url: &str, message: &str) {
    assert!(
        !message.contains('\n') && !message.contains('\r'),
        "{who} {url:?}: not one line: {message:?}"
    );
    assert!(
        !message.contains(SECRET),
        "{who} {url:?}: echoes the secret: {message}"
    );
}

#[test]
fn the_webhook_and_the_cli_agree_on_every_url() {
    let table = table();
    assert!(table.len() >= 40, "{} URLs", table.len());
    let mut failures = Vec::new();
    for (url, want) in &table {
        let hook = webhook(url);
        let cli = check(url).map(|s| s.family()).map_err(|e| e.to_string());
        if let Err(m) = &hook {
            assert_clean("webhook", url, m);
        }
        if let Err(m) = &cli {
            assert_clean("cli", url, m);
        }
        let hook_family = hook.as_ref().ok().map(|(f, _)| *f);
        let cli_family = cli.as_ref().ok().copied();
        if hook_family != cli_family || cli_family != *want {
            failures.push(format!(
                "{url:?}: expected {want:?}, webhook {hook:?}, cli {cli:?}"
            ));
            continue;
        }
        // What admission writes into the pod runs in the sidecar.
        if let Ok((family, written)) = &hook {
            match check(written) {
                Ok(s) if s.family() == *family => {}
                other => failures.push(format!(
                    "{url:?}: the pod gets {written:?}, which the sidecar reads as {other:?}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The one documented difference: `memory://` is a store inside one
/// process (tests), useless in a pod.
#[test]
fn memory_stores_are_for_the_cli_only() {
    assert!(check("memory://test/p").is_ok());
    let e = webhook("memory://test/p").unwrap_err();
    assert!(e.contains("memory://"), "{e}");
}
