//! Injection into realistic specs, applied with the json-patch crate, and
//! every result checked by `kubernetes-validate --strict`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/policy.rs"]
mod policy;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube_deploy::inject::{InjectionOutcome, InjectorConfig, inject};
use kube_deploy::manifests::{inject_yaml, inject_yaml_report};
use policy::*;
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
    // The hub's own init container (it blocks the metadata endpoint, and
    // may prepare the volume) runs first; then the restore; then the
    // native sidecar, which is running before the notebook starts.
    assert_eq!(
        init_container_names(spec),
        ["block-cloud-metadata", "tether-restore", "tether-sync"]
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
    assert_eq!(secret["secret"]["secretName"], "notebooks-s3");
    assert_eq!(secret["secret"]["defaultMode"], 0o440);
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
    // Everything added is recorded on the pod.
    let changes: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["tether.dev/changes"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        changes,
        serde_json::json!({
            "initContainers": ["tether-restore", "tether-sync"],
            "initPosition": "last",
            "volumes": ["tether-state", "tether-home", "tether-tmp", "tether-credentials"],
        })
    );
    assert_valid_for_kubernetes(&[("jupyterhub", to_yaml(&pod))]);
}

#[test]
fn init_position_first_puts_restore_before_the_pods_init_containers() {
    let yaml = fixture("jupyterhub-singleuser.yaml").replace(
        "    tether.dev/memory-limit: 1Gi\n",
        "    tether.dev/memory-limit: 1Gi\n    tether.dev/init-position: first\n",
    );
    let (pod, _) = apply(&yaml);
    let spec = pod_spec(&pod);
    assert_eq!(
        init_container_names(spec),
        ["tether-restore", "tether-sync", "block-cloud-metadata"]
    );
    assert_valid_for_kubernetes(&[("jupyterhub-first", to_yaml(&pod))]);
}

/// Push health never gates the user's pod: no readiness probe or gate on
/// any tether container, and the probes there are only ask "does the
/// process answer" (`/healthz`), never `/readyz`.
#[test]
fn a_down_remote_cannot_make_the_pod_not_ready() {
    let config = InjectorConfig {
        sidecar_mode: kube_deploy::annotations::SidecarMode::Container,
        ..InjectorConfig::default()
    };
    let container_mode =
        yaml_documents(&inject_yaml(&fixture("jupyterhub-singleuser.yaml"), &config).unwrap())
            .remove(0);
    let (native, _) = apply(&fixture("jupyterhub-singleuser.yaml"));
    for pod in [native, container_mode] {
        let spec = pod_spec(&pod);
        assert!(spec.get("readinessGates").is_none());
        for c in tether_containers(spec, "sync")
            .into_iter()
            .chain(tether_containers(spec, "restore"))
        {
            assert!(c.get("readinessProbe").is_none(), "{}", c["name"]);
            let text = c.to_string();
            assert!(!text.contains("/readyz"), "{text}");
        }
        let sync = tether_containers(spec, "sync")[0];
        for probe in ["startupProbe", "livenessProbe"] {
            assert_eq!(sync[probe]["httpGet"]["path"], "/healthz", "{probe}");
            assert_eq!(sync[probe]["httpGet"]["port"], 9477, "{probe}");
        }
        // A liveness restart needs a minute without an answer.
        let live = &sync["livenessProbe"];
        assert!(
            live["periodSeconds"].as_i64().unwrap() * live["failureThreshold"].as_i64().unwrap()
                >= 60
        );
    }
}

#[test]
fn restricted_pod_without_fs_group_reads_its_credentials_through_group_zero() {
    let (pod, warnings) = apply(&fixture("restricted-no-fsgroup.yaml"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let spec = pod_spec(&pod);
    assert!(spec["securityContext"].get("fsGroup").is_none());
    assert_eq!(
        restricted_violations(spec),
        Vec::<String>::new(),
        "the injected pod must pass the restricted profile"
    );
    let mode = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["defaultMode"].as_u64())
        .unwrap() as u32;
    assert_eq!(mode & 0o007, 0, "credentials must not be world-readable");
    assert_valid_for_kubernetes(&[("restricted", to_yaml(&pod))]);

    // The kubelet makes the files root:root with that mode (no fsGroup), or
    // root:<fsGroup> | 0440 (fsGroup). Read them as the runtime would run
    // tether: OpenShift's arbitrary UID in group 0; the image's own user
    // (10001, group 0); a plain UID whose supplementary group is the pod's
    // fsGroup 100 (JupyterHub).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let no_fs_group = dir.path().join("no-fsgroup");
    kubelet_secret_file(&no_fs_group, mode, None);
    let fs_group = dir.path().join("fsgroup");
    if readable_as(&no_fs_group, 0, 0, &[]).is_none() {
        eprintln!("skipping the file-access half: needs root and setpriv");
        return;
    }
    kubelet_secret_file(&fs_group, mode, Some(100));
    assert_eq!(readable_as(&no_fs_group, 1000680000, 0, &[]), Some(true));
    assert_eq!(readable_as(&no_fs_group, 10001, 0, &[]), Some(true));
    assert_eq!(readable_as(&fs_group, 1000, 1000, &[100]), Some(true));
    // Not widened: another group, no fsGroup, cannot read.
    assert_eq!(readable_as(&no_fs_group, 1000, 1000, &[]), Some(false));
}

#[test]
fn a_group_that_cannot_read_the_credentials_is_warned_about() {
    let yaml = fixture("restricted-no-fsgroup.yaml").replace(
        "    runAsNonRoot: true\n",
        "    runAsNonRoot: true\n    runAsGroup: 1000\n",
    );
    let (_, warnings) = apply(&yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("fsGroup"), "{warnings:?}");
    // Group 0 as a supplementary group is enough.
    let yaml = yaml.replace(
        "    runAsGroup: 1000\n",
        "    runAsGroup: 1000\n    supplementalGroups: [0]\n",
    );
    let (_, warnings) = apply(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
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
    // The app's containers are its business; tether's add no violation.
    let ours: Vec<String> = restricted_violations(spec)
        .into_iter()
        .filter(|v| v.starts_with("tether-restore:") || v.starts_with("tether-sync-2:"))
        .collect();
    assert_eq!(ours, Vec::<String>::new());
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
    let (out, reports) =
        inject_yaml_report(&fixture("job.yaml"), &InjectorConfig::default()).unwrap();
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
    // The raise is not silent: recorded on the pod template, reported, warned.
    let changes: Value = serde_json::from_str(
        job["spec"]["template"]["metadata"]["annotations"]["tether.dev/changes"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        changes["terminationGracePeriodSeconds"],
        serde_json::json!([30, 70])
    );
    assert_eq!(
        changes["volumeMounts"],
        serde_json::json!(["train:/outputs"])
    );
    assert_eq!(reports.len(), 1);
    let line = reports[0].to_string();
    assert!(line.starts_with("document 1 (Job train): "), "{line}");
    assert!(
        line.contains("raised terminationGracePeriodSeconds from 30 to 70"),
        "{line}"
    );
    assert!(line.contains("added volumes tether-workdir"), "{line}");
    assert!(
        reports[0]
            .warnings
            .iter()
            .any(|w| w.contains("terminationGracePeriodSeconds")),
        "{:?}",
        reports[0].warnings
    );
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
        ["block-cloud-metadata", "tether-restore"]
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

/// The sidecar's retention: the injector's default policy unless the pod's
/// `tether.dev/retention` says otherwise, written into the sidecar's
/// environment (the restore container never gets it), and nothing for a
/// git remote, where retention does not apply.
#[test]
fn retention_reaches_the_sidecar_only_where_it_applies() {
    use kube_deploy::annotations::Retention;
    let retention_of = |yaml: &str, config: &InjectorConfig| {
        // What `tether manifests inject` prints is what kubectl reads
        // (YAML 1.1: an unquoted `off` would be `false`).
        let text = inject_yaml(yaml, config).unwrap();
        let pod = yaml_documents(&text).remove(0);
        let spec = pod_spec(&pod);
        let value = |c: &Value| {
            c["env"].as_array().and_then(|env| {
                env.iter()
                    .find(|e| e["name"] == "TETHER_RETENTION")
                    .map(|e| e["value"].as_str().unwrap().to_owned())
            })
        };
        assert_eq!(value(tether_containers(spec, "restore")[0]), None);
        assert_valid_for_kubernetes(&[("retention", text)]);
        value(tether_containers(spec, "sync")[0])
    };
    let hub = fixture("jupyterhub-singleuser.yaml");
    let default = InjectorConfig::default();
    assert_eq!(
        retention_of(&hub, &default).as_deref(),
        Some("within=1h,hourly=48,daily=14,weekly=8")
    );
    let off = InjectorConfig {
        retention: Retention::Off,
        ..InjectorConfig::default()
    };
    assert_eq!(retention_of(&hub, &off).as_deref(), Some("off"));
    let annotated = hub.replace(
        "tether.dev/mount-path:",
        "tether.dev/retention: \"last=10, daily=7\"\n    tether.dev/mount-path:",
    );
    assert_ne!(annotated, hub);
    assert_eq!(
        retention_of(&annotated, &off).as_deref(),
        Some("daily=7,last=10")
    );
    // A bad value is refused naming the annotation.
    let bad = hub.replace(
        "tether.dev/mount-path:",
        "tether.dev/retention: \"daily=0\"\n    tether.dev/mount-path:",
    );
    let e = inject_yaml(&bad, &default).unwrap_err().to_string();
    assert!(
        e.contains("tether.dev/retention") && e.contains("daily=0"),
        "{e}"
    );
    // git: nothing set.
    let git = r#"apiVersion: v1
kind: Pod
metadata:
  name: nb
  annotations:
    tether.dev/inject: "true"
    tether.dev/remote: git://git.example.com/notes.git
    tether.dev/mount-path: /home/jovyan
spec:
  containers:
  - name: app
    image: jupyter/base-notebook
"#;
    assert_eq!(retention_of(git, &default), None);
}
