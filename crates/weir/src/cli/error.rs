//! What can go wrong in an operator command, and the exit code of each.

use std::fmt;
use std::process::ExitCode;

/// The failure of one operator command.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// The broker answered with an error status (exit code 1).
    Refused {
        /// HTTP status of the answer.
        status: u16,
        /// The API's `error` message.
        message: String,
        /// What the operator can do about it, when the command knows.
        hint: Option<String>,
    },
    /// The broker's answer made no sense to this client (exit code 1).
    BadAnswer(String),
    /// A local failure: a file that cannot be read, stdout closed (exit code 1).
    Local(String),
    /// The command line or its input is wrong (exit code 2, as clap's own errors).
    Usage(String),
    /// The HTTP API could not be reached (exit code 3).
    Unreachable {
        /// The `--api` URL.
        api: String,
        /// The operating system's reason.
        detail: String,
    },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit code as a number: 1 refused, 2 usage, 3 unreachable.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::BadAnswer(_) | CliError::Local(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
        }
    }

    /// Adds `hint` to a refusal with HTTP status `status` (other errors pass through).
    #[must_use]
    pub fn hint_for(self, status: u16, hint: impl Into<String>) -> Self {
        match self {
            CliError::Refused {
                status: refused,
                message,
                hint: None,
            } if refused == status => CliError::Refused {
                status,
                message,
                hint: Some(hint.into()),
            },
            other => other,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Refused {
                status,
                message,
                hint,
            } => {
                write!(formatter, "the broker refused: {message} (HTTP {status})")?;
                match hint {
                    Some(hint) => write!(formatter, "\nhint: {hint}"),
                    None if *status >= 500 => {
                        write!(formatter, "\nhint: the broker's log says more")
                    }
                    None => Ok(()),
                }
            }
            CliError::BadAnswer(message) => write!(
                formatter,
                "{message}\nhint: is --api the address of Weir's HTTP API, and is this weir the same version as the server?"
            ),
            CliError::Local(message) | CliError::Usage(message) => formatter.write_str(message),
            CliError::Unreachable { api, detail } => write!(
                formatter,
                "cannot reach the broker's HTTP API at {api}: {detail}\n\
                 hint: is `weir server` running? start it with `weir server` or pass --api (or set WEIR_API)"
            ),
        }
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let refused = CliError::Refused {
            status: 404,
            message: "no such topic".into(),
            hint: None,
        };
        assert_eq!(refused.code(), 1);
        assert_eq!(CliError::Usage("x".into()).code(), 2);
        let unreachable = CliError::Unreachable {
            api: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(unreachable.code(), 3);
        assert!(unreachable
            .to_string()
            .contains("is `weir server` running?"));
    }

    #[test]
    fn hints_attach_to_their_status_only() {
        let refused = || CliError::Refused {
            status: 404,
            message: "topic x does not exist".into(),
            hint: None,
        };
        let text = refused()
            .hint_for(404, "list them with `weir topic list`")
            .to_string();
        assert!(text.contains("topic x does not exist (HTTP 404)"), "{text}");
        assert!(
            text.ends_with("hint: list them with `weir topic list`"),
            "{text}"
        );
        assert!(!refused().hint_for(409, "x").to_string().contains("hint"));
    }
}
