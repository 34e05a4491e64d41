//! Notebook → script ([`Notebook::to_script`]).
//!
//! The script uses the "percent" cell markers that Jupytext, VS Code and
//! Spyder understand (`# %%`, `# %% [markdown]`), so it can be opened as a
//! notebook again. Code cells are copied in order. A line that starts
//! (after indentation) with `%` or `!` is an IPython magic or shell escape
//! that plain Python cannot run: it is commented out with a note. A cell magic
//! (`%%bash`, `%%time`, …: the whole cell belongs to it) comments out the
//! whole cell. Markdown and raw cells become comments.
//! An indented magic is followed by `pass` at its indentation, so a block
//! whose only statement it was stays valid.

use crate::{CellKind, Notebook};

const NOTE: &str = "tether: IPython syntax, not Python; commented out:";

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// The indentation of `line` and the rest.
fn split_indent(line: &str) -> (&str, &str) {
    let rest = line.trim_start_matches([' ', '\t']);
    (&line[..line.len() - rest.len()], rest)
}

fn is_ipython(rest: &str) -> bool {
    rest.starts_with('%') || rest.starts_with('!')
}

impl Notebook {
    /// The notebook as a script (see the module doc). `name` is shown in
    /// the header line.
    pub fn to_script(&self, name: &str) -> String {
        let mut out = format!(
            "# Converted from {name} by tether: code cells in order, markdown as comments,\n# IPython magics and shell escapes commented out.\n"
        );
        for cell in &self.cells {
            out.push('\n');
            match cell.kind {
                CellKind::Markdown => {
                    out.push_str("# %% [markdown]\n");
                    comment(&mut out, &cell.source);
                }
                CellKind::Raw => {
                    out.push_str("# %% [raw]\n");
                    comment(&mut out, &cell.source);
                }
                CellKind::Code => {
                    out.push_str("# %%\n");
                    let first = cell.source.lines().find(|l| !l.trim().is_empty());
                    if let Some(magic) = first.filter(|l| l.trim_start().starts_with("%%")) {
                        let magic = magic.split_whitespace().next().unwrap_or(magic);
                        out.push_str(&format!(
                            "# tether: the cell magic {magic} makes this whole cell not Python; commented out:\n"
                        ));
                        comment(&mut out, &cell.source);
                        continue;
                    }
                    for line in cell.source.lines() {
                        let (indent, rest) = split_indent(line);
                        if is_ipython(rest) {
                            out.push_str(&format!("{indent}# {NOTE} {rest}\n"));
                            if !indent.is_empty() {
                                // Keeps the block it was in a block.
                                out.push_str(&format!("{indent}pass\n"));
                            }
                        } else {
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                }
            }
        }
        out
    }
}
