//! Issue 16 item 4: the history page in a real browser through the real
//! proxy. scripts/testbed/jupyter.sh installs Jupyter (jupyter_server,
//! jupyter-server-proxy) and headless Chromium; this test runs
//! scripts/testbed/history_page_browser.py with them against the built
//! `tether` (see that script for the steps and what is asserted).
//! Screenshots go to `$CARGO_TARGET_TMPDIR/history-page/`; with
//! `TETHER_DOCS_SCREENSHOT=PATH` the diff page's is also copied there (how
//! docs/history-page.png was made).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use sync_core::testkit::testbed_var;

#[test]
fn the_history_page_works_in_chromium_through_jupyter_server_proxy() {
    let (Some(python), Some(chromium), Some(driver)) = (
        testbed_var("TETHER_TEST_JUPYTER_PYTHON"),
        testbed_var("TETHER_TEST_CHROMIUM"),
        testbed_var("TETHER_TEST_CHROMEDRIVER"),
    ) else {
        return;
    };
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("history-page");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/testbed/history_page_browser.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script)
        .arg("--tether")
        .arg(env!("CARGO_BIN_EXE_tether"))
        .arg("--out")
        .arg(&out)
        .arg("--chromium")
        .arg(chromium)
        .arg("--chromedriver")
        .arg(driver);
    if let Ok(docs) = std::env::var("TETHER_DOCS_SCREENSHOT") {
        cmd.arg("--docs-screenshot").arg(docs);
    }
    let result = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(result.status.success(), "{text}");
    assert!(text.contains("history page end to end: ok"), "{text}");
    for shot in ["timeline.png", "diff.png", "restored.png"] {
        let len = std::fs::metadata(out.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{shot} missing or empty");
    }
}
