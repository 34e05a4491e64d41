//! Checks the API server and the kubelet would make, written out for
//! tests: label selectors (which pods a webhook's `objectSelector` sends),
//! the `restricted` Pod Security Standard, and the ownership and mode the
//! kubelet gives a Secret volume's files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

/// Whether a `LabelSelector` (matchLabels + matchExpressions) matches a
/// label map, as the API server evaluates `objectSelector`.
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = selector["matchLabels"]
        .as_object()
        .map(|m| m.iter().all(|(k, v)| label(k) == v.as_str()))
        .unwrap_or(true);
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap() {
                    "In" => label(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    other => panic!("unknown operator {other}"),
                }
            })
        })
        .unwrap_or(true);
    labels_ok && expressions_ok
}

fn all_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
        .collect()
}

/// Violations of the `restricted` Pod Security Standard (latest) by a pod
/// spec; empty when it would be admitted in a namespace enforcing it.
pub fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod_sc = &spec["securityContext"];
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[field] == true {
            out.push(format!("spec.{field}"));
        }
    }
    const ALLOWED_VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        for kind in kinds {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                out.push(format!("volume {} is {kind}", v["name"]));
            }
        }
    }
    let pod_non_root = pod_sc["runAsNonRoot"] == true;
    let pod_seccomp = pod_sc["seccompProfile"]["type"].as_str();
    if pod_sc["runAsUser"] == 0 {
        out.push("spec.securityContext.runAsUser 0".into());
    }
    for c in all_containers(spec) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            out.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            out.push(format!("{name}: allowPrivilegeEscalation not false"));
        }
        if !(sc["runAsNonRoot"] == true || (pod_non_root && sc["runAsNonRoot"] != false)) {
            out.push(format!("{name}: runAsNonRoot not true"));
        }
        if sc["runAsUser"] == 0 {
            out.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{name}: seccompProfile {seccomp:?}"));
        }
        let drop = sc["capabilities"]["drop"].as_array();
        if !drop.is_some_and(|d| d.iter().any(|c| c == "ALL")) {
            out.push(format!("{name}: capabilities do not drop ALL"));
        }
        for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if cap != "NET_BIND_SERVICE" {
                out.push(format!("{name}: adds capability {cap}"));
            }
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port.get("hostPort").is_some_and(|p| p != 0) {
                out.push(format!("{name}: hostPort"));
            }
        }
    }
    out
}

/// Writes a file the way the kubelet materialises a Secret volume's key
/// (`pkg/volume/secret` + `SetVolumeOwnership`): mode `default_mode`, owned
/// by root:root; with an `fsGroup`, group fsGroup and `mode | 0440`
/// (Secret volumes are read-only). Needs root.
pub fn kubelet_secret_file(path: &std::path::Path, default_mode: u32, fs_group: Option<u32>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "AWS_SECRET_ACCESS_KEY=example\n").unwrap();
    let (group, mode) = match fs_group {
        Some(g) => (g, default_mode | 0o440),
        None => (0, default_mode),
    };
    std::os::unix::fs::chown(path, Some(0), Some(group)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether `cat path` succeeds as `uid` with primary group `gid` and the
/// given supplementary groups (setpriv, as the container runtime sets
/// them: no passwd entry needed). `None` when not root or setpriv is missing.
pub fn readable_as(path: &std::path::Path, uid: u32, gid: u32, groups: &[u32]) -> Option<bool> {
    if !nix_is_root() {
        return None;
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    let out = cmd.arg("cat").arg(path).output().ok()?;
    Some(out.status.success())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
