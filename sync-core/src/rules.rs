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
//! files stay. Deleting the ignore file therefore un-ignores everything it
//! listed. An ignore file that no longer compiles or cannot be read is
//! reported and the previous rules are kept. The ignore file itself is
//! never ignored, so its edits are always seen and it is restored with the
//! directory.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::path::RelPath;

/// Patterns ignored unless [`IgnoreConfig::defaults`] is false: Jupyter
/// checkpoints and the temporary files of its atomic save (`.~name`, renamed
/// over `name` once written), vim/emacs swap, backup and lock files, vim's `4913` write
/// probe, macOS metadata, and tether's own temporary restore files.
pub const DEFAULT_PATTERNS: &[&str] = &[
    ".ipynb_checkpoints/",
    ".~*",
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
    /// directory. A missing file is not an error (it may be created
    /// later). When it lies inside the directory, the engine applies its
    /// edits while running, and it is always synced itself.
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
#[error("ignore rules from {source_name}: {source}")]
pub struct RulesError {
    /// The file or "pattern" the bad rule came from.
    pub source_name: String,
    /// What is wrong (an I/O error or the pattern compiler's).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Compiled ignore rules for one synced directory.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    matcher: Gitignore,
    /// The ignore file, when it is inside the directory: never ignored, so
    /// its edits are always seen and it travels with the directory.
    own_file: Option<RelPath>,
}

/// The ignore file of `config` as a full path, and as a path inside `root`
/// when it is one. An absolute path is resolved through symlinks (as the
/// engine's root is) so it can be recognised inside the tree.
pub(crate) fn ignore_file_paths(
    root: &Path,
    config: &IgnoreConfig,
) -> Option<(PathBuf, Option<RelPath>)> {
    let file = config.file.as_ref()?;
    let full = if file.is_absolute() {
        match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| file.clone()),
            _ => file.clone(),
        }
    } else {
        root.join(file)
    };
    let inside = RelPath::from_local(root, &full).ok();
    Some((full, inside))
}

/// Reads an ignore file: `Ok(None)` when it does not exist.
pub(crate) fn read_ignore_file(full: &Path) -> Result<Option<String>, RulesError> {
    match std::fs::read_to_string(full) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RulesError {
            source_name: full.display().to_string(),
            source: e.into(),
        }),
    }
}

impl IgnoreRules {
    /// Compiles the rules of `config` for the directory `root`, reading the
    /// ignore file.
    pub fn load(root: &Path, config: &IgnoreConfig) -> Result<Self, RulesError> {
        let text = match ignore_file_paths(root, config) {
            Some((full, _)) => read_ignore_file(&full)?,
            None => None,
        };
        Self::build(root, config, text.as_deref())
    }

    /// Compiles the rules of `config` for `root` with `file_text` as the
    /// ignore file's contents (`None`: no such file), so a caller that has
    /// read the file compiles exactly what it read.
    pub(crate) fn build(
        root: &Path,
        config: &IgnoreConfig,
        file_text: Option<&str>,
    ) -> Result<Self, RulesError> {
        let mut b = GitignoreBuilder::new(root);
        let pattern_err = |p: &str, e: ignore::Error| RulesError {
            source_name: format!("pattern {p:?}"),
            source: e.into(),
        };
        if config.defaults {
            for p in DEFAULT_PATTERNS {
                b.add_line(None, p).map_err(|e| pattern_err(p, e))?;
            }
        }
        let file = ignore_file_paths(root, config);
        if let (Some((full, _)), Some(text)) = (&file, file_text) {
            for line in text.lines() {
                b.add_line(Some(full.clone()), line)
                    .map_err(|e| RulesError {
                        source_name: full.display().to_string(),
                        source: e.into(),
                    })?;
            }
        }
        for p in &config.patterns {
            b.add_line(None, p).map_err(|e| pattern_err(p, e))?;
        }
        let matcher = b.build().map_err(|e| RulesError {
            source_name: "ignore rules".into(),
            source: e.into(),
        })?;
        Ok(IgnoreRules {
            matcher,
            own_file: file.and_then(|(_, inside)| inside),
        })
    }

    /// Rules that ignore nothing.
    pub fn none() -> Self {
        IgnoreRules {
            matcher: Gitignore::empty(),
            own_file: None,
        }
    }

    /// True when `path` (a directory if `is_dir`) or any parent is ignored.
    /// The ignore file itself never is (unless it lies in an ignored
    /// directory, which is then neither watched nor walked).
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        if !is_dir && self.own_file.as_ref() == Some(path) {
            return false;
        }
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
        for f in [
            "a/.x.swp",
            "b~",
            ".#lock",
            "4913",
            "d/.DS_Store",
            "nb/.~analysis.ipynb",
        ] {
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
    fn the_ignore_file_is_never_ignored_by_its_own_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("conf")).unwrap();
        std::fs::write(root.join("conf/ignore"), ".*\nconf/*\n").unwrap();
        // Given relative, and given absolute.
        for file in [PathBuf::from("conf/ignore"), root.join("conf/ignore")] {
            let cfg = IgnoreConfig {
                file: Some(file),
                ..IgnoreConfig::default()
            };
            let r = IgnoreRules::load(&root, &cfg).unwrap();
            assert!(!r.is_ignored(&p("conf/ignore"), false));
            assert!(r.is_ignored(&p("conf/other"), false));
            assert!(r.is_ignored(&p(".env"), false));
        }
        // Text given by the caller is what gets compiled.
        let cfg = IgnoreConfig {
            file: Some(PathBuf::from("conf/ignore")),
            ..IgnoreConfig::default()
        };
        let r = IgnoreRules::build(&root, &cfg, Some("*.csv\n")).unwrap();
        assert!(r.is_ignored(&p("a.csv"), false));
        assert!(!r.is_ignored(&p(".env"), false));
        assert!(IgnoreRules::build(&root, &cfg, Some("[z-a]\n")).is_err());
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
