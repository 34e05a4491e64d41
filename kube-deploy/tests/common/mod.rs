//! Helpers shared by kube-deploy's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
pub use sync_core::testkit::testbed_var;

/// Kubernetes versions every generated manifest must validate against:
/// 1.29 (the first with native sidecars on by default) and the newest
/// version bundled with kubernetes-validate (its default, `None`).
pub const KUBERNETES_VERSIONS: [Option<&str>; 2] = [Some("1.29.0"), None];

/// Reads a file from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Parses a multi-document YAML stream into JSON values (skipping empty
/// documents).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs `kubernetes-validate --strict` on each `(name, yaml)` for every
/// version in [`KUBERNETES_VERSIONS`]. `None` outside the test bed (the
/// test is skipped), else `Err` with the tool's output if any resource was
/// refused or not seen.
pub fn kubernetes_validate(documents: &[(&str, String)]) -> Option<Result<(), String>> {
    let tool = testbed_var("TETHER_TEST_KUBERNETES_VALIDATE")?;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (name, yaml) in documents {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write manifest");
        files.push(path);
    }
    let expected: usize = documents.iter().map(|(_, y)| yaml_documents(y).len()).sum();
    for version in KUBERNETES_VERSIONS {
        let mut command = Command::new(&tool);
        command.arg("--strict");
        if let Some(version) = version {
            command.args(["-k", version]);
        }
        let output = command
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // One "passed for resource" line per resource: make sure it saw
        // them all, not only that it exited 0.
        let passed = text.matches(" passed for resource ").count();
        if !output.status.success() || text.contains("ERROR") || passed != expected {
            return Some(Err(format!(
                "kubernetes-validate --strict (Kubernetes {}), {passed} of {expected} passed:\n{text}",
                version.unwrap_or("newest bundled")
            )));
        }
    }
    Some(Ok(()))
}

/// [`kubernetes_validate`], failing the test on any refusal.
pub fn assert_valid_for_kubernetes(documents: &[(&str, String)]) {
    if let Some(Err(e)) = kubernetes_validate(documents) {
        panic!("{e}");
    }
}

/// The pod spec inside a Pod or workload document.
pub fn pod_spec(document: &Value) -> &Value {
    let pointer = match document["kind"].as_str() {
        Some("Pod") => "/spec",
        Some("CronJob") => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    document.pointer(pointer).expect("pod spec")
}

fn containers<'a>(spec: &'a Value, field: &str) -> Vec<&'a Value> {
    spec[field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Containers (init and regular) running `tether <verb>`.
pub fn tether_containers<'a>(spec: &'a Value, verb: &str) -> Vec<&'a Value> {
    containers(spec, "initContainers")
        .into_iter()
        .chain(containers(spec, "containers"))
        .filter(|c| c["command"] == serde_json::json!(["tether"]) && c["args"][0] == verb)
        .collect()
}

/// Names of the init containers, in order.
pub fn init_container_names(spec: &Value) -> Vec<String> {
    containers(spec, "initContainers")
        .into_iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Renders `resources` (file name, YAML) with `kubectl kustomize` and
/// `kustomization` (the resources list is added). `None` without kubectl
/// in the test bed; panics if kustomize refuses them.
pub fn kustomize(resources: &[(&str, String)], kustomization: &str) -> Option<String> {
    let kubectl = testbed_var("TETHER_TEST_KUBECTL")?;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for (name, yaml) in resources {
        std::fs::write(dir.path().join(name), yaml).expect("write resource");
        text.push_str(&format!("  - {name}\n"));
    }
    text.push_str(kustomization);
    std::fs::write(dir.path().join("kustomization.yaml"), text).expect("write kustomization");
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}
