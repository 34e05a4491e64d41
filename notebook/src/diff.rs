//! The notebook-aware diff ([`diff`]).
//!
//! **Matching cells.** When every cell of both versions has an id, and no
//! id repeats (nbformat ≥ 4.5, what Jupyter writes today), cells are
//! matched by id.
//! Otherwise cells are matched by their source: a Myers diff over the two
//! sequences of sources pairs equal cells, and within a replaced run an
//! old and a new cell of the same kind are paired as "changed" when their
//! sources are at least half alike. A removed and an added cell with the
//! same source are one **moved** cell; a matched cell whose position among
//! the matched cells changed is moved too.
//!
//! **What counts as a change.** Source (shown as a line diff) and outputs
//! (summarised, not shown: "outputs changed: 1 image, 3 lines of text →
//! 2 images"). Execution counts and metadata change on every run without
//! anyone editing anything; they are ignored unless
//! [`DiffOptions::metadata`] asks for them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use similar::{Algorithm, ChangeTag, DiffOp, TextDiff};

use crate::{Cell, CellKind, Notebook, Output};

/// The most old × new cell comparisons one replaced run may cost.
const MAX_PAIRINGS: usize = 10_000;

/// What to compare beyond sources and outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Also report execution counts and cell metadata.
    pub metadata: bool,
}

/// A cell's outputs, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputSummary {
    /// Images (`image/*`).
    pub images: usize,
    /// Lines of text (streams, `text/plain` results, error names).
    pub text_lines: usize,
    /// Rich outputs that are neither (HTML, JSON, widgets, …).
    pub other: usize,
    /// Errors raised.
    pub errors: usize,
}

impl OutputSummary {
    /// Counts `outputs`.
    pub fn of(outputs: &[Output]) -> Self {
        let mut s = OutputSummary::default();
        for o in outputs {
            match o {
                Output::Stream { text, .. } => s.text_lines += text.lines().count(),
                Output::Error { .. } => s.errors += 1,
                Output::Data { bundle } => {
                    if bundle.iter().any(|(m, _)| m.starts_with("image/")) {
                        s.images += 1;
                    } else if let Some((_, t)) = bundle.iter().find(|(m, _)| m == "text/plain") {
                        s.text_lines += t.lines().count();
                    } else {
                        s.other += 1;
                    }
                }
            }
        }
        s
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for OutputSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.images > 0 {
            parts.push(plural(self.images, "image", "images"));
        }
        if self.text_lines > 0 {
            parts.push(plural(self.text_lines, "line of text", "lines of text"));
        }
        if self.other > 0 {
            parts.push(plural(self.other, "rich output", "rich outputs"));
        }
        if self.errors > 0 {
            parts.push(plural(self.errors, "error", "errors"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One difference between two versions of a notebook. Indexes are
/// positions (0-based) in the old and the new notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellChange {
    /// A cell only the new version has.
    Added {
        /// Its position in the new notebook.
        new: usize,
        /// The cell.
        cell: Cell,
    },
    /// A cell only the old version has.
    Removed {
        /// Its position in the old notebook.
        old: usize,
        /// The cell.
        cell: Cell,
    },
    /// A cell in both, changed (and possibly moved).
    Changed {
        /// Its position in the old notebook.
        old: usize,
        /// Its position in the new notebook.
        new: usize,
        /// Its kind in the new notebook.
        kind: CellKind,
        /// It also moved relative to the other cells.
        moved: bool,
        /// The source as a unified line diff (`-`/`+`/` ` prefixed lines),
        /// when it changed.
        source: Option<String>,
        /// The outputs before and after, when they changed.
        outputs: Option<(OutputSummary, OutputSummary)>,
        /// The kind changed (code ↔ markdown).
        kind_changed: bool,
        /// Execution count or metadata changed (only with
        /// [`DiffOptions::metadata`]).
        metadata: bool,
    },
    /// A cell in both, unchanged but moved.
    Moved {
        /// Its position in the old notebook.
        old: usize,
        /// Its position in the new notebook.
        new: usize,
        /// Its kind.
        kind: CellKind,
    },
}

/// Everything that differs, in the new notebook's order (removed cells
/// where they were).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotebookDiff {
    /// The changes.
    pub changes: Vec<CellChange>,
}

impl NotebookDiff {
    /// True when nothing (that was compared) differs.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A unified line diff of two texts (` `, `-`, `+` prefixed lines, three
/// lines of context), as used for cell sources and non-notebook files.
pub fn text_diff(old: &str, new: &str) -> String {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .diff_lines(old, new);
    let mut out = String::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push_str("  ...\n");
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let sign = match change.tag() {
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                    ChangeTag::Equal => ' ',
                };
                out.push(sign);
                out.push_str(change.value().trim_end_matches(['\n', '\r']));
                out.push('\n');
            }
        }
    }
    out
}

fn similarity(a: &str, b: &str) -> f32 {
    TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .diff_lines(a, b)
        .ratio()
}

/// Compares a matched pair; `None` when nothing compared differs.
fn compare(
    (oi, o): (usize, &Cell),
    (ni, n): (usize, &Cell),
    moved: bool,
    options: DiffOptions,
) -> Option<CellChange> {
    let source = (o.source != n.source).then(|| text_diff(&o.source, &n.source));
    let outputs = (o.outputs != n.outputs)
        .then(|| (OutputSummary::of(&o.outputs), OutputSummary::of(&n.outputs)));
    let kind_changed = o.kind != n.kind;
    let metadata =
        options.metadata && (o.execution_count != n.execution_count || o.metadata != n.metadata);
    if source.is_none() && outputs.is_none() && !kind_changed && !metadata {
        return moved.then_some(CellChange::Moved {
            old: oi,
            new: ni,
            kind: n.kind,
        });
    }
    Some(CellChange::Changed {
        old: oi,
        new: ni,
        kind: n.kind,
        moved,
        source,
        outputs,
        kind_changed,
        metadata,
    })
}

/// Old → new index pairs, by id (every cell has one) or by source.
fn match_cells(old: &[Cell], new: &[Cell]) -> Vec<(usize, usize)> {
    // Ids are used only when every cell has one and none repeats (a
    // copied cell can carry its original's id).
    let all_ids = |cells: &[Cell]| {
        let mut seen = BTreeSet::new();
        cells
            .iter()
            .all(|c| c.id.as_deref().is_some_and(|id| seen.insert(id)))
    };
    if all_ids(old) && all_ids(new) {
        let by_id: HashMap<&str, usize> = old
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.id.as_deref()?, i)))
            .collect();
        let mut taken = BTreeSet::new();
        return new
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                let i = *by_id.get(c.id.as_deref()?)?;
                taken.insert(i).then_some((i, j))
            })
            .collect();
    }
    let a: Vec<&str> = old.iter().map(|c| c.source.as_str()).collect();
    let b: Vec<&str> = new.iter().map(|c| c.source.as_str()).collect();
    let mut pairs = Vec::new();
    for op in similar::capture_diff_slices(Algorithm::Myers, &a, &b) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => pairs.extend((0..len).map(|k| (old_index + k, new_index + k))),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                // Pair in order, same kind and at least half alike; a huge
                // replaced run (thousands of cells each way) is left as
                // removed + added rather than compared pair by pair.
                if old_len.saturating_mul(new_len) > MAX_PAIRINGS {
                    continue;
                }
                let mut j = new_index;
                for (i, o) in old.iter().enumerate().skip(old_index).take(old_len) {
                    while j < new_index + new_len {
                        let n = &new[j];
                        j += 1;
                        if o.kind == n.kind && similarity(&o.source, &n.source) >= 0.5 {
                            pairs.push((i, j - 1));
                            break;
                        }
                    }
                }
            }
            DiffOp::Delete { .. } | DiffOp::Insert { .. } => {}
        }
    }
    // A removed and an added cell with the same source: moved.
    let used_old: BTreeSet<usize> = pairs.iter().map(|p| p.0).collect();
    let used_new: BTreeSet<usize> = pairs.iter().map(|p| p.1).collect();
    let mut free_new: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, c) in new.iter().enumerate().rev() {
        if !used_new.contains(&j) {
            free_new.entry(c.source.as_str()).or_default().push(j);
        }
    }
    for (i, c) in old.iter().enumerate() {
        if used_old.contains(&i) {
            continue;
        }
        if let Some(j) = free_new.get_mut(c.source.as_str()).and_then(Vec::pop) {
            pairs.push((i, j));
        }
    }
    pairs
}

/// Pairs whose order among the matched cells changed: those outside a
/// longest increasing run of old positions (taken in new order).
fn moved_pairs(pairs: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
    let mut by_new = pairs.to_vec();
    by_new.sort_by_key(|p| p.1);
    let olds: Vec<usize> = by_new.iter().map(|p| p.0).collect();
    let mut sorted = olds.clone();
    sorted.sort_unstable();
    // The longest common subsequence of the old order and the order seen
    // from the new side is the longest increasing run.
    let mut stay = BTreeSet::new();
    for op in similar::capture_diff_slices(Algorithm::Myers, &sorted, &olds) {
        if let DiffOp::Equal { new_index, len, .. } = op {
            stay.extend(olds[new_index..new_index + len].iter().copied());
        }
    }
    by_new
        .into_iter()
        .filter(|p| !stay.contains(&p.0))
        .collect()
}

/// Compares two versions of a notebook (see the module doc).
pub fn diff(old: &Notebook, new: &Notebook, options: DiffOptions) -> NotebookDiff {
    let pairs = match_cells(&old.cells, &new.cells);
    let moved = moved_pairs(&pairs);
    let old_of_new: HashMap<usize, usize> = pairs.iter().map(|&(i, j)| (j, i)).collect();
    let matched_old: BTreeSet<usize> = pairs.iter().map(|p| p.0).collect();
    let mut changes = Vec::new();
    let mut next_old = 0;
    let flush_removed = |upto: usize, next_old: &mut usize, changes: &mut Vec<CellChange>| {
        while *next_old < upto {
            if !matched_old.contains(next_old) {
                changes.push(CellChange::Removed {
                    old: *next_old,
                    cell: old.cells[*next_old].clone(),
                });
            }
            *next_old += 1;
        }
    };
    for (j, n) in new.cells.iter().enumerate() {
        match old_of_new.get(&j) {
            Some(&i) => {
                if !moved.contains(&(i, j)) {
                    flush_removed(i, &mut next_old, &mut changes);
                }
                if let Some(c) =
                    compare((i, &old.cells[i]), (j, n), moved.contains(&(i, j)), options)
                {
                    changes.push(c);
                }
            }
            None => changes.push(CellChange::Added {
                new: j,
                cell: n.clone(),
            }),
        }
    }
    flush_removed(old.cells.len(), &mut next_old, &mut changes);
    NotebookDiff { changes }
}

/// A notebook diff when both sides parse as notebooks, else a text diff
/// of the two (lossy UTF-8); empty when nothing differs.
pub fn diff_or_text(old: &[u8], new: &[u8], options: DiffOptions) -> String {
    match (Notebook::parse(old), Notebook::parse(new)) {
        (Ok(a), Ok(b)) => diff(&a, &b, options).to_string(),
        _ => text_diff(&String::from_utf8_lossy(old), &String::from_utf8_lossy(new)),
    }
}

fn indented(f: &mut fmt::Formatter<'_>, prefix: &str, text: &str) -> fmt::Result {
    for line in text.lines() {
        writeln!(f, "    {prefix}{line}")?;
    }
    Ok(())
}

impl fmt::Display for NotebookDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            match c {
                CellChange::Added { new, cell } => {
                    writeln!(f, "cell {} ({}) added:", new + 1, cell.kind)?;
                    indented(f, "+", &cell.source)?;
                }
                CellChange::Removed { old, cell } => {
                    writeln!(f, "old cell {} ({}) removed:", old + 1, cell.kind)?;
                    indented(f, "-", &cell.source)?;
                }
                CellChange::Moved { old, new, kind } => {
                    writeln!(
                        f,
                        "cell {} ({kind}) moved from position {}",
                        new + 1,
                        old + 1
                    )?;
                }
                CellChange::Changed {
                    old,
                    new,
                    kind,
                    moved,
                    source,
                    outputs,
                    kind_changed,
                    metadata,
                } => {
                    write!(f, "cell {} ({kind}) changed", new + 1)?;
                    if *moved {
                        write!(f, ", moved from position {}", old + 1)?;
                    }
                    writeln!(f, ":")?;
                    if *kind_changed {
                        writeln!(f, "    cell type changed to {kind}")?;
                    }
                    if let Some(s) = source {
                        indented(f, "", s)?;
                    }
                    match outputs {
                        Some((a, b)) if a == b => {
                            writeln!(f, "    outputs changed: {b}, different content")?;
                        }
                        Some((a, b)) => writeln!(f, "    outputs changed: {a} → {b}")?,
                        None => {}
                    }
                    if *metadata {
                        writeln!(f, "    execution count or metadata changed")?;
                    }
                }
            }
        }
        Ok(())
    }
}
