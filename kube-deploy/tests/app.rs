//! `tether manifests app`: the generated objects validate for Kubernetes
//! 1.29 and the newest bundled schema (`kubernetes-validate --strict`) and
//! render through `kubectl kustomize`, for several option sets; the pinned
//! id is in the manifest, no service account token is mounted, every
//! container passes the restricted profile with a read-only root
//! filesystem, and the app is ready only when its port answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/policy.rs"]
mod policy;

use common::*;
use kube_deploy::annotations::ResourceOverrides;
use kube_deploy::app::{AppConfig, AppSource, IngressConfig, app_manifests};
use policy::*;
use serde_json::Value;

fn pinned() -> AppConfig {
    AppConfig {
        name: "sales-dashboard".into(),
        remote: "s3://notebooks/users/alice".into(),
        source: AppSource::Pinned("1796103268244-01dcbbcb".into()),
        path: Some("apps/sales".into()),
        entry: "app.ipynb".into(),
        command: vec!["python".into()],
        credentials_secret: Some("alice-s3-readonly".into()),
        ..AppConfig::default()
    }
}

/// Option sets a user would combine.
fn option_sets() -> Vec<(&'static str, AppConfig)> {
    vec![
        ("pinned", pinned()),
        (
            "pinned-everything",
            AppConfig {
                namespace: Some("apps".into()),
                command: vec![
                    "streamlit".into(),
                    "run".into(),
                    "{script}".into(),
                    "--server.port=8501".into(),
                ],
                port: 8501,
                readiness_path: "/_stcore/health".into(),
                requirements: Some("requirements.txt".into()),
                resources: ResourceOverrides {
                    cpu_request: Some("250m".into()),
                    memory_request: Some("512Mi".into()),
                    cpu_limit: Some("2".into()),
                    memory_limit: Some("2Gi".into()),
                },
                replicas: 2,
                ingress: Some(IngressConfig {
                    host: "sales.apps.example.com".into(),
                    class: Some("nginx".into()),
                    tls_secret: Some("sales-tls".into()),
                }),
                network_policy: true,
                ..pinned()
            },
        ),
        (
            "follow",
            AppConfig {
                source: AppSource::Follow {
                    interval_seconds: 15,
                },
                entry: "dash_app.py".into(),
                path: None,
                run_as_user: None,
                ingress: Some(IngressConfig {
                    host: "dash.example.com".into(),
                    class: None,
                    tls_secret: None,
                }),
                network_policy: true,
                ..pinned()
            },
        ),
        (
            "follow-git",
            AppConfig {
                remote: "https://git.example.com/alice/notebooks.git?branch=main".into(),
                source: AppSource::Follow {
                    interval_seconds: 60,
                },
                requirements: Some("requirements.txt".into()),
                credentials_secret: Some("alice-git-token".into()),
                ..pinned()
            },
        ),
    ]
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap()
}

fn container<'a>(spec: &'a Value, field: &str, name: &str) -> &'a Value {
    spec[field]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {field} {name} in {spec}"))
}

#[test]
fn every_option_set_validates_and_renders_with_kustomize() {
    let sets = option_sets();
    let rendered: Vec<(&str, String)> = sets
        .iter()
        .map(|(name, c)| (*name, app_manifests(c).unwrap()))
        .collect();
    assert_valid_for_kubernetes(&rendered);
    for (name, yaml) in &rendered {
        let file = format!("{name}.yaml");
        if let Some(out) = kustomize(&[(&file, yaml.clone())], "commonLabels:\n  team: data\n") {
            let docs = yaml_documents(&out);
            assert_eq!(docs.len(), yaml_documents(yaml).len(), "{name}");
            assert!(
                docs.iter()
                    .all(|d| d["metadata"]["labels"]["team"] == "data")
            );
            assert_valid_for_kubernetes(&[(name, out)]);
        }
    }
}

#[test]
fn objects_and_their_order_follow_the_options() {
    let kinds = |c: &AppConfig| -> Vec<String> {
        yaml_documents(&app_manifests(c).unwrap())
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let sets = option_sets();
    assert_eq!(kinds(&sets[0].1), ["Deployment", "Service"]);
    assert_eq!(
        kinds(&sets[1].1),
        ["Deployment", "Service", "Ingress", "NetworkPolicy"]
    );
    let docs = yaml_documents(&app_manifests(&sets[1].1).unwrap());
    let ingress = find(&docs, "Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "sales-tls");
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "sales.apps.example.com"
    );
    let policy = find(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        serde_json::json!([{"port": 8501, "protocol": "TCP"}])
    );
    let docs_follow = yaml_documents(&app_manifests(&sets[2].1).unwrap());
    let ports = &find(&docs_follow, "NetworkPolicy")["spec"]["ingress"][0]["ports"];
    assert_eq!(ports[1]["port"], 9478, "the follow sidecar's metrics");
    assert!(selector_matches(
        &policy["spec"]["podSelector"],
        &find(&docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ));
}

#[test]
fn the_pinned_id_is_in_the_manifest_and_restored_by_path() {
    let docs = yaml_documents(&app_manifests(&pinned()).unwrap());
    let deployment = find(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["app.tether.dev/snapshot"],
        "1796103268244-01dcbbcb"
    );
    let spec = pod_spec(deployment);
    assert_eq!(
        init_container_names(spec),
        ["tether-restore", "tether-convert"]
    );
    let restore = container(spec, "initContainers", "tether-restore");
    assert_eq!(
        restore["args"],
        serde_json::json!([
            "restore",
            "/srv/app/current",
            "--from",
            "s3://notebooks/users/alice",
            "--at",
            "1796103268244-01dcbbcb",
            "--existing",
            "overwrite",
            "--path",
            "apps/sales"
        ])
    );
    // Credentials from the Secret: keys by reference, never values.
    let env = restore["env"].as_array().unwrap();
    let key = env
        .iter()
        .find(|e| e["name"] == "AWS_SECRET_ACCESS_KEY")
        .unwrap();
    assert_eq!(
        key["valueFrom"]["secretKeyRef"]["name"],
        "alice-s3-readonly"
    );
    assert!(key.get("value").is_none());
    let convert = container(spec, "initContainers", "tether-convert");
    assert_eq!(
        convert["args"],
        serde_json::json!([
            "convert",
            "/srv/app/current/apps/sales/app.ipynb",
            "--output",
            "/srv/app/current/apps/sales/app.py"
        ])
    );
    let app = container(spec, "containers", "app");
    assert_eq!(app["command"], serde_json::json!(["python", "app.py"]));
    assert_eq!(app["workingDir"], "/srv/app/current/apps/sales");
}

#[test]
fn pods_are_restricted_without_a_token_and_ready_on_the_app_port() {
    for (name, config) in option_sets() {
        let docs = yaml_documents(&app_manifests(&config).unwrap());
        let deployment = find(&docs, "Deployment");
        let spec = pod_spec(deployment);
        assert_eq!(restricted_violations(spec), Vec::<String>::new(), "{name}");
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
        // One UID for the pod: the app reads what tether restored.
        assert_eq!(
            spec["securityContext"]["runAsUser"],
            config.run_as_user.map_or(Value::Null, Value::from),
            "{name}"
        );
        for field in ["initContainers", "containers"] {
            for c in spec[field].as_array().unwrap() {
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"], true,
                    "{name} {}",
                    c["name"]
                );
                // Every writable place is an emptyDir.
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    let volume = spec["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == m["name"])
                        .unwrap();
                    assert!(
                        volume.get("emptyDir").is_some() || m["readOnly"] == true,
                        "{name}: {m} is writable and not an emptyDir"
                    );
                }
            }
        }
        let app = container(spec, "containers", "app");
        let port = app["ports"][0]["containerPort"].clone();
        assert_eq!(port, config.port, "{name}");
        assert_eq!(app["readinessProbe"]["httpGet"]["port"], "http", "{name}");
        assert_eq!(
            app["readinessProbe"]["httpGet"]["path"], config.readiness_path,
            "{name}"
        );
        // The app never writes its own code.
        let code = app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/srv/app")
            .unwrap();
        assert_eq!(code["readOnly"], true, "{name}");
        let service = find(&docs, "Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    }
}

#[test]
fn follow_runs_a_gating_sidecar_and_restarts_the_app_on_a_new_release() {
    let (_, config) = option_sets().remove(3);
    let docs = yaml_documents(&app_manifests(&config).unwrap());
    let deployment = find(&docs, "Deployment");
    assert!(
        deployment["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none(),
        "a followed app has no pinned id"
    );
    let spec = pod_spec(deployment);
    assert_eq!(init_container_names(spec), ["tether-follow", "pip-install"]);
    let follow = container(spec, "initContainers", "tether-follow");
    assert_eq!(follow["restartPolicy"], "Always");
    assert_eq!(
        follow["args"],
        serde_json::json!([
            "follow",
            "/srv/app",
            "--from",
            "https://git.example.com/alice/notebooks.git?branch=main",
            "--path",
            "apps/sales",
            "--convert",
            "apps/sales/app.ipynb",
            "--interval",
            "60s",
            "--http-bind",
            "0.0.0.0:9478"
        ])
    );
    // The app (and pip) start only after the first sync is in place.
    assert_eq!(follow["startupProbe"]["httpGet"]["path"], "/readyz");
    assert!(follow.get("readinessProbe").is_none());
    let env = follow["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "TETHER_TOKEN_FILE"));
    let pip = container(spec, "initContainers", "pip-install");
    let pip_command = pip["command"].as_array().unwrap();
    assert_eq!(
        pip_command.last().unwrap(),
        "/srv/app/current/apps/sales/requirements.txt"
    );
    let app = container(spec, "containers", "app");
    assert_eq!(app["command"][0], "sh");
    assert!(
        app["livenessProbe"]["exec"]["command"][2]
            .as_str()
            .unwrap()
            .contains("readlink /srv/app/current")
    );
    let env = app["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "PYTHONPATH" && e["value"] == "/srv/pip")
    );
}

#[test]
fn bad_settings_are_refused_with_the_flag_named() {
    let cases: Vec<(AppConfig, &str)> = vec![
        (
            AppConfig {
                path: Some("apps/../../etc".into()),
                ..pinned()
            },
            "--path",
        ),
        (
            AppConfig {
                entry: "../other/app.ipynb".into(),
                ..pinned()
            },
            "--entry",
        ),
        (
            AppConfig {
                entry: "/etc/passwd.py".into(),
                ..pinned()
            },
            "--entry",
        ),
        (
            AppConfig {
                entry: "app.txt".into(),
                ..pinned()
            },
            "--entry",
        ),
        (
            AppConfig {
                source: AppSource::Pinned("x y".into()),
                ..pinned()
            },
            "--at",
        ),
        (
            AppConfig {
                remote: "memory://".into(),
                ..pinned()
            },
            "--remote",
        ),
        (
            AppConfig {
                port: 80,
                ..pinned()
            },
            "--port",
        ),
        (
            AppConfig {
                run_as_user: Some(0),
                ..pinned()
            },
            "--run-as-user",
        ),
        (
            AppConfig {
                name: "Sales".into(),
                ..pinned()
            },
            "--name",
        ),
    ];
    for (config, flag) in cases {
        let err = app_manifests(&config).unwrap_err().to_string();
        assert!(err.starts_with(flag), "{flag}: {err}");
    }
}
