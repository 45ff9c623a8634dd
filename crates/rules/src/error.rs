//! Errors of the rule language: parsing, validating and applying an
//! `iptables-restore` file.
//!
//! Every error names the file, the 1-based line and the offending token, and
//! its message says what is wrong and what is allowed instead.

use std::fmt;

/// What kind of problem a [`RulesError`] reports (for tests and callers that
/// want to react to a class of error; the message carries the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The line is not valid `iptables-restore` syntax (a stray token, an
    /// unterminated quote, a command outside `*table` ... `COMMIT`).
    Syntax,
    /// An option that iptables does not know, or that fastables does not support.
    UnknownOption,
    /// `-m NAME` with a match that is not supported.
    UnknownMatch,
    /// `-j NAME` that is neither a supported target nor an existing chain.
    UnknownTarget,
    /// An option's value is malformed or out of range (address, port, number, name).
    BadValue,
    /// A chain that does not exist (in `-A`, `-j`, `-X`, `-P`, ...).
    UnknownChain,
    /// A chain that already exists, or a chain name that is not allowed.
    ChainExists,
    /// A chain that cannot be deleted because rules refer to it or it is not empty.
    ChainInUse,
    /// The rule is not allowed where it is (table/chain restrictions, `-i` in
    /// OUTPUT, REJECT outside filter, ...).
    NotAllowed,
    /// Rule jumps form a loop reachable from a built-in chain.
    Loop,
    /// A required option is missing, or two options conflict.
    Conflict,
    /// The file ended inside a table (no `COMMIT`).
    MissingCommit,
    /// `-D` names a rule or rule number that does not exist, or `-I` an index
    /// past the end.
    NoSuchRule,
}

/// An error in a rules file: `file:line: message (at 'token')`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message} (at '{token}')")]
pub struct RulesError {
    /// The file name as given by the caller (e.g. `rules.v4` or `<stdin>`).
    pub file: String,
    /// 1-based line number; for a missing `COMMIT` the line after the last one.
    pub line: u32,
    /// The offending token (option, value, chain name or the whole line).
    pub token: String,
    /// What is wrong and what is allowed.
    pub message: String,
    /// The class of error.
    pub kind: ErrorKind,
}

/// Several errors of one file, in line order (see [`crate::check_restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesErrors(pub Vec<RulesError>);

impl ErrorKind {
    /// The exit code `iptables-restore` (1.8.9, nft) gives for the first
    /// error of this kind, as checked against it: 2 for a parameter
    /// problem, 1 for what its parser rejects otherwise, 4 for what the
    /// kernel refuses.
    pub fn restore_exit_code(self) -> u8 {
        match self {
            ErrorKind::Syntax
            | ErrorKind::UnknownOption
            | ErrorKind::UnknownMatch
            | ErrorKind::UnknownTarget
            | ErrorKind::BadValue
            | ErrorKind::Conflict => 2,
            ErrorKind::UnknownChain
            | ErrorKind::ChainExists
            | ErrorKind::MissingCommit
            | ErrorKind::NoSuchRule => 1,
            ErrorKind::NotAllowed | ErrorKind::Loop | ErrorKind::ChainInUse => 4,
        }
    }
}

impl RulesErrors {
    /// `iptables-restore`'s exit code for this input: that of its first error.
    pub fn restore_exit_code(&self) -> u8 {
        let first = self.0.iter().min_by_key(|e| e.line);
        first.map_or(1, |e| e.kind.restore_exit_code())
    }
}

impl fmt::Display for RulesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesErrors {}

/// An error without a place yet: the rule parser produces these, the restore
/// driver adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: ErrorKind,
    pub token: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        kind: ErrorKind,
        token: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            kind,
            token: token.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at(self, file: &str, line: u32) -> RulesError {
        RulesError {
            file: file.to_string(),
            line,
            token: self.token,
            message: self.message,
            kind: self.kind,
        }
    }
}

pub(crate) type PResult<T> = Result<T, Problem>;
