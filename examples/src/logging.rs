//! tracing to stderr: text on a terminal, JSON otherwise.
//!
//! Text lines are for people and terminals, and they carry names that come
//! from a remote (object keys, file names in a git tree, error messages of
//! servers). So that such a name can neither start a forged log line nor
//! drive the terminal (colours, cursor moves, title changes), every field of
//! a text line — the message included — goes through [`escape_controls`].
//! JSON lines are escaped by the JSON encoder.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

use crate::cli::{LogArgs, LogFormat};
use crate::error::CliError;

/// Whether logs are JSON for `format` (pure; `terminal` says whether stderr
/// is a terminal).
pub fn use_json(format: LogFormat, terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    }
}

/// True for characters a terminal or a log reader acts on instead of
/// showing: C0 controls, DEL, C1 controls, and the bidirectional-text
/// controls that reorder what is displayed.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character escaped: `\n`, `\r`, `\t`, `\x1b`
/// for the other ASCII ones, `\u{9b}` beyond ASCII. Borrowed when there is
/// nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && is_unsafe(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// tracing-subscriber's field formatting, with [`escape_controls`] applied
/// to the result (field names are plain identifiers; values and the
/// message are what may carry remote text).
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut raw = String::new();
        self.0.format_fields(Writer::new(&mut raw), fields)?;
        writer.write_str(&escape_controls(&raw))
    }
}

/// Installs the global subscriber.
pub fn init(args: &LogArgs) -> Result<(), CliError> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| CliError::usage(format!("invalid --log-level {:?}: {e}", args.log_level)))?;
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if use_json(args.log_format, terminal) {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .fmt_fields(EscapedFields::default())
            .with_ansi(terminal)
            .with_target(false)
            .try_init()
    };
    result.map_err(|e| CliError::runtime(format!("cannot install the logger: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_only_on_a_terminal() {
        assert!(!use_json(LogFormat::Auto, true));
        assert!(use_json(LogFormat::Auto, false));
        assert!(use_json(LogFormat::Json, true));
        assert!(!use_json(LogFormat::Text, false));
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape_controls("plain ä/ö.txt"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\r\tc\x1b[31md\x7f\u{9b}e\u{202e}f\0"),
            "a\\nb\\r\\tc\\x1b[31md\\x7f\\u{9b}e\\u{202e}f\\x00"
        );
    }

    #[test]
    fn text_log_lines_carry_no_raw_controls() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(EscapedFields::default())
            .with_ansi(false)
            .finish();
        let evil = "x\nERROR forged line\x1b[31m";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("restore", remote = evil);
            let _guard = span.enter();
            tracing::warn!(path = %evil, other = ?evil, "skipping {evil}");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with('\n') && !text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains("skipping x\\nERROR forged line\\x1b[31m"),
            "{text:?}"
        );
    }
}
