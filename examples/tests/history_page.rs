//! Issue 16 item 3 and 5: the history page of `tether sync --ui-bind`,
//! over plain HTTP (the browser test through jupyter-server-proxy is
//! scripts/testbed/jupyter.sh + scripts/testbed/history_page_browser.py).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// One HTTP/1.1 request → (status, headers, body bytes).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// The page's text with minijinja's HTML escapes undone.
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn get(port: u16, path: &str) -> (u16, String) {
    let (s, _, b) = request(port, "GET", path, &[], "");
    (s, unescape(&String::from_utf8_lossy(&b)))
}

fn ids(sb: &Sandbox, url: &str) -> Vec<String> {
    let out = sb.run(&["history", "--from", url]);
    stdout(&out)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn the_history_page_shows_browses_diffs_downloads_and_restores_a_copy() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebook/tests/fixtures");
    std::fs::create_dir_all(w.join("nb")).unwrap();
    std::fs::copy(fixtures.join("analysis-v1.ipynb"), w.join("nb/a.ipynb")).unwrap();
    // Several blocks: the download is streamed, not one buffer.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(w.join("big.bin"), &big).unwrap();
    let url = sb.url("store");
    let once = || {
        let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    once();
    std::fs::copy(fixtures.join("analysis-v2.ipynb"), w.join("nb/a.ipynb")).unwrap();
    once();
    std::fs::write(w.join("notes.txt"), "third").unwrap();
    once();
    let ids = ids(&sb, &url);
    assert_eq!(ids.len(), 3, "{ids:?}");

    // The metrics port is not the page's.
    let metrics = free_port().to_string();
    let out = sb.run(&[
        "sync",
        "w",
        "--to",
        &url,
        "--http-bind",
        &format!("127.0.0.1:{metrics}"),
        "--ui-bind",
        &metrics,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--ui-bind"), "{}", stderr(&out));

    let port = free_port();
    let bind = port.to_string();
    let mut child = spawn(&sb, &["sync", "w", "--to", &url, "--ui-bind", &bind]);
    let (status, page) = wait_for("the history page", Duration::from_secs(60), || {
        http_get(port, "/").map(|(s, p)| (s, unescape(&p)))
    });
    assert_eq!(status, 200, "{page}");
    // Timeline: three checkpoints, newest first, with changed-file counts.
    assert_eq!(page.matches("class=\"checkpoint\"").count(), 3, "{page}");
    let first_row = page.find(&ids[0][..12]).unwrap();
    assert!(
        first_row < page.find(&ids[2][..12]).unwrap(),
        "newest first"
    );
    assert!(
        page.contains(&format!("diff?new={}\">1</a>", enc(&ids[0]))),
        "{page}"
    );
    assert!(page.contains("2 (first)"), "{page}");
    assert!(!page.contains("href=\"/"), "links are relative: {page}");

    // Tree at the first checkpoint, a folder, a file.
    let (s, t) = get(port, &format!("/tree?at={}", enc(&ids[2])));
    assert_eq!(s, 200, "{t}");
    assert!(
        t.contains("big.bin") && t.contains("nb/") && !t.contains("notes.txt"),
        "{t}"
    );
    let (s, t) = get(port, "/tree?path=nb");
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("file?at=") && t.contains("a.ipynb"), "{t}");
    let (s, f) = get(
        port,
        &format!("/file?at={}&path=nb%2Fa.ipynb", enc(&ids[2])),
    );
    assert_eq!(s, 200, "{f}");
    let token = f
        .split("name=\"token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 32, "{f}");

    // Download: the bytes of that version, streamed.
    let (s, head, body) = request(
        port,
        "GET",
        &format!("/raw?at={}&path=big.bin", enc(&ids[2])),
        &[],
        "",
    );
    assert_eq!(s, 200, "{head}");
    assert!(head.contains("attachment; filename=\"big.bin\""), "{head}");
    assert!(body == big, "download differs ({} bytes)", body.len());
    let (_, _, nb) = request(
        port,
        "GET",
        &format!("/raw?at={}&path=nb/a.ipynb", enc(&ids[2])),
        &[],
        "",
    );
    assert_eq!(
        nb,
        std::fs::read(fixtures.join("analysis-v1.ipynb")).unwrap()
    );

    // Diff: the notebook cell by cell, from the timeline's compare form
    // and from "what changed" of the middle checkpoint.
    let (s, d) = get(
        port,
        &format!("/diff?old={}&new={}", enc(&ids[2]), enc(&ids[1])),
    );
    assert_eq!(s, 200, "{d}");
    assert!(d.contains("M  nb/a.ipynb"), "{d}");
    assert!(d.contains("cell 6 (markdown) added:"), "{d}");
    assert!(d.contains("return math.pi * r * r"), "{d}");
    let (_, d2) = get(port, &format!("/diff?new={}", enc(&ids[1])));
    assert_eq!(d2, d);
    let (_, d3) = get(port, "/diff");
    assert!(d3.contains("A  notes.txt"), "{d3}");

    // Restore a copy: refused cross-site, without Origin, with a wrong
    // token; done with both.
    let form = format!("at={}&path=nb%2Fa.ipynb&token={token}", enc(&ids[2]));
    let origin = format!("http://127.0.0.1:{port}");
    let copies = || {
        std::fs::read_dir(w.join("nb"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("(tether "))
            .collect::<Vec<_>>()
    };
    for (headers, body) in [
        (vec![("Origin", "http://evil.example")], form.clone()),
        (vec![], form.clone()),
        (
            vec![
                ("Origin", origin.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            form.clone(),
        ),
        (
            vec![("Origin", origin.as_str())],
            form.replace(&token, "0123"),
        ),
    ] {
        let (s, _, b) = request(port, "POST", "/restore", &headers, &body);
        assert_eq!(s, 403, "{headers:?}: {}", String::from_utf8_lossy(&b));
    }
    assert!(copies().is_empty(), "{:?}", copies());
    let (s, _, b) = request(port, "POST", "/restore", &[("Origin", &origin)], &form);
    let b = unescape(&String::from_utf8_lossy(&b));
    assert_eq!(s, 200, "{b}");
    let made = copies();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(b.contains(&made[0]), "{b}");
    assert_eq!(
        std::fs::read(w.join("nb").join(&made[0])).unwrap(),
        std::fs::read(fixtures.join("analysis-v1.ipynb")).unwrap()
    );
    assert_eq!(
        std::fs::read(w.join("nb/a.ipynb")).unwrap(),
        std::fs::read(fixtures.join("analysis-v2.ipynb")).unwrap(),
        "the original is untouched"
    );

    // Bad input: named 404s, refused paths.
    for (path, status, words) in [
        ("/tree?path=nope", 404, "no path nope"),
        (
            "/file?path=nb%2Fmissing.ipynb",
            404,
            "no path nb/missing.ipynb",
        ),
        (
            "/tree?at=0000000000000-00000000",
            404,
            "0000000000000-00000000",
        ),
        ("/raw?path=nope.bin", 404, "no path nope.bin"),
        ("/diff?new=bogus", 404, "bogus"),
        (
            "/file?path=..%2F..%2Fetc%2Fpasswd",
            400,
            "not a path inside",
        ),
        ("/raw?path=%2Fetc%2Fpasswd", 400, "not a path inside"),
        ("/tree?at=..%2F..%2Fx", 400, "not a checkpoint id"),
        ("/nosuch", 404, "no page /nosuch"),
    ] {
        let (s, body) = get(port, path);
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.contains(words), "{path}: {body}");
        assert!(body.contains("All checkpoints"), "{path}: {body}");
    }

    sigterm(&child);
    let (code, err) = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
}
