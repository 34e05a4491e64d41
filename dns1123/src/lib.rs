//! Kubernetes name rules, in one place.
//!
//! Kubernetes names most objects (namespaces, Services, containers, volumes,
//! ports) with a *DNS-1123 label* and Secrets, ConfigMaps and priority
//! classes with a *DNS-1123 subdomain* (apimachinery's `IsDNS1123Label` and
//! `IsDNS1123Subdomain`). kube-deploy checks annotations and manifest
//! settings with these functions before a pod or manifest is built;
//! webhook-certs checks the Service and namespace it puts into certificate
//! names. Each check returns the first [`Problem`] found, which callers put
//! into their own error next to the offending value. Pure functions: no
//! allocation, no panics on any input.

use std::fmt;

/// Longest DNS-1123 label, bytes.
pub const MAX_LABEL: usize = 63;
/// Longest DNS-1123 subdomain, bytes.
pub const MAX_SUBDOMAIN: usize = 253;

/// Why a name breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The name (or one of its dot-separated labels) is empty.
    Empty,
    /// Longer than the limit given, bytes.
    TooLong(usize),
    /// A character other than lowercase ASCII letters, digits and `-` (and
    /// `.` between the labels of a subdomain).
    Character,
    /// Starts or ends with `-` (a label must start and end with a letter or
    /// digit).
    Edge,
}

impl Problem {
    /// The reason as a static phrase, for errors that store one.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong(MAX_LABEL) => "longer than 63 characters",
            Self::TooLong(_) => "longer than 253 characters",
            Self::Character => "only lowercase letters, digits and '-' are allowed",
            Self::Edge => "must start and end with a letter or digit",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Problem {}

/// Checks a DNS-1123 label: 1 to 63 lowercase ASCII letters, digits and
/// `-`, starting and ending with a letter or digit.
pub fn label(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::Empty);
    }
    if name.len() > MAX_LABEL {
        return Err(Problem::TooLong(MAX_LABEL));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Problem::Character);
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Problem::Edge);
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: at most 253 bytes of dot-separated
/// DNS-1123 labels.
pub fn subdomain(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::Empty);
    }
    if name.len() > MAX_SUBDOMAIN {
        return Err(Problem::TooLong(MAX_SUBDOMAIN));
    }
    name.split('.').try_for_each(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "tether-sync", "0", "a1-b2", &"x".repeat(63)] {
            assert_eq!(label(good), Ok(()), "{good}");
        }
        assert_eq!(label(""), Err(Problem::Empty));
        assert_eq!(label(&"x".repeat(64)), Err(Problem::TooLong(63)));
        for bad in ["Tether", "a_b", "a.b", "é", "a b", "a\u{200b}"] {
            assert_eq!(label(bad), Err(Problem::Character), "{bad:?}");
        }
        for bad in ["-a", "a-", "-"] {
            assert_eq!(label(bad), Err(Problem::Edge), "{bad:?}");
        }
    }

    #[test]
    fn subdomains() {
        for good in ["a", "tether.dev", "a-1.b-2.c", &"x".repeat(63)] {
            assert_eq!(subdomain(good), Ok(()), "{good}");
        }
        assert_eq!(subdomain(""), Err(Problem::Empty));
        assert_eq!(subdomain("a..b"), Err(Problem::Empty));
        assert_eq!(subdomain(".a"), Err(Problem::Empty));
        assert_eq!(subdomain(&"x".repeat(64)), Err(Problem::TooLong(63)));
        let long = vec!["x".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(subdomain(&long), Err(Problem::TooLong(253)));
        assert_eq!(subdomain("a.B"), Err(Problem::Character));
        assert_eq!(subdomain("a.-b"), Err(Problem::Edge));
    }

    #[test]
    fn reasons_are_one_phrase() {
        for p in [
            Problem::Empty,
            Problem::TooLong(MAX_LABEL),
            Problem::TooLong(MAX_SUBDOMAIN),
            Problem::Character,
            Problem::Edge,
        ] {
            assert!(!p.to_string().contains('\n'));
        }
        assert_ne!(
            Problem::TooLong(MAX_LABEL).reason(),
            Problem::TooLong(MAX_SUBDOMAIN).reason()
        );
    }
}
