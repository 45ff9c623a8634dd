//! fastables-rules: the iptables rule language.
//!
//! Parses and prints the `iptables-save` / `iptables-restore` format, validates a
//! ruleset the way the kernel and iptables do (table/chain restrictions, unknown
//! chains, jump loops), and compiles it into per-hook programs that evaluate a
//! packet without allocating. It knows nothing of frames, sockets or clocks: the
//! data plane hands it a [`ctx::PacketCtx`] and a time, and gets a
//! [`ctx::Verdict`] back.
#![deny(unsafe_code)]

pub mod compile;
pub mod ctx;
pub mod error;
pub mod list;
mod matches;
pub mod model;
pub mod names;
pub mod parse;
pub mod print;
mod targets;
#[cfg(test)]
mod testutil;
mod validate;

pub use error::{ErrorKind, RulesError, RulesErrors};
pub use list::{print_list, ListOptions};
pub use parse::{
    apply_restore, apply_restore_opts, check_restore, parse_restore, parse_restore_all,
    parse_rule_spec, RestoreOptions,
};
pub use print::{print_rule, print_save};
