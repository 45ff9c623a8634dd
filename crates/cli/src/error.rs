//! Errors of the `fastables` command.

use std::path::PathBuf;

use fastables_config::ConfigError;
use fastables_dataplane::pipeline::PipelineError;
use fastables_offline::OfflineError;
use fastables_rules::compile::CompileError;
use fastables_rules::error::RulesErrors;

/// Everything a `fastables` subcommand can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The rules file does not parse or does not validate (every error, one per line).
    #[error("{0}")]
    Rules(#[from] RulesErrors),
    /// The rules parse but cannot be compiled for this instance (unknown chain, loop, ...).
    #[error("{file}: {source}")]
    Compile {
        /// The rules file (or `<stdin>`).
        file: String,
        /// What is wrong, with the line where there is one.
        source: CompileError,
    },
    /// The pipeline cannot be built from the configuration (e.g. an interface without a MAC).
    #[error("{file}: {source}")]
    Pipeline {
        /// The configuration file.
        file: String,
        /// What is missing.
        source: PipelineError,
    },
    /// A rules file could not be read.
    #[error("{path}: cannot read the rules file: {source}")]
    ReadRules {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("<stdin>: cannot read the rules: {0}")]
    ReadStdin(std::io::Error),
    /// An output file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The offline run failed (pcap input or output, unknown interface, ...).
    #[error("{0}")]
    Offline(#[from] OfflineError),
    /// The AF_XDP port could not be opened.
    #[error("{0}")]
    Xdp(#[from] fastables_xdp::XdpError),
    /// The command printed its own messages (a reply of the running
    /// instance); exit with this code.
    #[error("")]
    Exit(u8),
    /// `restore` refused its input, with `iptables-restore`'s exit code.
    #[error("{1}")]
    Restore(u8, String),
    /// `fastables run` cannot start (not root, ...).
    #[error("{0}")]
    Start(String),
    /// A command-line value is not acceptable (clap could not check it).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit code: 2 for usage errors (as clap's), 1 for every other error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => crate::EXIT_USAGE,
            CliError::Exit(c) => *c,
            CliError::Restore(c, _) => *c,
            _ => 1,
        }
    }
}
