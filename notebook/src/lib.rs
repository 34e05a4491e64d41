//! `notebook`: Jupyter notebooks (`.ipynb`, nbformat 4) as tether reads
//! them — one parser for the two things tether does with a notebook:
//!
//! * **diff** two versions cell by cell ([`diff`]): cells added, removed,
//!   moved and changed, a changed cell's source as a line diff, its outputs
//!   summarised ("1 image, 3 lines of text"), execution counts and
//!   metadata ignored unless asked ([`DiffOptions`]);
//! * **convert** a notebook to a script ([`Notebook::to_script`]): code
//!   cells in order, IPython magics and shell escapes commented out,
//!   markdown as comments — what `tether manifests app` runs, without
//!   nbconvert at run time.
//!
//! ```text
//! bytes ──► Notebook::parse ──► Notebook { cells: [Cell { kind, id, source, outputs }] }
//!                                   ├─► to_script() ──► String
//!                                   └─► diff(old, new) ──► NotebookDiff ──► Display
//! ```
//!
//! The format is the nbformat 4 JSON schema: `cells[]` with `cell_type`
//! (`code`, `markdown`, `raw`), `source` (a string or a list of strings),
//! an optional `id` (nbformat 4.5), and for code cells `outputs[]`
//! (`stream`, `execute_result`, `display_data`, `error`) and
//! `execution_count`. Unknown fields are ignored (newer minor versions add
//! some); anything the diff or the conversion needs that is missing or of
//! the wrong type is an error naming the cell. Version 3 and older are
//! refused. No notebook library is used: the format is small and stable.
//! [`diff_or_text`] falls back to a plain line diff for files that are
//! not notebooks.

#![forbid(unsafe_code)]

mod diff;
mod script;

pub use diff::{
    CellChange, DiffOptions, NotebookDiff, OutputSummary, diff, diff_or_text, text_diff,
};

use serde_json::Value;

/// A notebook that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotebookError {
    /// Not JSON.
    #[error("not a notebook: not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an nbformat 4 notebook.
    #[error("not a notebook: {0}")]
    Shape(String),
    /// A notebook of a format version this crate does not read.
    #[error(
        "nbformat {0} is not supported (only nbformat 4; convert it with `jupyter nbconvert --to notebook`)"
    )]
    Version(u64),
}

/// What a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// Code.
    Code,
    /// Markdown.
    Markdown,
    /// Raw text, passed through by nbconvert.
    Raw,
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CellKind::Code => "code",
            CellKind::Markdown => "markdown",
            CellKind::Raw => "raw",
        })
    }
}

/// One output of a code cell, reduced to what a diff summary needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Text on stdout or stderr.
    Stream {
        /// `stdout` or `stderr`.
        name: String,
        /// The text.
        text: String,
    },
    /// A result or display: MIME type → content (text, or base64 for
    /// binary types such as images).
    Data {
        /// The MIME bundle, in the notebook's order.
        bundle: Vec<(String, String)>,
    },
    /// An exception.
    Error {
        /// Its name.
        ename: String,
        /// Its value.
        evalue: String,
    },
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Code, markdown or raw.
    pub kind: CellKind,
    /// The cell id (nbformat ≥ 4.5), if any.
    pub id: Option<String>,
    /// The source text, joined.
    pub source: String,
    /// Outputs (code cells).
    pub outputs: Vec<Output>,
    /// The execution count (code cells that ran).
    pub execution_count: Option<u64>,
    /// The cell's metadata, as JSON text (compared only when asked).
    pub metadata: String,
}

/// A parsed notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notebook {
    /// `nbformat_minor`.
    pub minor: u64,
    /// The kernel's language (`metadata.kernelspec.language` or
    /// `metadata.language_info.name`), if named.
    pub language: Option<String>,
    /// The cells, in order.
    pub cells: Vec<Cell>,
}

/// A string or a list of strings, joined (nbformat's "multiline string").
fn multiline(v: Option<&Value>, what: &dyn Fn() -> String) -> Result<String, NotebookError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| {
                p.as_str().ok_or_else(|| {
                    NotebookError::Shape(format!("{}: not a list of strings", what()))
                })
            })
            .collect(),
        Some(_) => Err(NotebookError::Shape(format!(
            "{}: not a string or a list of strings",
            what()
        ))),
    }
}

fn parse_output(v: &Value, cell: usize, n: usize) -> Result<Output, NotebookError> {
    let what = || format!("cell {cell}, output {n}");
    let obj = v
        .as_object()
        .ok_or_else(|| NotebookError::Shape(format!("{}: not an object", what())))?;
    let kind = obj.get("output_type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "stream" => Ok(Output::Stream {
            name: obj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("stdout")
                .to_owned(),
            text: multiline(obj.get("text"), &|| format!("{} text", what()))?,
        }),
        "execute_result" | "display_data" => {
            let mut bundle = Vec::new();
            if let Some(data) = obj.get("data") {
                let data = data.as_object().ok_or_else(|| {
                    NotebookError::Shape(format!("{}: data is not an object", what()))
                })?;
                for (mime, content) in data {
                    let text = match content {
                        // JSON outputs (application/json, widgets) stay JSON.
                        Value::Object(_) => content.to_string(),
                        other => multiline(Some(other), &|| format!("{} {mime}", what()))?,
                    };
                    bundle.push((mime.clone(), text));
                }
            }
            Ok(Output::Data { bundle })
        }
        "error" => Ok(Output::Error {
            ename: obj
                .get("ename")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            evalue: obj
                .get("evalue")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }),
        other => Err(NotebookError::Shape(format!(
            "{}: unknown output_type {other:?}",
            what()
        ))),
    }
}

impl Notebook {
    /// Parses an `.ipynb` file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Notebook, NotebookError> {
        let root: Value = serde_json::from_slice(bytes)?;
        let obj = root
            .as_object()
            .ok_or_else(|| NotebookError::Shape("the top level is not an object".into()))?;
        let major = obj
            .get("nbformat")
            .and_then(Value::as_u64)
            .ok_or_else(|| NotebookError::Shape("no nbformat number".into()))?;
        if major != 4 {
            return Err(NotebookError::Version(major));
        }
        let minor = obj
            .get("nbformat_minor")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let metadata = obj.get("metadata");
        let language = metadata
            .and_then(|m| m.pointer("/kernelspec/language"))
            .or_else(|| metadata.and_then(|m| m.pointer("/language_info/name")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let cells_json = obj
            .get("cells")
            .and_then(Value::as_array)
            .ok_or_else(|| NotebookError::Shape("no cells list".into()))?;
        let mut cells = Vec::with_capacity(cells_json.len());
        for (i, c) in cells_json.iter().enumerate() {
            let what = || format!("cell {i}");
            let c = c
                .as_object()
                .ok_or_else(|| NotebookError::Shape(format!("{}: not an object", what())))?;
            let kind = match c.get("cell_type").and_then(Value::as_str) {
                Some("code") => CellKind::Code,
                Some("markdown") => CellKind::Markdown,
                Some("raw") => CellKind::Raw,
                other => {
                    return Err(NotebookError::Shape(format!(
                        "{}: unknown cell_type {other:?}",
                        what()
                    )));
                }
            };
            let source = multiline(c.get("source"), &|| format!("{} source", what()))?;
            let mut outputs = Vec::new();
            if let Some(list) = c.get("outputs") {
                let list = list.as_array().ok_or_else(|| {
                    NotebookError::Shape(format!("{}: outputs is not a list", what()))
                })?;
                for (n, o) in list.iter().enumerate() {
                    outputs.push(parse_output(o, i, n)?);
                }
            }
            cells.push(Cell {
                kind,
                id: c.get("id").and_then(Value::as_str).map(str::to_owned),
                source,
                outputs,
                execution_count: c.get("execution_count").and_then(Value::as_u64),
                metadata: c.get("metadata").map(Value::to_string).unwrap_or_default(),
            });
        }
        Ok(Notebook {
            minor,
            language,
            cells,
        })
    }
}
