//! The parser, the diff and the conversion on notebooks written by
//! nbformat itself (`tests/fixtures/make.py`), checked with real Python.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use notebook::{CellChange, CellKind, DiffOptions, Notebook, OutputSummary, diff, diff_or_text};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn nb(name: &str) -> Notebook {
    Notebook::parse(&fixture(name)).unwrap()
}

#[test]
fn nbformat_notebooks_parse_with_ids_outputs_and_language() {
    let a = nb("analysis-v1.ipynb");
    assert_eq!(a.cells.len(), 8);
    assert_eq!(a.language.as_deref(), Some("python"));
    assert_eq!(a.cells[0].kind, CellKind::Markdown);
    assert_eq!(a.cells[6].kind, CellKind::Raw);
    assert_eq!(a.cells[1].id.as_deref(), Some("imports"));
    assert_eq!(
        a.cells[1].source,
        "%matplotlib inline\nimport math\nimport json"
    );
    assert_eq!(a.cells[1].execution_count, Some(1));
    let plot = OutputSummary::of(&a.cells[5].outputs);
    assert_eq!((plot.images, plot.text_lines), (1, 0));
    assert_eq!(OutputSummary::of(&a.cells[3].outputs).text_lines, 4);
    let old = nb("analysis-v1-no-ids.ipynb");
    assert!(old.cells.iter().all(|c| c.id.is_none()));
    assert_eq!(old.minor, 4);
}

/// The script must be Python that Python itself parses.
fn python_parses(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.py");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 rejects the script: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_notebook_becomes_a_script_python_accepts() {
    let script = nb("analysis-v1.ipynb").to_script("analysis.ipynb");
    python_parses(&script);
    assert!(script.starts_with("# Converted from analysis.ipynb by tether"));
    assert!(script.contains("# %% [markdown]\n# # Sales analysis\n#\n# Quarterly numbers.\n"));
    assert!(script.contains(
        "# tether: IPython syntax, not Python; commented out: %matplotlib inline\nimport math\n"
    ));
    assert!(script.contains(
        "# tether: IPython syntax, not Python; commented out: !pip install --quiet tabulate\n"
    ));
    // The shell escape was the loop's only statement: `pass` keeps the loop.
    assert!(script.contains("for v in values:\n    # tether: IPython syntax, not Python; commented out: !echo $v\n    pass\nprint(sum(values))\n"), "{script}");
    assert!(script.contains("# tether: the cell magic %%bash makes this whole cell not Python; commented out:\n# %%bash\n# echo from bash\n"));
    assert!(script.contains("def area(r):\n    return math.pi * r ** 2\n\narea(2)\n"));
    assert!(script.contains("# %% [raw]\n# raw text, passed through\n"));
    // Code cells keep their order.
    let imports = script.find("import math").unwrap();
    let area = script.find("def area").unwrap();
    assert!(imports < area);
}

fn summary(d: &notebook::NotebookDiff) -> Vec<String> {
    d.changes
        .iter()
        .map(|c| match c {
            CellChange::Added { new, cell } => format!("added {new} {}", cell.kind),
            CellChange::Removed { old, .. } => format!("removed {old}"),
            CellChange::Moved { old, new, .. } => format!("moved {old}->{new}"),
            CellChange::Changed {
                old,
                new,
                source,
                outputs,
                moved,
                ..
            } => format!(
                "changed {old}->{new}{}{}{}",
                if source.is_some() { " source" } else { "" },
                if outputs.is_some() { " outputs" } else { "" },
                if *moved { " moved" } else { "" }
            ),
        })
        .collect()
}

#[test]
fn the_diff_names_added_removed_moved_and_changed_cells_and_ignores_reruns() {
    for (a, b) in [
        ("analysis-v1.ipynb", "analysis-v2.ipynb"),
        ("analysis-v1-no-ids.ipynb", "analysis-v2-no-ids.ipynb"),
    ] {
        let d = diff(&nb(a), &nb(b), DiffOptions::default());
        let s = summary(&d);
        // install and imports swapped: one of them is the moved one.
        assert!(
            s.contains(&"moved 2->1".to_owned()) || s.contains(&"moved 1->2".to_owned()),
            "{a}: {s:?}"
        );
        assert!(s.contains(&"removed 4".to_owned()), "{a}: {s:?}"); // %%bash
        assert!(s.contains(&"changed 5->4 outputs".to_owned()), "{a}: {s:?}"); // plot
        assert!(s.contains(&"added 5 markdown".to_owned()), "{a}: {s:?}");
        assert!(
            s.contains(&"changed 7->7 source outputs".to_owned()),
            "{a}: {s:?}"
        );
        // Every code cell was re-run (new execution counts): not a change.
        assert_eq!(s.len(), 5, "{a}: {s:?}");
        let text = d.to_string();
        assert!(
            text.contains("    -    return math.pi * r ** 2\n    +    return math.pi * r * r\n"),
            "{text}"
        );
        assert!(
            text.contains("outputs changed: 1 image → 2 images"),
            "{text}"
        );
        assert!(
            text.contains("outputs changed: 1 line of text, different content"),
            "{text}"
        );
        assert!(
            text.contains("cell 6 (markdown) added:\n    +## Conclusion\n"),
            "{text}"
        );
        assert!(
            text.contains("old cell 5 (code) removed:\n    -%%bash\n"),
            "{text}"
        );
        // Asked for, the re-runs show.
        let all = diff(&nb(a), &nb(b), DiffOptions { metadata: true });
        assert!(all.changes.len() > d.changes.len(), "{a}");
        assert!(
            all.to_string()
                .contains("execution count or metadata changed")
        );
    }
    let same = diff(
        &nb("analysis-v1.ipynb"),
        &nb("analysis-v1.ipynb"),
        DiffOptions::default(),
    );
    assert!(same.is_empty());
}

#[test]
fn what_is_not_a_notebook_gets_a_clear_error_or_a_text_diff() {
    let e = Notebook::parse(b"{not json").unwrap_err();
    assert!(
        e.to_string().starts_with("not a notebook: not valid JSON"),
        "{e}"
    );
    let e = Notebook::parse(br#"{"nbformat": 3, "worksheets": []}"#).unwrap_err();
    assert!(e.to_string().contains("nbformat 3 is not supported"), "{e}");
    let e = Notebook::parse(
        br#"{"nbformat": 4, "cells": [{"cell_type": "code", "source": "x", "outputs": 5}]}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("cell 0: outputs is not a list"),
        "{e}"
    );
    let e = Notebook::parse(
        br#"{"nbformat": 4, "cells": [{"cell_type": "code", "source": ["x", 1]}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cell 0 source"), "{e}");
    let e = Notebook::parse(br#"{"nbformat": 4, "cells": [{"cell_type": "sql", "source": ""}]}"#)
        .unwrap_err();
    assert!(e.to_string().contains("unknown cell_type"), "{e}");
    // Not notebooks: a line diff.
    let t = diff_or_text(b"a\nb\nc\n", b"a\nB\nc\n", DiffOptions::default());
    assert_eq!(t, " a\n-b\n+B\n c\n");
    let t = diff_or_text(&fixture("analysis-v1.ipynb"), b"{}", DiffOptions::default());
    assert!(t.contains("-{"), "{t}");
}

#[test]
fn a_notebook_of_many_cells_diffs_in_bounded_work() {
    // 3,000 cells replaced by 3,000 others: 9 million pairings would be
    // compared pair by pair; the bound turns them into removed + added.
    let cells = |tag: &str| {
        let v: Vec<serde_json::Value> = (0..3_000)
            .map(|i| serde_json::json!({"cell_type": "code", "source": format!("{tag} {i}\nshared line"), "outputs": []}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"nbformat": 4, "nbformat_minor": 4, "cells": v}))
            .unwrap()
    };
    let a = Notebook::parse(&cells("old")).unwrap();
    let b = Notebook::parse(&cells("new")).unwrap();
    let d = diff(&a, &b, DiffOptions::default());
    assert_eq!(d.changes.len(), 6_000);
}

#[test]
fn repeated_cell_ids_fall_back_to_matching_by_source() {
    let nb = br#"{"nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "id": "same", "source": "a = 1", "outputs": []},
        {"cell_type": "code", "id": "same", "source": "b = 2", "outputs": []}]}"#;
    let a = Notebook::parse(nb).unwrap();
    assert!(diff(&a, &a, DiffOptions::default()).is_empty());
}
