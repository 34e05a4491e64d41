use super::*;

fn ok(url: &str) -> RemoteSpec {
    RemoteSpec::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn err(url: &str) -> String {
    match RemoteSpec::parse(url) {
        Ok(s) => panic!("{url} accepted as {:?}", s.scheme()),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n') && !m.contains('\r'), "{url}: {m}");
            m
        }
    }
}

#[test]
fn object_store_forms() {
    let s = ok("s3://b/p/q");
    assert_eq!(
        (s.scheme(), s.host(), s.prefix().as_str()),
        (Scheme::S3, "b", "p/q")
    );
    assert_eq!(ok("s3a://b").prefix(), "");
    assert_eq!(ok("gs://g/x/").scheme(), Scheme::Gcs);
    assert_eq!(ok("gs://g/x/").prefix(), "x");
    assert_eq!(ok("az://c/y").scheme(), Scheme::Azure);
    assert_eq!(ok("azure://c/y").scheme(), Scheme::Azure);
    let f = ok("file:///tmp/store%20dir?layout=mirror");
    assert_eq!((f.scheme(), f.path()), (Scheme::File, "/tmp/store dir"));
    assert_eq!(f.param("layout"), Some("mirror"));
    assert_eq!(f.branch(), None);
    assert_eq!(ok("file://localhost/srv/x").scheme(), Scheme::File);
    let m = ok("memory://t/a/b");
    assert_eq!(
        (m.scheme(), m.host(), m.prefix().as_str()),
        (Scheme::Memory, "t", "a/b")
    );
    for s in ["s3://b", "file:///x", "memory://t"] {
        assert_eq!(ok(s).family(), Family::ObjectStore, "{s}");
        assert_eq!(ok(s).git_url(), None);
    }
}

#[test]
fn git_forms_and_the_https_rule() {
    for (url, scheme, git_url) in [
        (
            "ssh://git@example.com:2222/srv/notes.git",
            Scheme::GitSsh,
            "ssh://git@example.com:2222/srv/notes.git",
        ),
        ("ssh://h/notes", Scheme::GitSsh, "ssh://h/notes"),
        (
            "git://127.0.0.1:9418/notes",
            Scheme::GitDaemon,
            "git://127.0.0.1:9418/notes",
        ),
        (
            "https://example.com/me/notes.git",
            Scheme::GitHttps,
            "https://example.com/me/notes.git",
        ),
        (
            "http://127.0.0.1:8081/git/notes.git/",
            Scheme::GitHttp,
            "http://127.0.0.1:8081/git/notes.git/",
        ),
        (
            "git+https://gitea.example/me/notes?branch=a/b",
            Scheme::GitHttps,
            "https://gitea.example/me/notes",
        ),
        ("GIT+HTTP://h/x", Scheme::GitHttp, "HTTP://h/x"),
        ("https://h/x?branch=main", Scheme::GitHttps, "https://h/x"),
        (
            "file:///srv/notes.git",
            Scheme::GitFile,
            "file:///srv/notes.git",
        ),
        (
            "file:///srv/notes?branch=main",
            Scheme::GitFile,
            "file:///srv/notes",
        ),
        (
            "git+file:///srv/notes",
            Scheme::GitFile,
            "file:///srv/notes",
        ),
    ] {
        let s = ok(url);
        assert_eq!(s.scheme(), scheme, "{url}");
        assert_eq!(s.family(), Family::Git, "{url}");
        assert_eq!(s.git_url(), Some(git_url), "{url}");
    }
    assert_eq!(ok("ssh://git@h/x.git").user(), Some("git"));
    assert_eq!(ok("ssh://h/x.git").branch(), Some(DEFAULT_BRANCH));
    assert_eq!(ok("git://h/x.git?branch=pod-a").branch(), Some("pod-a"));

    let m = err("https://gitea.example/me/notes");
    assert!(
        m.contains("git+https://")
            && m.contains("s3://BUCKET/PREFIX?endpoint=https://gitea.example"),
        "{m}"
    );
    assert!(err("http://h/bucket").contains("git+http://"));
}

#[test]
fn refusals_say_what_to_change() {
    for (url, want) in [
        ("", "empty"),
        ("/tmp/x", "not a URL"),
        ("git@github.com:me/notes.git", "ssh://user@host/path"),
        ("ftp://h/x", "unsupported remote scheme \"ftp\""),
        ("git+s3://b/x", "unsupported remote scheme"),
        ("s3:///p", "missing bucket"),
        ("az:///p", "missing container"),
        ("s3://b:9000/p", "no :port"),
        ("git:///x.git", "missing host"),
        ("ssh://h", "no repository path"),
        ("ssh://h/", "no repository path"),
        ("file://host/x", "file:///absolute"),
        ("s3://b/a//c", "bad prefix"),
        ("s3://b/%FF", "not UTF-8"),
        ("s3://b/a%0Ab", "control"),
        ("s3://b/p#frag", "#fragment"),
        ("s3://b/p?layout=tree", "not one of mirror"),
        ("s3://b/p?colour=red", "unknown remote parameter \"colour\""),
        ("s3://b/p?branch=main", "allowed: layout"),
        ("git://h/x.git?layout=mirror", "allowed: branch"),
        ("file:///x?region=eu", "unknown remote parameter"),
        ("gs://b/p?region=eu", "unknown remote parameter"),
        ("s3://b/p?allow_http=maybe", "not true or false"),
        ("s3://b/p?concurrency=0", "between 1 and 1024"),
        ("s3://b/p?concurrency=lots", "not a number"),
        ("s3://b/p?pack_size=1K", "between"),
        ("s3://b/p?pack_size=1 parsec", "control or space"),
        ("s3://b/p?pack_size=1parsec", "unknown unit"),
        ("s3://b/p?max_entries=0", "at least 1"),
        ("s3://b/p?endpoint=ftp://h", "http(s) URL"),
        ("s3://b/p?layout=mirror&layout=snapshots", "given twice"),
        (
            "s3://b/p?endpoint=http://a&endpoint_url=http://b",
            "given twice",
        ),
        ("git://h/x.git?branch=a..b", "branch"),
        ("git://h/x.git?branch=-x", "branch"),
        ("git://h/x.git?branch=", "empty"),
        ("s3://b/p;rm", "character ';'"),
        ("s3://b/$(id)", "character '$'"),
        ("s3://b/p\tq", "U+0009"),
        (" s3://b/p", "U+0020"),
        ("ssh://git@h", "no repository path"),
    ] {
        let m = err(url);
        assert!(m.contains(want), "{url:?}: {m}");
    }
    assert!(RemoteSpec::parse(&format!("s3://b/{}", "a".repeat(5000))).is_err());
    // The URL standard resolves dot segments (also encoded) before we see them.
    assert_eq!(ok("s3://b/a/%2E%2E/c").prefix(), "c");
}

#[test]
fn credentials_are_refused_and_never_echoed() {
    for url in [
        "https://me:SUPERSECRET@example.com/x.git",
        "s3://AKIA:SUPERSECRET@b/p",
        "ssh://git:SUPERSECRET@h/x.git",
        "https://SUPERSECRET@example.com/x.git",
        "git+https://SUPERSECRET@h/x",
        "s3://SUPERSECRET@b/p",
        "s3://b/p?aws_secret_access_key=SUPERSECRET",
        "s3://b/p?X-Amz-Signature=SUPERSECRET",
        "az://c/p?sas=SUPERSECRET",
        "https://h/x.git?access_token=SUPERSECRET",
        "s3://b/p?endpoint=https://u:SUPERSECRET@h",
        "s3://b/p?other=SUPERSECRET",
        "SUPERSECRET",
        "https://h:SUPERSECRET/x.git",
    ] {
        let m = err(url);
        assert!(!m.contains("SUPERSECRET"), "{url}: {m}");
    }
    assert!(err("s3://b/p?aws_secret_access_key=x").contains("credential"));
    assert!(err("https://tok@h/x.git").contains("user name"));
    assert!(err("https://a:b@h/x.git").contains("password"));
}

#[test]
fn display_is_redacted() {
    assert_eq!(
        ok("s3://b/p?layout=mirror&endpoint=http://127.0.0.1:8333/x?y").to_string(),
        "s3://b/p?layout=mirror&endpoint=http://127.0.0.1:8333"
    );
    assert_eq!(
        ok("git+https://h/me/notes?branch=x").to_string(),
        "git+https://h/me/notes?branch=x"
    );
    assert_eq!(
        ok("ssh://git@h:2222/x.git").to_string(),
        "ssh://git@h:2222/x.git"
    );
    assert_eq!(ok("file:///a%20b").to_string(), "file:///a%20b");
}

#[test]
fn sizes_and_branches() {
    assert_eq!(parse_size("123"), Ok(123));
    assert_eq!(parse_size("8M"), Ok(8 << 20));
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert!(parse_size("").is_err());
    assert!(parse_size("99999999999999999999G").is_err());
    assert!(parse_size("18446744073709551615G").is_err());
    for good in ["main", "pods/a", "feature-1"] {
        assert_eq!(check_branch(good), Ok(()), "{good}");
    }
    for bad in [
        "a..b", "-x", "a b", "x.lock", "a~1", "", "a:b", "/a", "HEAD",
    ] {
        assert!(check_branch(bad).is_err(), "{bad:?}");
    }
}
