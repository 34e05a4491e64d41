//! The follower as a library (`examples::follow`): the link moves only to
//! complete, converted releases; a failed sync leaves it where it was and
//! is counted; old releases are pruned; readiness waits for the first sync.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use examples::follow::{FollowError, FollowOptions, Follower, RELEASES, SyncOutcome};
use examples::remote::{RemoteOptions, open_backend};

fn push(sb: &Sandbox, url: &str) {
    let out = sb.run(&["sync", "w", "--to", url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn write_notebook(w: &Path, body: &str) {
    std::fs::create_dir_all(w.join("app")).unwrap();
    std::fs::write(w.join("app/app.ipynb"), body).unwrap();
}

fn notebook(text: &str) -> String {
    serde_json::json!({
        "cells": [{"cell_type": "code", "id": "a", "metadata": {}, "execution_count": null,
                   "outputs": [], "source": [format!("print({text:?})")]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5
    })
    .to_string()
}

fn releases(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(RELEASES))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_link_moves_only_to_complete_releases() {
    let sb = Sandbox::new();
    let url = sb.url("store");
    std::fs::create_dir_all(sb.path("store")).unwrap();
    let backend = open_backend(&url, &RemoteOptions::default(), &sb.path("state")).unwrap();
    let root = sb.path("follow");
    std::fs::create_dir_all(&root).unwrap();
    let mut options = FollowOptions::new(&root);
    options.paths = vec![sync_core::RelPath::new("app").unwrap()];
    options.convert = Some(sync_core::RelPath::new("app/app.ipynb").unwrap());
    let follower = Follower::new(backend, options);
    let monitor = follower.monitor();

    // Nothing pushed yet: nothing to serve, not ready.
    assert_eq!(
        follower.sync_once().await.unwrap(),
        SyncOutcome::EmptyRemote
    );
    assert!(monitor.ready().is_err());

    write_notebook(&sb.path("w"), &notebook("v1"));
    std::fs::write(sb.path("w/outside.txt"), "not followed").unwrap();
    push(&sb, &url);
    let SyncOutcome::Swapped(first) = follower.sync_once().await.unwrap() else {
        panic!("no swap")
    };
    assert!(monitor.ready().is_ok());
    let link = root.join("current");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new(RELEASES).join(&first)
    );
    let script = std::fs::read_to_string(link.join("app/app.py")).unwrap();
    assert!(script.contains("print(\"v1\")"), "{script}");
    assert!(!link.join("outside.txt").exists(), "--path followed more");
    assert_eq!(
        follower.sync_once().await.unwrap(),
        SyncOutcome::Unchanged(first.clone())
    );

    // A notebook that does not parse: the link stays on the last good one.
    write_notebook(&sb.path("w"), "{\"cells\": [");
    push(&sb, &url);
    let err = follower.sync_once().await.unwrap_err();
    assert!(matches!(err, FollowError::Notebook { .. }), "{err}");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new(RELEASES).join(&first)
    );
    assert!(
        monitor.ready().is_ok(),
        "the last good release still serves"
    );
    let metrics = monitor.encode_metrics();
    assert_eq!(
        metric(&metrics, "tether_follow_sync_count_total{status=\"error\"}"),
        Some(1.0),
        "{metrics}"
    );

    // Fixed: swapped; the new and the previous release are kept, the
    // broken one is gone.
    write_notebook(&sb.path("w"), &notebook("v3"));
    push(&sb, &url);
    let SyncOutcome::Swapped(third) = follower.sync_once().await.unwrap() else {
        panic!("no swap")
    };
    let mut expected = vec![first.clone(), third.clone()];
    expected.sort();
    assert_eq!(releases(&root), expected);
    assert!(
        std::fs::read_to_string(link.join("app/app.py"))
            .unwrap()
            .contains("print(\"v3\")")
    );
    let metrics = monitor.encode_metrics();
    assert_eq!(
        metric(
            &metrics,
            "tether_follow_sync_count_total{status=\"success\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "tether_follow_ready"), Some(1.0));
}

#[tokio::test]
async fn a_directory_in_place_of_the_link_is_refused() {
    let sb = Sandbox::new();
    let url = sb.url("store");
    write_notebook(&sb.path("w"), &notebook("v1"));
    push(&sb, &url);
    let backend = open_backend(&url, &RemoteOptions::default(), &sb.path("state")).unwrap();
    let root = sb.path("follow");
    std::fs::create_dir_all(root.join("current")).unwrap();
    std::fs::write(root.join("current/keep.txt"), "mine").unwrap();
    let follower = Follower::new(backend, FollowOptions::new(&root));
    let err = follower.sync_once().await.unwrap_err();
    assert!(matches!(err, FollowError::NotALink(_)), "{err}");
    assert_eq!(
        std::fs::read_to_string(root.join("current/keep.txt")).unwrap(),
        "mine"
    );
}
