//! `tether.dev/encryption-key-secret: "<secret>/<key>"`: that one Secret
//! key mounted read-only as a file into the restore and sync containers,
//! named by `TETHER_ENCRYPTION_KEY_FILE`; malformed values refused at
//! admission (and by `tether manifests inject`) naming the annotation.
//! Results checked by `kubernetes-validate --strict` when the test bed has
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/policy.rs"]
mod policy;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube_deploy::inject::{InjectError, InjectionOutcome, InjectorConfig, inject};
use kube_deploy::manifests::inject_yaml;
use policy::*;
use serde_json::Value;

const ANNOTATION: &str = "tether.dev/encryption-key-secret";

fn with_key(fixture_name: &str, value: &str) -> String {
    let yaml = fixture(fixture_name);
    let anchor = "    tether.dev/mount-path:";
    assert!(yaml.contains(anchor));
    yaml.replacen(
        anchor,
        &format!("    {ANNOTATION}: \"{value}\"\n{anchor}"),
        1,
    )
}

fn injected(yaml: &str) -> Result<Value, InjectError> {
    let mut document = yaml_documents(yaml).remove(0);
    let pod: Pod = serde_json::from_value(document.clone()).unwrap();
    match inject(&pod, &InjectorConfig::default())? {
        InjectionOutcome::Patched { patch, .. } => {
            json_patch::patch(&mut document, &patch).unwrap();
            Ok(document)
        }
        other => panic!("expected a patch, got {other:?}"),
    }
}

#[test]
fn the_key_is_one_read_only_file_in_both_tether_containers() {
    for fixture_name in ["jupyterhub-singleuser.yaml", "restricted-no-fsgroup.yaml"] {
        let pod = injected(&with_key(fixture_name, "alice-tether/tether.key")).unwrap();
        let spec = pod_spec(&pod);
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tether-encryption-key")
            .expect("the key's volume");
        assert_eq!(volume["secret"]["secretName"], "alice-tether");
        assert_eq!(
            volume["secret"]["items"],
            serde_json::json!([{"key": "tether.key", "path": "key"}])
        );
        let mode = volume["secret"]["defaultMode"].as_u64().unwrap();
        assert_eq!(mode & 0o007, 0, "never world-readable");
        assert_eq!(mode & 0o222, 0, "read-only");
        for verb in ["restore", "sync"] {
            let c = tether_containers(spec, verb)[0];
            let var = c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "TETHER_ENCRYPTION_KEY_FILE")
                .unwrap_or_else(|| panic!("{verb}: no TETHER_ENCRYPTION_KEY_FILE"));
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "tether-encryption-key")
                .unwrap();
            assert_eq!(mount["readOnly"], true);
            assert_eq!(
                var["value"].as_str().unwrap(),
                format!("{}/key", mount["mountPath"].as_str().unwrap())
            );
        }
        // The app containers do not see the key.
        for app in spec["containers"].as_array().unwrap() {
            let mounts = app["volumeMounts"].as_array().cloned().unwrap_or_default();
            assert!(mounts.iter().all(|m| m["name"] != "tether-encryption-key"));
        }
        let changes: Value = serde_json::from_str(
            pod["metadata"]["annotations"]["tether.dev/changes"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(
            changes["volumes"]
                .as_array()
                .unwrap()
                .contains(&Value::from("tether-encryption-key")),
            "{changes}"
        );
        if fixture_name.starts_with("restricted") {
            assert_eq!(restricted_violations(spec), Vec::<String>::new());
        }
        let yaml = serde_norway::to_string(&pod).unwrap();
        assert_valid_for_kubernetes(&[("encrypted", yaml)]);
    }
}

#[test]
fn malformed_values_are_refused_naming_the_annotation() {
    for bad in [
        "no-slash",
        "Bad_Secret/key",
        "secret/",
        "/key",
        "secret/a/b",
        "secret/key with space",
    ] {
        let yaml = with_key("jupyterhub-singleuser.yaml", bad);
        match injected(&yaml) {
            Err(InjectError::Annotation(e)) => {
                assert_eq!(e.key, ANNOTATION, "{bad}: {e}");
            }
            other => panic!("{bad}: expected an annotation error, got {other:?}"),
        }
        let e = inject_yaml(&yaml, &InjectorConfig::default()).unwrap_err();
        assert!(e.to_string().contains(ANNOTATION), "{bad}: {e}");
    }
    // The mirror layout and git remotes are never encrypted.
    let mirror = with_key("jupyterhub-singleuser.yaml", "s/k")
        .replace("?layout=snapshots", "?layout=mirror");
    let e = inject_yaml(&mirror, &InjectorConfig::default()).unwrap_err();
    assert!(e.to_string().contains("mirror layout"), "{e}");
}
