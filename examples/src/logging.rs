//! tracing to stderr: text on a terminal, JSON otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
        builder.with_ansi(terminal).with_target(false).try_init()
    };
    result.map_err(|e| CliError::runtime(format!("cannot install the logger: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_only_on_a_terminal() {
        assert!(!use_json(LogFormat::Auto, true));
        assert!(use_json(LogFormat::Auto, false));
        assert!(use_json(LogFormat::Json, true));
        assert!(!use_json(LogFormat::Text, false));
    }
}
