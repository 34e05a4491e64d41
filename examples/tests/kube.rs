//! `tether certs`, `tether manifests` and `tether webhook` wired to their
//! libraries, without a cluster (directory store, offline YAML, local TLS).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn certs_create_is_idempotent_and_show_names_the_service() {
    let sb = Sandbox::new();
    let dir = sb.path("certs").display().to_string();
    let create = [
        "certs",
        "create",
        "--service",
        "hook",
        "--namespace",
        "tether",
        "--dir",
        &dir,
    ];
    let out = sb.run(&create);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("stored"), "{}", stdout(&out));
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(sb.path("certs").join(f).is_file(), "{f} missing");
    }
    let again = sb.run(&create);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).starts_with("kept"), "{}", stdout(&again));
    let show = sb.run(&["certs", "show", "--dir", &dir]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("hook.tether.svc"),
        "{}",
        stdout(&show)
    );
    assert!(stdout(&show).contains("expires"), "{}", stdout(&show));
    // --dir and --secret are exclusive
    let both = sb.run(&["certs", "show", "--dir", &dir, "--secret", "s"]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn manifests_inject_adds_the_restore_and_sync_containers() {
    let sb = Sandbox::new();
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: nb
  annotations:
    tether.dev/inject: "true"
    tether.dev/remote: s3://notebooks/alice
    tether.dev/mount-path: /home/jovyan
spec:
  containers:
  - name: app
    image: jupyter/base-notebook
"#;
    std::fs::write(sb.path("pod.yaml"), pod).unwrap();
    let out = sb.run(&[
        "manifests",
        "inject",
        "-f",
        "pod.yaml",
        "--grace-seconds",
        "25",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    for needle in [
        "- restore",
        "- sync",
        "- 25s",
        "s3://notebooks/alice",
        "/healthz",
        "TETHER_STATE_DIR",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    let bad = sb.run(&["manifests", "inject", "-f", "missing.yaml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("missing.yaml"), "{}", stderr(&bad));

    let out = sb.run(&[
        "manifests",
        "webhook",
        "--namespace",
        "tools",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(
        yaml.contains("kind: MutatingWebhookConfiguration"),
        "{yaml}"
    );
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    let bad = sb.run(&["manifests", "webhook", "--timeout-seconds", "99"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("timeout_seconds"), "{}", stderr(&bad));
}

#[test]
fn the_webhook_serves_tls_with_its_own_certificates() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("skipped: curl is not installed");
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let dir = sb.path("certs").display().to_string();
    let mut child = spawn(
        &sb,
        &[
            "webhook",
            "--bind",
            &bind,
            "--service",
            "hook",
            "--namespace",
            "tether",
            "--cert-dir",
            &dir,
        ],
    );
    let ca = sb.path("certs/ca.crt").display().to_string();
    let url = format!("https://hook.tether.svc:{port}/healthz");
    let resolve = format!("hook.tether.svc:{port}:127.0.0.1");
    let body = wait_for(
        "the webhook's /healthz over TLS",
        Duration::from_secs(60),
        || {
            let out = Command::new("curl")
                .args(["-sf", "--cacert", &ca, "--resolve", &resolve, &url])
                .output()
                .ok()?;
            out.status.success().then(|| stdout(&out))
        },
    );
    assert_eq!(body.trim(), "ok");
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}
