//! [`IgnoreRules`]: which paths tether leaves alone, in gitignore syntax.
//!
//! Rules come from three places, later ones winning as in git: built-in
//! defaults for editor and notebook noise ([`DEFAULT_PATTERNS`]), an optional
//! ignore file at the top of the synced directory (`.tetherignore` by
//! default), and extra patterns given by the embedding program. Matching uses
//! the `ignore` crate's gitignore implementation, so `!negation`, `dir/`,
//! `**` and anchored `/pattern`s mean what they mean in git. A path is ignored
//! when it or any of its parent directories matches.
//!
//! The engine rebuilds the rules when an ignore file inside the tree
//! changes, then rescans: paths no longer ignored are pushed, and paths now
//! ignored stop being synced — like a deletion, they leave the remote's
//! newest state (earlier snapshots and commits keep them), while the local
//! files stay. An ignore file that no longer compiles is reported and the
//! previous rules are kept.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::path::RelPath;

/// Patterns ignored unless [`IgnoreConfig::defaults`] is false: Jupyter
/// checkpoints, vim/emacs swap, backup and lock files, vim's `4913` write
/// probe, macOS metadata, and tether's own temporary restore files.
pub const DEFAULT_PATTERNS: &[&str] = &[
    ".ipynb_checkpoints/",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    ".DS_Store",
    ".tether-restore-*.tmp",
];

/// Where ignore rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreConfig {
    /// Include [`DEFAULT_PATTERNS`].
    pub defaults: bool,
    /// An ignore file; a relative path is taken relative to the synced
    /// directory. A missing file is not an error (it may be created later,
    /// and is read again when the engine restarts).
    pub file: Option<PathBuf>,
    /// Extra patterns, applied last.
    pub patterns: Vec<String>,
}

impl Default for IgnoreConfig {
    fn default() -> Self {
        IgnoreConfig {
            defaults: true,
            file: Some(PathBuf::from(".tetherignore")),
            patterns: Vec::new(),
        }
    }
}

/// An ignore rule could not be used.
#[derive(Debug, thiserror::Error)]
#[error("ignore rules from {source_name}: {message}")]
pub struct RulesError {
    /// The file or "pattern" the bad rule came from.
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

/// Compiled ignore rules for one synced directory.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Compiles the rules of `config` for the directory `root`.
    pub fn load(root: &Path, config: &IgnoreConfig) -> Result<Self, RulesError> {
        let mut b = GitignoreBuilder::new(root);
        let pattern_err = |p: &str, e: ignore::Error| RulesError {
            source_name: format!("pattern {p:?}"),
            message: e.to_string(),
        };
        if config.defaults {
            for p in DEFAULT_PATTERNS {
                b.add_line(None, p).map_err(|e| pattern_err(p, e))?;
            }
        }
        if let Some(file) = &config.file {
            let full = if file.is_absolute() {
                file.clone()
            } else {
                root.join(file)
            };
            match std::fs::read_to_string(&full) {
                Ok(text) => {
                    for line in text.lines() {
                        b.add_line(Some(full.clone()), line)
                            .map_err(|e| RulesError {
                                source_name: full.display().to_string(),
                                message: e.to_string(),
                            })?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RulesError {
                        source_name: full.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        for p in &config.patterns {
            b.add_line(None, p).map_err(|e| pattern_err(p, e))?;
        }
        let matcher = b.build().map_err(|e| RulesError {
            source_name: "ignore rules".into(),
            message: e.to_string(),
        })?;
        Ok(IgnoreRules { matcher })
    }

    /// Rules that ignore nothing.
    pub fn none() -> Self {
        IgnoreRules {
            matcher: Gitignore::empty(),
        }
    }

    /// True when `path` (a directory if `is_dir`) or any parent is ignored.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        // Relative paths are matched against the rules' root; the matcher
        // only panics for absolute paths outside it, which a RelPath never is.
        self.matcher
            .matched_path_or_any_parents(Path::new(path.as_str()), is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn defaults_cover_editor_and_notebook_noise() {
        let r = IgnoreRules::load(Path::new("/w"), &IgnoreConfig::default()).unwrap();
        assert!(r.is_ignored(&p(".ipynb_checkpoints"), true));
        assert!(r.is_ignored(&p("a/.ipynb_checkpoints/x-checkpoint.ipynb"), false));
        for f in ["a/.x.swp", "b~", ".#lock", "4913", "d/.DS_Store"] {
            assert!(r.is_ignored(&p(f), false), "{f}");
        }
        assert!(!r.is_ignored(&p("notebook.ipynb"), false));
        assert!(!r.is_ignored(&p("a/4913x"), false));
    }

    #[test]
    fn ignore_file_and_extra_patterns_with_negation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".tetherignore"),
            "data/\n*.csv\n!keep.csv\n",
        )
        .unwrap();
        let cfg = IgnoreConfig {
            patterns: vec!["/build".into()],
            ..IgnoreConfig::default()
        };
        let r = IgnoreRules::load(dir.path(), &cfg).unwrap();
        assert!(r.is_ignored(&p("data"), true));
        assert!(r.is_ignored(&p("data/big.bin"), false));
        assert!(r.is_ignored(&p("x/y.csv"), false));
        assert!(!r.is_ignored(&p("keep.csv"), false));
        assert!(r.is_ignored(&p("build"), true));
        assert!(!r.is_ignored(&p("src/build"), true));
        assert!(!r.is_ignored(&p(".tetherignore"), false));
    }

    #[test]
    fn no_defaults_means_nothing_ignored() {
        let cfg = IgnoreConfig {
            defaults: false,
            file: None,
            patterns: vec![],
        };
        let r = IgnoreRules::load(Path::new("/w"), &cfg).unwrap();
        assert!(!r.is_ignored(&p("a.swp"), false));
    }
}
