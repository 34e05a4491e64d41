//! Injection into realistic specs, applied with the json-patch crate, and
//! every result checked by `kubernetes-validate --strict`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube_deploy::inject::{InjectionOutcome, InjectorConfig, inject};
use kube_deploy::manifests::inject_yaml;
use serde_json::Value;

fn apply(pod_yaml: &str) -> (Value, Vec<String>) {
    let mut document = yaml_documents(pod_yaml).remove(0);
    let pod: Pod = serde_json::from_value(document.clone()).expect("fixture is a Pod");
    match inject(&pod, &InjectorConfig::default()).expect("injection") {
        InjectionOutcome::Patched { patch, warnings } => {
            json_patch::patch(&mut document, &patch).expect("patch applies");
            (document, warnings)
        }
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn to_yaml(value: &Value) -> String {
    serde_norway::to_string(value).expect("yaml")
}

#[test]
fn jupyterhub_single_user_pod() {
    let (pod, warnings) = apply(&fixture("jupyterhub-singleuser.yaml"));
    assert!(
        warnings.is_empty(),
        "fsGroup is set, so no warning: {warnings:?}"
    );
    let spec = pod_spec(&pod);
    // Restore, then the native sidecar, then the hub's own init container.
    assert_eq!(
        init_container_names(spec),
        ["tether-restore", "tether-sync", "block-cloud-metadata"]
    );
    assert_eq!(tether_containers(spec, "sync").len(), 1);
    assert_eq!(tether_containers(spec, "restore").len(), 1);
    let sync = tether_containers(spec, "sync")[0];
    assert_eq!(sync["restartPolicy"], "Always");
    // The home PVC is shared, not replaced, and the notebook keeps one mount.
    assert_eq!(sync["volumeMounts"][0]["name"], "volume-alice");
    assert_eq!(
        spec["containers"][0]["volumeMounts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(spec["securityContext"]["fsGroup"], 100);
    assert_eq!(
        sync["args"][3],
        "s3://notebooks/users/alice?layout=snapshots"
    );
    assert_eq!(sync["resources"]["limits"]["memory"], "1Gi");
    let secret = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"].is_object())
        .unwrap();
    assert_eq!(secret["secret"]["secretName"], "alice-s3");
    assert_eq!(secret["secret"]["defaultMode"], 0o400);
    // Restricted PSS fields on both tether containers, no fixed UID.
    for c in tether_containers(spec, "sync")
        .into_iter()
        .chain(tether_containers(spec, "restore"))
    {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert!(sc.get("runAsUser").is_none());
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    }
    assert_valid_for_kubernetes(&[("jupyterhub", to_yaml(&pod))]);
}

#[test]
fn deployment_with_volumes_named_like_ours() {
    let out = inject_yaml(
        &fixture("deployment-with-our-names.yaml"),
        &InjectorConfig::default(),
    )
    .unwrap();
    let deployment = yaml_documents(&out).remove(0);
    let spec = pod_spec(&deployment);
    assert_eq!(tether_containers(spec, "sync").len(), 1);
    let names: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "tether-workdir",
            "tether-state",
            "tether-workdir-2",
            "tether-state-2",
            "tether-home",
            "tether-tmp",
            "tether-credentials"
        ]
    );
    // The app's own tether-sync container is untouched; ours is renamed.
    assert_eq!(
        spec["containers"][1]["image"],
        "ghcr.io/example/unrelated:2"
    );
    assert_eq!(
        init_container_names(spec),
        ["tether-restore", "tether-sync-2"]
    );
    // Port 9477 is taken by the app, so the sidecar moves to 9478.
    let sync = tether_containers(spec, "sync")[0];
    assert_eq!(sync["ports"][0]["containerPort"], 9478);
    assert_eq!(
        sync["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "TETHER_SSH_KEY_FILE")
            .unwrap()["value"],
        "/var/run/secrets/tether/ssh-privatekey"
    );
    // Only the named container gets the directory.
    assert_eq!(
        spec["containers"][0]["volumeMounts"][1]["mountPath"],
        "/srv/notes"
    );
    assert!(spec["containers"][1].get("volumeMounts").is_none());
    assert_valid_for_kubernetes(&[("deployment", out)]);
}

#[test]
fn job_gets_a_native_sidecar_and_a_longer_grace_period() {
    let out = inject_yaml(&fixture("job.yaml"), &InjectorConfig::default()).unwrap();
    let job = yaml_documents(&out).remove(0);
    let spec = pod_spec(&job);
    assert_eq!(tether_containers(spec, "sync").len(), 1);
    // Native: the sidecar is an init container, so the Job can complete.
    assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        tether_containers(spec, "sync")[0]["restartPolicy"],
        "Always"
    );
    assert_eq!(spec["terminationGracePeriodSeconds"], 70);
    assert_valid_for_kubernetes(&[("job", out)]);
}

#[test]
fn already_injected_pod_gets_no_second_sidecar() {
    let (pod, _) = apply(&fixture("jupyterhub-singleuser.yaml"));
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    assert_eq!(
        inject(&typed, &InjectorConfig::default()).unwrap(),
        InjectionOutcome::AlreadyInjected
    );

    let once = inject_yaml(&fixture("job.yaml"), &InjectorConfig::default()).unwrap();
    let twice = inject_yaml(&once, &InjectorConfig::default()).unwrap();
    assert_eq!(once, twice);
    assert_eq!(
        tether_containers(pod_spec(&yaml_documents(&twice)[0]), "sync").len(),
        1
    );
}

#[test]
fn container_mode_for_older_clusters_validates_too() {
    let config = InjectorConfig {
        sidecar_mode: kube_deploy::annotations::SidecarMode::Container,
        ..InjectorConfig::default()
    };
    let out = inject_yaml(&fixture("jupyterhub-singleuser.yaml"), &config).unwrap();
    let pod = yaml_documents(&out).remove(0);
    let spec = pod_spec(&pod);
    assert_eq!(
        init_container_names(spec),
        ["tether-restore", "block-cloud-metadata"]
    );
    assert_eq!(tether_containers(spec, "sync").len(), 1);
    assert_eq!(spec["containers"][1]["name"], "tether-sync");
    assert_valid_for_kubernetes(&[("container-mode", out)]);
}

#[test]
fn unrelated_documents_pass_unchanged() {
    let input = fixture("unrelated.yaml");
    let out = inject_yaml(&input, &InjectorConfig::default()).unwrap();
    assert_eq!(yaml_documents(&out), yaml_documents(&input));
    assert_valid_for_kubernetes(&[("unrelated", out)]);
}
