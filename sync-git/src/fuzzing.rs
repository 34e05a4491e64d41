//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`); not an API.
//!
//! [`Trees::list`] stores raw tree objects, as a fetch from a hostile remote
//! could deliver them, and reads them with the same `TreeReader` a restore
//! (`list`) and a re-base (`diff`) use. [`modes`] reads a `.tether/modes`
//! file as a restore and a re-base read it from a fetched commit.

use std::path::Path;

use sync_core::BackendError;
use sync_core::restore::PlanKind;

use crate::tree::{Modes, TreeReader, local_error};

/// Parses and checks a modes file; returns it re-encoded.
pub fn modes(bytes: &[u8]) -> Result<Vec<u8>, BackendError> {
    Ok(Modes::decode(bytes, ".tether/modes in tree (fuzz)")?.encode())
}

/// A bare repository whose object writes stay in memory.
pub struct Trees {
    repo: gix::Repository,
}

impl Trees {
    /// Creates the repository in the empty directory `dir`.
    pub fn init(dir: &Path) -> Result<Self, BackendError> {
        let repo = gix::init_bare(dir)
            .map_err(|e| local_error("init", e))?
            .with_object_memory();
        Ok(Trees { repo })
    }

    /// Forgets earlier objects, stores `objects` as trees (the first is the
    /// root) and lists the root as a restore does: each path with the kind
    /// the restore plan gets (`None`: a submodule entry, skipped). The tree
    /// is also diffed against nothing, as a re-base reads it.
    #[allow(clippy::type_complexity)]
    pub fn list(
        &self,
        objects: &[&[u8]],
    ) -> Result<Vec<(Vec<u8>, Option<PlanKind>)>, BackendError> {
        use gix::objs::Write as _;
        self.repo.objects.reset_object_memory();
        let mut root = None;
        for data in objects {
            let id = self
                .repo
                .write_buf(gix::objs::Kind::Tree, data)
                .map_err(|e| local_error("write", e))?;
            root.get_or_insert(id);
        }
        let Some(root) = root else {
            return Ok(Vec::new());
        };
        let mut reader = TreeReader::new(&self.repo, crate::options::DEFAULT_MAX_ENTRIES);
        reader.diff(None, Some(root))?;
        Ok(reader
            .list(root)?
            .into_iter()
            .map(|(path, entry)| {
                let kind = match entry.kind {
                    gix::objs::tree::EntryKind::Tree => Some(PlanKind::Dir),
                    gix::objs::tree::EntryKind::Blob
                    | gix::objs::tree::EntryKind::BlobExecutable => Some(PlanKind::File),
                    gix::objs::tree::EntryKind::Link => Some(PlanKind::Symlink),
                    gix::objs::tree::EntryKind::Commit => None,
                };
                (path.into(), kind)
            })
            .collect())
    }
}
