//! Notebook → app, end to end without a cluster: `tether manifests app`
//! renders the manifests, then this test runs what they describe, in
//! order, on this machine — the init containers' `tether restore --path`
//! from the SeaweedFS remote and `tether convert`, then the app container's
//! command with a real Dash (PyPI, from scripts/testbed/dash.sh) — and
//! asks the app over HTTP for the notebook's content. Then `--follow`: the
//! sidecar's `tether follow`, a changed notebook pushed, the link swapped
//! atomically under a reader that never sees a mix, the app restarted as
//! its liveness probe demands, and serving the new content.
//!
//! Paths in the manifests (`/srv/app`, `/tmp`) are mapped into a scratch
//! directory; everything else (arguments, environment, working directory,
//! the probe's shell command) is taken from the YAML as it is.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;
use sync_core::testkit::testbed_var;

/// A notebook as Jupyter writes it (nbformat 4.5): markdown, a magic, a
/// shell escape, and a Dash app whose heading is `heading`.
fn notebook(heading: &str) -> String {
    let cells = serde_json::json!([
        {"cell_type": "markdown", "id": "intro", "metadata": {},
         "source": ["# Sales dashboard\n", "Written in JupyterHub, deployed by tether."]},
        {"cell_type": "code", "id": "setup", "metadata": {}, "execution_count": 1, "outputs": [],
         "source": ["%pip install dash\n", "!ls data\n", "import os\n", "from dash import Dash, html"]},
        {"cell_type": "code", "id": "app", "metadata": {}, "execution_count": 2,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}],
         "source": [
            "greeting = open('data/greeting.txt').read().strip()\n",
            "app = Dash(__name__)\n",
            format!("app.layout = html.Div([html.H1({heading:?}), html.P(greeting)])\n"),
            "if __name__ == '__main__':\n",
            "    app.run(host='127.0.0.1', port=int(os.environ['PORT']), debug=False)"
         ]}
    ]);
    serde_json::to_string_pretty(&serde_json::json!({
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5
    }))
    .unwrap()
}

struct S3 {
    url: String,
    key: String,
    secret: String,
}

fn s3() -> Option<S3> {
    let endpoint = testbed_var("TETHER_TEST_S3_ENDPOINT")?;
    let key = testbed_var("TETHER_TEST_S3_ACCESS_KEY")?;
    let secret = testbed_var("TETHER_TEST_S3_SECRET_KEY")?;
    let bucket = testbed_var("TETHER_TEST_S3_BUCKET")?;
    let prefix = format!("notebook-app-{}-{}", std::process::id(), nanos());
    Some(S3 {
        url: format!("s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true"),
        key,
        secret,
    })
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `tether ARGS` with the S3 credentials the Secret would hold.
fn tether(sb: &Sandbox, s3: &S3, args: &[&str]) -> std::process::Output {
    with_credentials(&mut sb.tether(), s3)
        .args(args)
        .output()
        .unwrap()
}

fn with_credentials<'a>(c: &'a mut Command, s3: &S3) -> &'a mut Command {
    c.env("AWS_ACCESS_KEY_ID", &s3.key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret)
        .env("AWS_REGION", "us-east-1")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Maps the pod's paths into the scratch `pod` directory.
struct Pod {
    root: PathBuf,
}

impl Pod {
    fn map(&self, s: &str) -> String {
        let root = self.root.display().to_string();
        let pairs = [
            ("/srv/app", "srv/app"),
            ("/tmp/", "tmp/"),
            ("/var/lib/tether/state", "state"),
            ("/home/", "home/"),
        ];
        // Placeholders first, so a mapped path (under /tmp) is not mapped
        // again.
        let mut out = s.to_owned();
        for (i, (from, _)) in pairs.iter().enumerate() {
            out = out.replace(from, &format!("\u{1}{i}\u{1}"));
        }
        for (i, (_, to)) in pairs.iter().enumerate() {
            out = out.replace(&format!("\u{1}{i}\u{1}"), &format!("{root}/{to}"));
        }
        out
    }

    fn strings(&self, v: &Value) -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| self.map(s.as_str().unwrap())).collect())
            .unwrap_or_default()
    }

    /// The container's env from the manifest (values only; secrets come
    /// from `with_credentials`), mapped.
    fn env(&self, c: &Value) -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    self.map(e["value"].as_str()?),
                ))
            })
            .collect()
    }
}

fn containers<'a>(deployment: &'a Value, field: &str) -> Vec<&'a Value> {
    deployment["spec"]["template"]["spec"][field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Runs a tether container of the manifest to completion.
fn run_tether_container(sb: &Sandbox, s3: &S3, pod: &Pod, c: &Value) {
    assert_eq!(c["command"], serde_json::json!(["tether"]), "{c}");
    let args = pod.strings(&c["args"]);
    let mut cmd = sb.tether();
    with_credentials(&mut cmd, s3).envs(pod.env(c)).args(&args);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        c["name"],
        stderr(&out)
    );
}

/// Starts the app container: the manifest's command (with `python` from
/// the Dash venv), env and working directory.
fn start_app(pod: &Pod, c: &Value, python: &str, port: u16) -> Child {
    let mut argv = pod.strings(&c["command"]);
    for a in argv.iter_mut() {
        if a == "python" {
            *a = python.to_owned();
        }
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(pod.env(c))
        .env("PORT", port.to_string())
        .env("HOME", pod.root.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = c["workingDir"].as_str() {
        cmd.current_dir(pod.map(dir));
    }
    cmd.spawn().unwrap()
}

/// The app's layout as Dash serves it, once it answers.
fn layout(port: u16, containing: &str) -> String {
    wait_for(
        &format!("the app to serve {containing:?}"),
        Duration::from_secs(60),
        || {
            http_get(port, "/_dash-layout")
                .filter(|(status, body)| *status == 200 && body.contains(containing))
                .map(|(_, body)| body)
        },
    )
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn write_app(w: &Path, heading: &str, greeting: &str) {
    std::fs::create_dir_all(w.join("apps/sales/data")).unwrap();
    std::fs::write(w.join("apps/sales/app.ipynb"), notebook(heading)).unwrap();
    std::fs::write(w.join("apps/sales/data/greeting.txt"), greeting).unwrap();
}

fn newest_id(sb: &Sandbox, s3: &S3) -> String {
    let out = tether(sb, s3, &["history", "--from", &s3.url, "--limit", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_notebook_becomes_an_app_pinned_then_followed() {
    let (Some(s3), Some(python)) = (s3(), testbed_var("TETHER_TEST_DASH_PYTHON")) else {
        return;
    };
    let sb = Sandbox::new();
    let w = sb.path("w");
    write_app(&w, "Sales v1", "hello from the data folder");
    // Outside the app's folder: never restored into the app's pod.
    std::fs::create_dir_all(w.join("private")).unwrap();
    std::fs::write(w.join("private/diary.md"), "not for the app").unwrap();
    let out = tether(&sb, &s3, &["sync", "w", "--to", &s3.url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = newest_id(&sb, &s3);

    // --- pinned: the manifests, then what they describe ----------------
    let out = tether(
        &sb,
        &s3,
        &[
            "manifests",
            "app",
            "--name",
            "sales",
            "--remote",
            &s3.url,
            "--path",
            "apps/sales",
            "--entry",
            "app.ipynb",
            "--command",
            "python",
            "--credentials-secret",
            "sales-s3-read",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = documents(&stdout(&out));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    // The newest id at generation time, written into the manifest.
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["app.tether.dev/snapshot"],
        first.as_str()
    );
    let pod = Pod {
        root: sb.path("pod"),
    };
    std::fs::create_dir_all(pod.root.join("srv/app")).unwrap();
    std::fs::create_dir_all(pod.root.join("tmp")).unwrap();
    let inits = containers(deployment, "initContainers");
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tether-restore", "tether-convert"]);
    for c in &inits {
        run_tether_container(&sb, &s3, &pod, c);
    }
    let app_dir = pod.root.join("srv/app/current/apps/sales");
    assert!(app_dir.join("data/greeting.txt").is_file());
    assert!(
        !pod.root.join("srv/app/current/private").exists(),
        "--path restored more than the app's folder"
    );
    let script = std::fs::read_to_string(app_dir.join("app.py")).unwrap();
    assert!(
        script.contains("# tether: IPython syntax, not Python; commented out: %pip install dash")
    );
    assert!(script.contains("# # Sales dashboard"), "{script}");

    let app = containers(deployment, "containers")[0].clone();
    let port = free_port();
    let child = start_app(&pod, &app, &python, port);
    let body = layout(port, "Sales v1");
    assert!(body.contains("hello from the data folder"), "{body}");
    stop(child);

    // --- follow: the sidecar, a new snapshot, an atomic swap -----------
    let out = tether(
        &sb,
        &s3,
        &[
            "manifests",
            "app",
            "--name",
            "sales",
            "--remote",
            &s3.url,
            "--path",
            "apps/sales",
            "--follow",
            "--interval",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = documents(&stdout(&out));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let follow_pod = Pod {
        root: sb.path("follow-pod"),
    };
    std::fs::create_dir_all(follow_pod.root.join("srv/app")).unwrap();
    std::fs::create_dir_all(follow_pod.root.join("tmp")).unwrap();
    let sidecar = containers(deployment, "initContainers")[0].clone();
    assert_eq!(sidecar["name"], "tether-follow");
    let http = free_port();
    let args: Vec<String> = follow_pod
        .strings(&sidecar["args"])
        .into_iter()
        .map(|a| a.replace("0.0.0.0:9478", &format!("127.0.0.1:{http}")))
        .collect();
    let mut cmd = sb.tether();
    with_credentials(&mut cmd, &s3)
        .envs(follow_pod.env(&sidecar))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut follower = cmd.spawn().unwrap();
    // The startup probe: the app starts once /readyz answers 200.
    let probe = sidecar["startupProbe"]["httpGet"]["path"].as_str().unwrap();
    wait_for("the first sync", Duration::from_secs(60), || {
        http_get(http, probe).filter(|(s, _)| *s == 200)
    });
    let link = follow_pod.root.join("srv/app/current");
    let app = containers(deployment, "containers")[0].clone();
    let port = free_port();
    let mut child = start_app(&follow_pod, &app, &python, port);
    layout(port, "Sales v1");

    // A reader that resolves the link once per round, as a process that
    // enters the directory does, and checks the tree is one version.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, link) = (Arc::clone(&done), link.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) || rounds == 0 {
                let real = std::fs::canonicalize(&link).expect("the link always resolves");
                let dir = real.join("apps/sales");
                let nb = std::fs::read_to_string(dir.join("app.ipynb")).expect("notebook");
                let script = std::fs::read_to_string(dir.join("app.py")).expect("script");
                let greeting =
                    std::fs::read_to_string(dir.join("data/greeting.txt")).expect("greeting");
                let version = if nb.contains("Sales v1") { 1 } else { 2 };
                assert!(
                    script.contains(&format!("Sales v{version}")),
                    "script of another version than its notebook"
                );
                let expected = if version == 1 {
                    "hello from the data folder"
                } else {
                    "new numbers"
                };
                assert_eq!(greeting, expected, "a mix of versions in {}", dir.display());
                seen.insert(version);
                rounds += 1;
            }
            (seen, rounds)
        })
    };

    write_app(&w, "Sales v2", "new numbers");
    let out = tether(&sb, &s3, &["sync", "w", "--to", &s3.url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = newest_id(&sb, &s3);
    assert_ne!(first, second);
    wait_for("the swap", Duration::from_secs(60), || {
        let target = std::fs::read_link(&link).ok()?;
        target.ends_with(&second).then_some(())
    });
    // Let the reader run on the new release too, then stop it.
    wait_for("metrics of the swap", Duration::from_secs(10), || {
        let (_, text) = http_get(http, "/metrics")?;
        (metric(&text, "tether_follow_sync_count_total{status=\"success\"}")? >= 2.0).then_some(())
    });
    done.store(true, Ordering::Relaxed);
    let (seen, rounds) = reader.join().expect("the reader saw a mix");
    assert!(rounds > 0);
    assert!(seen.contains(&2), "the reader never saw the new release");

    // The kubelet's part: the liveness probe fails once `current` moved,
    // so the app container is restarted — into the new release.
    let check = follow_pod.strings(&app["livenessProbe"]["exec"]["command"]);
    let alive = Command::new(&check[0]).args(&check[1..]).status().unwrap();
    assert!(
        !alive.success(),
        "the liveness probe must ask for a restart"
    );
    stop(child);
    child = start_app(&follow_pod, &app, &python, port);
    let body = layout(port, "Sales v2");
    assert!(body.contains("new numbers"), "{body}");
    let alive = Command::new(&check[0]).args(&check[1..]).status().unwrap();
    assert!(
        alive.success(),
        "the restarted app runs the current release"
    );
    stop(child);
    sigterm(&follower);
    let _ = follower.wait();
}

/// Bad input: named, exit 2, nothing printed on stdout.
#[test]
fn bad_input_is_refused_with_exit_2() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    write_app(&w, "Sales v1", "hi");
    std::fs::create_dir_all(w.join("apps/broken")).unwrap();
    std::fs::write(w.join("apps/broken/app.ipynb"), "{\"cells\": [").unwrap();
    let url = sb.url("store");
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let app = |extra: &[&str]| {
        let mut args = vec![
            "manifests",
            "app",
            "--name",
            "sales",
            "--remote",
            url.as_str(),
        ];
        args.extend(extra);
        sb.run(&args)
    };
    for (extra, expected) in [
        (
            &["--path", "apps/broken"][..],
            "--entry apps/broken/app.ipynb at ",
        ),
        (
            &["--path", "apps/sales", "--entry", "../broken/app.ipynb"],
            "--entry: \"../broken/app.ipynb\" leaves the app's folder",
        ),
        (
            &["--path", "apps/../private"],
            "--path: \"apps/../private\" leaves the app's folder",
        ),
        (
            &["--path", "apps/sales", "--at", "123-deadbeef"],
            "--at 123-deadbeef: no snapshot",
        ),
        (&["--path", "apps/missing"], "--path apps/missing: "),
        (
            &["--path", "apps/sales", "--entry", "main.py"],
            "has no file apps/sales/main.py",
        ),
    ] {
        let out = app(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{extra:?}");
    }
    let out = app(&["--path", "apps/broken"]);
    assert!(
        stderr(&out).contains("not a valid notebook"),
        "{}",
        stderr(&out)
    );
    // And the good case prints the manifests.
    let out = app(&["--path", "apps/sales"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kind: Deployment"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--to GIT-URL`: the manifests are committed into a GitOps repository
/// over smart HTTP with a token, next to what it already holds, as a
/// fast-forward (never forced); the same manifests again commit nothing.
#[test]
fn manifests_are_committed_into_a_gitops_repository() {
    let (Some(base), Some(root), Some(token_file)) = (
        testbed_var("TETHER_TEST_GIT_HTTP_URL_BASE"),
        testbed_var("TETHER_TEST_GIT_HTTP_ROOT"),
        testbed_var("TETHER_TEST_GIT_HTTP_TOKEN_FILE"),
    ) else {
        return;
    };
    let sb = Sandbox::new();
    write_app(&sb.path("w"), "Sales v1", "hi");
    let store = sb.url("store");
    let out = sb.run(&["sync", "w", "--to", &store, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let name = format!("gitops-{}-{}.git", std::process::id(), nanos());
    let bare = Path::new(&root).join(&name);
    let out = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    let repo = format!("{base}/{name}");
    // The platform team's repository already holds other apps.
    std::fs::create_dir_all(sb.path("gitops/apps/other")).unwrap();
    std::fs::write(sb.path("gitops/apps/other/other.yaml"), "kind: ConfigMap\n").unwrap();
    let out = sb.run(&[
        "sync",
        "gitops",
        "--to",
        &repo,
        "--once",
        "--token-file",
        &token_file,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = git(&bare, &["rev-parse", "main"]);

    let generate = |replicas: &str| {
        sb.run(&[
            "manifests",
            "app",
            "--name",
            "sales",
            "--remote",
            &store,
            "--path",
            "apps/sales",
            "--replicas",
            replicas,
            "--to",
            &repo,
            "--token-file",
            &token_file,
        ])
    };
    let out = generate("1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("committed apps/sales/sales.yaml"),
        "{}",
        stdout(&out)
    );
    let committed = git(&bare, &["show", "main:apps/sales/sales.yaml"]);
    assert!(committed.contains("kind: Deployment"), "{committed}");
    assert!(committed.contains("replicas: 1"), "{committed}");
    assert_eq!(
        git(&bare, &["show", "main:apps/other/other.yaml"]),
        "kind: ConfigMap\n"
    );
    // A fast-forward: the previous head is the new commit's parent.
    assert_eq!(git(&bare, &["rev-parse", "main^"]), before);

    let out = generate("1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already up to date"),
        "{}",
        stdout(&out)
    );
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]).trim(), "2");

    let out = generate("3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(git(&bare, &["show", "main:apps/sales/sales.yaml"]).contains("replicas: 3"));
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]).trim(), "3");

    // Not a git URL: refused before anything is written.
    let out = sb.run(&[
        "manifests",
        "app",
        "--name",
        "sales",
        "--remote",
        &store,
        "--path",
        "apps/sales",
        "--to",
        &store,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--to must be a git repository URL"),
        "{}",
        stderr(&out)
    );
}
