//! Syntax checks for the values users put in annotations: container image
//! references, resource quantities, Kubernetes names, paths and remote URLs.
//!
//! Every check is a pure function returning a short reason on failure; the
//! caller (see [`crate::annotations`]) prefixes it with the annotation's name.
//! The grammars follow the upstream definitions (the distribution project's
//! reference grammar, apimachinery's quantity and DNS-1123 rules) closely
//! enough to refuse what the API server or the kubelet would refuse later,
//! where the error would be far harder to trace back to an annotation.

use remote_spec::{RemoteSpec, Scheme};
use url::Url;

/// Characters refused in every annotation value: control characters (newline,
/// carriage return, tab, NUL…) and the shell's metacharacters. tether passes
/// values as argv entries, never through a shell, so these are refused for
/// clarity rather than for safety: none of them has a legitimate use in a
/// URL, a path or an image reference that tether accepts.
pub(crate) fn forbidden_character(value: &str) -> Option<char> {
    value.chars().find(|c| {
        c.is_control()
            || matches!(
                c,
                '`' | '$'
                    | ';'
                    | '|'
                    | '&'
                    | '<'
                    | '>'
                    | '\\'
                    | '"'
                    | '\''
                    | '('
                    | ')'
                    | '{'
                    | '}'
                    | '*'
                    | '!'
                    | ' '
            )
    })
}

/// Describes a forbidden character for an error message without echoing
/// control characters into logs.
pub(crate) fn describe_char(c: char) -> String {
    if c.is_control() {
        format!("control character U+{:04X}", c as u32)
    } else {
        format!("character {c:?}")
    }
}

/// Checks a container image reference against the distribution reference
/// grammar: `[domain[:port]/]path[:tag][@algorithm:hex]`.
pub fn image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = forbidden_character(reference) {
        return Err(format!("contains a {}", describe_char(c)));
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((left, digest)) => (left, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag follows the last ':' only if no '/' comes after it (otherwise
    // the ':' belonged to a registry port).
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(i) if !name_and_tag[i..].contains('/') => {
            (&name_and_tag[..i], Some(&name_and_tag[i + 1..]))
        }
        _ => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if name.len() > 255 {
        return Err("has a repository name longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_domain = first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase());
        if is_domain {
            check_domain(first)?;
            components.remove(0);
        }
    }
    for component in components {
        check_path_component(component)?;
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || domain.starts_with('[') => (host, Some(port)),
        _ => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("has an invalid registry port {port:?}"));
    }
    if host.starts_with('[') && host.ends_with(']') {
        let inner = &host[1..host.len() - 1];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("has an invalid IPv6 registry host {host:?}"));
        }
        return Ok(());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("has an invalid registry host {host:?}"));
        }
    }
    Ok(())
}

fn check_path_component(component: &str) -> Result<(), String> {
    // [a-z0-9]+ ( (\.|_|__|-+) [a-z0-9]+ )*
    let invalid = || {
        Err(format!(
            "has an invalid repository path component {component:?} (lowercase letters, digits and single . _ or __ or - separators)"
        ))
    };
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return invalid();
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return invalid();
        }
        if i == bytes.len() {
            return Ok(());
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return invalid(),
        }
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let valid = tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "has an invalid tag {tag:?} (1-128 of letters, digits, _ . -, not starting with . or -)"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("has a digest without an algorithm: {digest:?}"));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'));
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    if algorithm_ok && hex_ok {
        Ok(())
    } else {
        Err(format!("has an invalid digest {digest:?}"))
    }
}

/// Checks a Kubernetes resource quantity such as `100m`, `1.5`, `256Mi` or
/// `1e3`, and refuses negative values.
pub fn quantity(value: &str) -> Result<(), String> {
    let invalid = || {
        Err(format!(
            "{value:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 256Mi, 1G)"
        ))
    };
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.is_empty() || number.contains('+') || number == "." {
        return invalid();
    }
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next().unwrap_or("");
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return invalid();
    }
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exponent => {
            let digits = exponent
                .strip_prefix(['e', 'E'])
                .map(|rest| rest.strip_prefix(['+', '-']).unwrap_or(rest));
            digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        }
    };
    if suffix_ok { Ok(()) } else { invalid() }
}

/// Checks a DNS-1123 label (container, port and volume names): at most 63
/// lowercase letters, digits and '-', starting and ending alphanumeric.
pub fn dns1123_label(name: &str) -> Result<(), String> {
    dns1123::label(name).map_err(|problem| {
        format!(
            "{name:?} is not a DNS-1123 label ({problem}; at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    })
}

fn qualified_name_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 63
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checks a label `key=value` pair: the key an optional DNS-1123 subdomain
/// prefix and `/` before a name of at most 63 letters, digits, `-`, `_`
/// and `.`; the value empty or such a name.
pub fn label(key: &str, value: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|e| format!("label key prefix: {e}"))?;
            name
        }
        None => key,
    };
    if !qualified_name_part(name) {
        return Err(format!(
            "{key:?} is not a label key (at most 63 letters, digits, '-', '_', '.', after an optional DNS prefix and '/')"
        ));
    }
    if !value.is_empty() && !qualified_name_part(value) {
        return Err(format!(
            "{value:?} is not a label value (empty, or at most 63 letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (Secret and other object names): at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    dns1123::subdomain(name).map_err(|problem| {
        format!(
            "{name:?} is not a valid object name ({problem}; DNS-1123 subdomain: lowercase letters, digits, '-' and '.')"
        )
    })
}

/// Checks an absolute, normalised container path (`/home/jovyan`): no `.` or
/// `..` components, no empty components, not `/` itself, only characters
/// that need no quoting anywhere.
pub fn absolute_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path == "/" {
        return Err("must not be the root directory".into());
    }
    relative_components(&path[1..]).map_err(|e| format!("{path:?} {e}"))
}

/// Checks a path relative to the synced directory (`.tetherignore`,
/// `config/ignore`): same rules as [`absolute_path`] without the leading `/`.
pub fn relative_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err(format!("{path:?} must be relative to the synced directory"));
    }
    relative_components(path).map_err(|e| format!("{path:?} {e}"))
}

fn relative_components(path: &str) -> Result<(), String> {
    if path.len() > 4096 {
        return Err("is longer than 4096 bytes".into());
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err("must be normalised (no empty, '.' or '..' components)".into());
        }
        if let Some(c) = component.chars().find(|c| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '.' | '_' | '-' | '+' | '@' | '~' | '=' | ','))
        }) {
            return Err(format!(
                "contains a {} (allowed: letters, digits and . _ - + @ ~ = ,)",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

/// The kind of remote a URL names, which decides how credentials reach the
/// containers and which query parameters are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// `file:///…` (a directory visible to the containers).
    File,
    /// `s3://bucket/prefix` (credentials from `AWS_*`).
    S3,
    /// `gs://bucket/prefix` (credentials from a service-account JSON file).
    Gcs,
    /// `az://container/prefix` (credentials from `AZURE_STORAGE_*`).
    Azure,
    /// `ssh://…` git remote (credentials from an SSH private key file).
    GitSsh,
    /// `https://….git`, `git+https://…` (and plain http) git remote
    /// (credentials from a token file).
    GitHttps,
    /// `git://…` (anonymous git daemon).
    GitDaemon,
    /// `file:///….git` git repository (a directory visible to the containers).
    GitFile,
}

impl RemoteKind {
    /// True for object-store remotes, which accept `?layout=`.
    pub fn is_object_store(self) -> bool {
        matches!(self, Self::File | Self::S3 | Self::Gcs | Self::Azure)
    }

    /// True for git remotes, which accept `?branch=`.
    pub fn is_git(self) -> bool {
        matches!(
            self,
            Self::GitSsh | Self::GitHttps | Self::GitDaemon | Self::GitFile
        )
    }
}

/// Parses and checks a remote URL with [`remote_spec::RemoteSpec::parse`],
/// the parser the sidecar and the `tether` command use, so admission says
/// yes exactly when the sidecar will run the URL (scheme and family, the
/// `https://` rule, credentials, parameters and their values). The one
/// extra refusal: `memory://`, which lives inside one process. Error
/// messages never echo the URL, which may hold a secret.
pub fn remote_url(value: &str) -> Result<(Url, RemoteKind), String> {
    let spec = RemoteSpec::parse(value).map_err(|e| e.to_string())?;
    let kind = match spec.scheme() {
        Scheme::File => RemoteKind::File,
        Scheme::S3 => RemoteKind::S3,
        Scheme::Gcs => RemoteKind::Gcs,
        Scheme::Azure => RemoteKind::Azure,
        Scheme::GitSsh => RemoteKind::GitSsh,
        Scheme::GitHttps | Scheme::GitHttp => RemoteKind::GitHttps,
        Scheme::GitDaemon => RemoteKind::GitDaemon,
        Scheme::GitFile => RemoteKind::GitFile,
        Scheme::Memory => {
            return Err(
                "memory:// lives inside one process and cannot keep a pod's data: use s3://, gs://, az://, file:///dir or a git remote"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "names a {} remote, which pods do not support",
                other.name()
            ));
        }
    };
    let url = Url::parse(value).map_err(|e| format!("is not a URL ({e})"))?;
    Ok((url, kind))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_image_references() {
        for good in [
            "tether",
            "ghcr.io/tether/tether:0.1.0",
            "docker.io/library/busybox:1.36",
            "localhost:5000/tether",
            "registry.example.com:443/a/b/c:v1.2-rc_3",
            "quay.io/org/img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "img:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b/c-d---e.f",
            "[::1]:5000/tether:dev",
        ] {
            assert_eq!(image_reference(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn refuses_invalid_image_references() {
        for bad in [
            "",
            "UPPER",
            "registry.io/UPPER",
            "tether:",
            "tether:-bad",
            "tether@sha256:short",
            "tether@:abc",
            "ghcr.io//tether",
            "tether$(id)",
            "tether\nimage",
            "a..b",
            "reg.io:port/x",
            "x/-y",
        ] {
            assert!(image_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for good in ["1", "100m", "0.5", ".5", "256Mi", "1G", "1e3", "2E-2", "+3"] {
            assert_eq!(quantity(good), Ok(()), "{good}");
        }
        for bad in ["", "-1", "1.2.3", "12mb", "Mi", "1 Gi", ".", "1e", "abc"] {
            assert!(quantity(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_follow_dns1123() {
        assert!(dns1123_label("tether-sync").is_ok());
        assert!(dns1123_label("Tether").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("my.secret-1").is_ok());
        assert!(dns1123_subdomain("my..secret").is_err());
    }

    #[test]
    fn paths_are_normalised_and_plain() {
        assert!(absolute_path("/home/jovyan").is_ok());
        assert!(absolute_path("/home/jovyan/").is_ok());
        for bad in [
            "home", "/", "/a/../b", "/a//b", "/a/./b", "/a\nb", "/a;b", "/a b",
        ] {
            assert!(absolute_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(relative_path(".tetherignore").is_ok());
        assert!(relative_path("/etc/passwd").is_err());
        assert!(relative_path("../x").is_err());
    }

    #[test]
    fn remote_urls_are_checked_without_echoing_them() {
        assert_eq!(
            remote_url("s3://bucket/prefix").map(|r| r.1),
            Ok(RemoteKind::S3)
        );
        assert_eq!(
            remote_url("ssh://git@git.example.com/org/repo.git?branch=main").map(|r| r.1),
            Ok(RemoteKind::GitSsh)
        );
        assert_eq!(
            remote_url("file:///mnt/backup").map(|r| r.1),
            Ok(RemoteKind::File)
        );
        assert!(remote_url("s3://b/p?layout=snapshots").is_ok());

        let err = remote_url("https://user:hunter2@git.example.com/r.git").unwrap_err();
        assert!(err.contains("credentials"), "{err}");
        assert!(!err.contains("hunter2"));
        let err = remote_url("https://tok3n@git.example.com/r.git").unwrap_err();
        assert!(!err.contains("tok3n"));
        assert!(remote_url("ftp://x/y").is_err());
        assert!(remote_url("s3://b/p?branch=main").is_err());
        assert!(remote_url("git://h/r?layout=mirror").is_err());
        assert!(remote_url("s3://b/p?layout=weird").is_err());
        assert!(remote_url("s3://b/p?X-Amz-Signature=abc").is_err());
        assert!(remote_url("s3://b/p#frag").is_err());
        assert!(remote_url("s3://b/p;rm").is_err());
        assert!(remote_url("s3://b/p\nx").is_err());
        assert!(remote_url("not a url").is_err());
        assert!(remote_url("s3:///nobucket").is_err());
        // The same parser as the sidecar: a bare https URL is ambiguous
        // (the sidecar refused it while admission said yes), git+ and
        // file://…?branch= are git, several parameters are fine.
        assert!(remote_url("https://gitea.example/me/notes").is_err());
        assert_eq!(
            remote_url("git+https://gitea.example/me/notes").map(|r| r.1),
            Ok(RemoteKind::GitHttps)
        );
        assert_eq!(
            remote_url("file:///srv/notes?branch=main").map(|r| r.1),
            Ok(RemoteKind::GitFile)
        );
        assert!(
            remote_url("s3://b/p?layout=mirror&endpoint=http://127.0.0.1:8333&allow_http=true")
                .is_ok()
        );
        assert!(remote_url("memory://t").is_err());
    }
}
