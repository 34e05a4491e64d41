//! [`CliError`]: one line for the user and an exit code.

use std::process::ExitCode;

/// A failure of the command, already phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags, URL, credentials or files: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running (remote unreachable, changes not
    /// saved): exit code 1.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// A usage error.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::Usage(message.to_string())
    }

    /// A runtime error.
    pub fn runtime(message: impl std::fmt::Display) -> Self {
        CliError::Runtime(message.to_string())
    }

    /// The process exit code: 2 for usage, 1 for runtime.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }

    /// The message on one line (newlines in library errors become `; `),
    /// with any other control character escaped (see [`one_line`]).
    pub fn one_line(&self) -> String {
        one_line(&self.to_string())
    }

    /// Prints `tether: <message>` to stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("tether: {}", self.one_line());
        ExitCode::from(self.exit_code())
    }
}

/// Joins the non-empty lines of `text` with `; ` and escapes every other
/// control character ([`escape_controls`](crate::logging::escape_controls)):
/// messages quote names from remotes, which must not drive the terminal.
pub fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    crate::logging::escape_controls(&joined).into_owned()
}

impl From<sync_core::BackendError> for CliError {
    fn from(e: sync_core::BackendError) -> Self {
        use sync_core::BackendError as B;
        match e {
            // Credentials, a missing bucket or repository: retrying will not
            // help, the user must change something (exit 2).
            B::Config(_) | B::Unsupported { .. } => CliError::usage(e),
            _ if e.is_permanent() => CliError::usage(e),
            _ => CliError::runtime(e),
        }
    }
}

impl From<sync_core::EngineError> for CliError {
    fn from(e: sync_core::EngineError) -> Self {
        use sync_core::EngineError as E;
        match e {
            E::State(e) => e.into(),
            E::Root { .. } | E::StateInsideRoot { .. } | E::Rules(_) => CliError::usage(e),
            _ => CliError::runtime(e),
        }
    }
}

impl From<sync_core::IndexError> for CliError {
    fn from(e: sync_core::IndexError) -> Self {
        CliError::runtime(format!("state directory: {e}"))
    }
}

/// A state directory that cannot be used is the user's to fix (exit 2):
/// another one, or stop the other process.
impl From<sync_core::StateError> for CliError {
    fn from(e: sync_core::StateError) -> Self {
        use sync_core::StateError as S;
        match &e {
            S::Foreign { state_dir, owner } => CliError::usage(format!(
                "state directory {} belongs to another directory or remote ({owner}); use another --state-dir",
                state_dir.display()
            )),
            S::Locked { .. } => CliError::usage(format!(
                "{e}: stop it first, or give this one its own --state-dir"
            )),
            _ => CliError::usage(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_one_line() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::runtime("x").exit_code(), 1);
        assert_eq!(
            CliError::runtime("first\n\n  second  \n").one_line(),
            "first; second"
        );
        assert_eq!(
            CliError::runtime("bad name \"a\rb\x1b[2Jc\u{9b}\"\nnext").one_line(),
            "bad name \"a\\rb\\x1b[2Jc\\u{9b}\"; next"
        );
    }

    #[test]
    fn backend_config_errors_are_usage_errors() {
        let e: CliError = sync_core::BackendError::Config("no bucket".into()).into();
        assert_eq!(e.exit_code(), 2);
        let e: CliError = sync_core::BackendError::transient("get", "s3://b/x", "refused").into();
        assert_eq!(e.exit_code(), 1);
    }
}
