//! `tether manifests` as a cluster admin runs it during the README's
//! install: the CA bundle makes the webhook `Fail`, without one it is
//! `Ignore` (said on stderr), `--failure-policy fail` without a bundle is
//! refused, and `manifests inject` says on stderr what it changed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::*;

fn webhook_failure_policy(yaml: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("failurePolicy: "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_webhook_bundle_is_fail_only_with_its_ca_bundle() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "certs",
        "create",
        "--service",
        "tether-webhook",
        "--namespace",
        "tether-system",
        "--dir",
        "certs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = sb.run(&["manifests", "webhook", "--ca-file", "certs/ca.crt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert_eq!(webhook_failure_policy(&yaml), "Fail");
    assert!(yaml.contains("caBundle: "), "{yaml}");
    assert!(
        yaml.contains("tether.dev/inject: 'true'") || yaml.contains("tether.dev/inject: \"true\""),
        "{yaml}"
    );
    assert!(yaml.contains("TETHER_LOG"), "{yaml}");

    let out = sb.run(&["manifests", "webhook"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(webhook_failure_policy(&stdout(&out)), "Ignore");
    assert!(!stdout(&out).contains("caBundle"));
    assert!(
        stderr(&out).contains("failurePolicy Ignore"),
        "{}",
        stderr(&out)
    );

    let out = sb.run(&["manifests", "webhook", "--failure-policy", "fail"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("tether certs create"),
        "{}",
        stderr(&out)
    );

    // A key is not a CA bundle.
    let out = sb.run(&["manifests", "webhook", "--ca-file", "certs/ca.key"]);
    assert_eq!(out.status.code(), Some(2));

    // One image flag names both the webhook's and the sidecar's image.
    let out = sb.run(&[
        "manifests",
        "webhook",
        "--ca-file",
        "certs/ca.crt",
        "--image",
        "registry.example.com/tools/tether:9.9",
        "--priority-class",
        "tether-critical",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(
        yaml.contains("- --sidecar-image\n        - registry.example.com/tools/tether:9.9"),
        "{yaml}"
    );
    assert!(
        yaml.contains("priorityClassName: tether-critical"),
        "{yaml}"
    );
}

#[test]
fn manifests_inject_says_what_it_changed() {
    let sb = Sandbox::new();
    fs::write(
        sb.path("job.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train\nspec:\n  template:\n    metadata:\n      labels:\n        tether.dev/inject: \"true\"\n      annotations:\n        tether.dev/remote: gs://runs/train\n        tether.dev/mount-path: /outputs\n        tether.dev/grace-seconds: \"60\"\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 10\n      initContainers:\n      - {name: prepare, image: busybox}\n      containers:\n      - {name: train, image: python:3.12-slim}\n",
    )
    .unwrap();
    let out = sb.run(&["manifests", "inject", "-f", "job.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("injected document 1 (Job train): added init containers tether-restore, tether-sync (last among the init containers)"),
        "{err}"
    );
    assert!(
        err.contains("raised terminationGracePeriodSeconds from 10 to 70"),
        "{err}"
    );
    assert!(
        err.contains("warning: terminationGracePeriodSeconds raised"),
        "{err}"
    );
    let yaml = stdout(&out);
    assert!(yaml.contains("tether.dev/changes"), "{yaml}");
    // The restore runs after the job's own init container.
    let prepare = yaml.find("name: prepare").unwrap();
    let restore = yaml.find("name: tether-restore").unwrap();
    assert!(prepare < restore, "{yaml}");
}
