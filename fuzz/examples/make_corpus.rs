//! Writes the checked-in seed corpus, `fuzz/corpus/<target>/`, from real
//! structures (a few valid inputs, then a few invalid ones per target):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_corpus
//! ```
//!
//! Seeds are named by content, so running it again only adds what changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use gix::objs::tree::{Entry, EntryKind};
use gix::objs::{Tree, WriteTo};
use sync_core::{Checkpoint, ContentHash, FileMeta, Meta, RelPath};
use tether_fuzz::{annotation_bytes, join_objects};

fn save(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for s in seeds {
        let name = &ContentHash::of(s).to_hex()[..16];
        std::fs::write(dir.join(name), s).expect("seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn file(content: &[u8], mode: u32) -> Meta {
    Meta::File(FileMeta {
        size: content.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode,
        hash: ContentHash::of(content),
    })
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).expect("seed path")
}

fn tree(entries: &[(&[u8], EntryKind, gix::ObjectId)]) -> (Vec<u8>, gix::ObjectId) {
    let mut t = Tree::empty();
    for (name, kind, oid) in entries {
        t.entries.push(Entry {
            mode: (*kind).into(),
            filename: (*name).into(),
            oid: *oid,
        });
    }
    t.entries.sort();
    let mut out = Vec::new();
    t.write_to(&mut out).expect("tree encodes");
    let id =
        gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Tree, &out).expect("hash");
    (out, id)
}

fn git_trees() -> Vec<Vec<u8>> {
    let blob = gix::ObjectId::from_hex(b"3b18e512dba79e4c8300dd08aeb37f8e728b8dad").expect("hex");
    let (sub, sub_id) = tree(&[(b"a.py", EntryKind::Blob, blob)]);
    let (root, _) = tree(&[
        (b"notebooks", EntryKind::Tree, sub_id),
        (b"run.sh", EntryKind::BlobExecutable, blob),
        (b"latest", EntryKind::Link, blob),
        (b"vendor", EntryKind::Commit, blob),
    ]);
    let mut seeds = vec![join_objects(&[root, sub.clone()]), join_objects(&[sub])];
    for hostile in [
        &b".."[..],
        b".git",
        b"a/b",
        b"\xff\xfe",
        b"red\x1b[31m\nline",
    ] {
        let (t, _) = tree(&[(hostile, EntryKind::Blob, blob)]);
        seeds.push(join_objects(&[t]));
    }
    // Modes git does not write (140000, 20000) and a truncated tree.
    let (t, _) = tree(&[(b"x", EntryKind::Blob, blob)]);
    let odd = String::from_utf8_lossy(&t[..6]).replace("100644", "140000");
    let mut odd_tree = odd.into_bytes();
    odd_tree.extend_from_slice(&t[6..]);
    seeds.push(join_objects(&[odd_tree]));
    seeds.push(join_objects(&[t[..t.len() - 5].to_vec()]));
    seeds
}

fn annotation_sets() -> Vec<BTreeMap<String, String>> {
    let base: BTreeMap<String, String> = [
        ("tether.dev/inject", "true"),
        ("tether.dev/remote", "s3://bucket/alice"),
        ("tether.dev/mount-path", "/home/jovyan"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let with = |extra: &[(&str, &str)]| {
        let mut m = base.clone();
        for (k, v) in extra {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    };
    vec![
        base.clone(),
        with(&[
            ("tether.dev/layout", "mirror"),
            ("tether.dev/image", "registry.example/tether:1.2"),
            ("tether.dev/cpu-request", "100m"),
            ("tether.dev/memory-limit", "256Mi"),
            ("tether.dev/sidecar-mode", "container"),
            ("tether.dev/grace-seconds", "25"),
            ("tether.dev/http-port", "9000"),
            ("tether.dev/credentials-secret", "s3-creds"),
            ("tether.dev/ignore-file", ".tetherignore"),
            ("tether.dev/containers", "app"),
        ]),
        with(&[("tether.dev/remote", "https://git.example/alice.git")]),
        with(&[("tether.dev/status", "injected")]),
        // Invalid.
        with(&[("tether.dev/remote", "s3://user:pw@bucket/p")]),
        with(&[("tether.dev/mount-path", "/work;$(reboot)")]),
        with(&[("tether.dev/remote-url", "s3://b/p")]),
        with(&[("tether.dev/memory-limit", "99999999999999999999Ei")]),
        with(&[("tether.dev/inject", "yes")]),
    ]
}

fn reviews() -> Vec<Vec<u8>> {
    let review = |operation: &str, annotations: &BTreeMap<String, String>| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "jupyter",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "jupyter-alice", "annotations": annotations},
                    "spec": {"containers": [{"name": "notebook", "image": "jupyter/base:1",
                        "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}],
                        "volumes": [{"name": "home", "emptyDir": {}}]}
                }
            }
        })
        .to_string()
        .into_bytes()
    };
    let sets = annotation_sets();
    let mut out = vec![
        review("CREATE", &sets[0]),
        review("CREATE", &sets[1]),
        review("UPDATE", &sets[0]),
        review("CREATE", &sets[5]),
        review("CREATE", &BTreeMap::new()),
    ];
    out.push(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"kind":"Pod"},"resource":{"resource":"pods"},"operation":"CREATE"}}"#.to_vec());
    out.push(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#.to_vec());
    out.push(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"resource":{"resource":"pods"},"operation":"CREATE","object":[1,2]}}"#.to_vec());
    out.push(b"\x00not json".to_vec());
    out
}

fn main() {
    save(
        "rel_path",
        &[
            "a",
            "notebooks/a b.ipynb",
            ".ssh/id_ed25519",
            "ä/ö",
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/..",
            "dir/\u{1b}[31mred\nline",
            "a\\b",
            "x\0y",
            "",
        ]
        .map(|s| s.as_bytes().to_vec()),
    );

    // Notebooks nbformat wrote (notebook/tests/fixtures), and broken ones.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebook/tests/fixtures");
    let mut notebooks: Vec<Vec<u8>> = [
        "analysis-v1.ipynb",
        "analysis-v2.ipynb",
        "analysis-v1-no-ids.ipynb",
        "analysis-v2-no-ids.ipynb",
    ]
    .iter()
    .map(|n| std::fs::read(fixtures.join(n)).expect("notebook fixture"))
    .collect();
    notebooks.push(br#"{"nbformat": 3, "worksheets": []}"#.to_vec());
    notebooks.push(b"{not json".to_vec());
    save("notebook", &notebooks);

    save("s3_v2_node", &sync_s3::fuzzing::v2_node_seeds());
    save("s3_v2_records", &sync_s3::fuzzing::v2_record_seeds());

    let secret = file(b"secret", 0o600);
    let mut entries = serde_json::Map::new();
    for (name, meta, etag) in [
        (".ssh", Meta::dir(0o700), None),
        (
            ".ssh/id_ed25519",
            secret.clone(),
            Some("\"5ebe2294ecd0e0f08eab7690d2a6ee69\""),
        ),
        ("notes.md", file(b"# notes\n", 0o644), Some("\"abc\"")),
        (
            "latest",
            Meta::Symlink {
                target: "notes.md".into(),
            },
            None,
        ),
    ] {
        let mut v = serde_json::to_value(&meta).expect("meta");
        if let (Some(o), Some(e)) = (v.as_object_mut(), etag) {
            o.insert("etag".into(), e.into());
        }
        entries.insert(name.into(), v);
    }
    let index = serde_json::json!({"format": "tether-mirror-index-1", "time_ms": 1_700_000_000_000u64, "entries": entries}).to_string();
    save(
        "s3_mirror_index",
        &[
            index.clone().into_bytes(),
            br#"{"format":"tether-mirror-index-1","time_ms":0,"entries":{}}"#.to_vec(),
            index
                .replacen("\"notes.md\"", "\"../notes.md\"", 1)
                .into_bytes(),
            index
                .replacen("\"latest\"", "\".ssh/id_ed25519/x\"", 1)
                .into_bytes(),
            index
                .replacen("\"mode\":384", "\"mode\":4294967295", 1)
                .into_bytes(),
            index[..index.len() / 3].as_bytes().to_vec(),
        ],
    );

    let Meta::File(f) = secret else {
        unreachable!()
    };
    let fields = |hash: &str, mode: &str, mtime: &str, size: &str| {
        format!("{hash}\0{mode}\0{mtime}\0{size}").into_bytes()
    };
    let hex = f.hash.to_hex();
    save(
        "s3_mirror_metadata",
        &[
            fields(&hex, &format!("{:o}", f.mode), &f.mtime_ns.to_string(), "6"),
            fields(&hex, "7755", "-1", "6"),
            fields(&hex, "37777777777", "0", "0"),
            fields(&hex, "644", "99999999999999999999", "18446744073709551615"),
            fields("zz", "644", "0", "1"),
            fields("", "", "", ""),
        ],
    );

    save("git_tree", &git_trees());
    save(
        "git_modes",
        &[
            br#"{"format":"tether-git-modes-1","modes":{".ssh":"700",".ssh/id_ed25519":"600"}}"#
                .to_vec(),
            br#"{"format":"tether-git-modes-1","modes":{}}"#.to_vec(),
            br#"{"format":"tether-git-modes-1","modes":{"a":"7777","b":"0","c":"+7"}}"#.to_vec(),
            br#"{"format":"tether-git-modes-1","modes":{"a":"17777"}}"#.to_vec(),
            br#"{"format":"tether-git-modes-1","modes":{"a":"-1","b":"9"}}"#.to_vec(),
            br#"{"format":"tether-git-modes-2","modes":{}}"#.to_vec(),
            br#"{"format":"tether-git-modes-1","modes":{"a":"644""#.to_vec(),
        ],
    );

    save(
        "kube_annotations",
        &annotation_sets()
            .iter()
            .map(annotation_bytes)
            .collect::<Vec<_>>(),
    );
    save("kube_admission_review", &reviews());
}
