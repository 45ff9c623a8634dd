//! fastables-rules: the iptables rule language.
//!
//! Parses and prints the `iptables-save` / `iptables-restore` format, validates a
//! ruleset the way the kernel and iptables do (table/chain restrictions, unknown
//! chains, jump loops), and compiles it into per-hook programs that evaluate a
//! packet without allocating. It knows nothing of frames, sockets or clocks: the
//! data plane hands it a [`ctx::PacketCtx`] and a time, and gets a
//! [`ctx::Verdict`] back.
//!
//! # Modules
//!
//! - `model`: what an iptables-save file says, as data.
//! - `parse`: the iptables-restore language into the model: `lex` (a line
//!   into arguments), `options` (option tables), `values` (shared value
//!   parsers), `rule` (one line's options into a rule or command), `restore`
//!   (a file applied to a ruleset, atomically).
//! - `validate`: what the kernel checks when a table loads (loops, hooks).
//! - `print`, `list`: the model as `iptables-save` and `iptables -L` print it.
//! - `compile`: the model into flat per-hook programs, and their evaluation:
//!   `program` (the compiled form), `build`, `eval` (the rule scan, the hot
//!   path), `state` (a worker's counters and buckets), `analysis` (what is
//!   known without running: shortcuts, flow invariance).
//! - `matches`, `targets`: the extensions, one file each (`matches/limit.rs`
//!   is all of `-m limit`: options, checks, both printed forms, compiled form,
//!   evaluation, tests); `matches/mod.rs` and `targets/mod.rs` are their
//!   registries.
//! - `ctx`: what evaluation reads of a packet and what it writes back.
//! - `names`, `error`: name tables; errors with file, line and token.
//!
//! # Adding a match or a target
//!
//! A new match `-m foo` touches:
//!
//! 1. `model.rs`: `Match::Foo` and the value it holds;
//! 2. `matches/foo.rs`, new: `OPTIONS`, `parse_option` (and `finish` when it
//!    checks the rule or needs an option), `save`, `list`, `compile`, `eval`
//!    (and its `Compiled` form when the model's value is not one), its tests;
//! 3. `matches/mod.rs`: its name in `SUPPORTED` and a line in each dispatch
//!    (`Builder`, `MatchParse`, `save`, `list`, `compile`, `Ext`); the
//!    compiler points at each one missing but `Builder::by_name`, which a unit
//!    test checks against `SUPPORTED`;
//! 4. `tests/eval_ref/mod.rs`: its reference semantics, so that
//!    `tests/differential_eval.rs` checks the compiled evaluation (whose
//!    generator should then produce it).
//!
//! A new target `-j FOO` touches `model.rs` (`Target::Foo`), `targets/foo.rs`
//! (new: `OPTIONS`, `parse_option`, `finish`, `save`, `list`, and `apply` when
//! it acts on the packet while the scan goes on), `targets/mod.rs` (`SUPPORTED`
//! and a line in each dispatch: `Builder`, `TargetParse`, `save`, `list_name`,
//! `list`, `compile`, and `Action` for a non-terminating target; `table_of`
//! and `hooks_of` when the kernel restricts it) and `tests/eval_ref/mod.rs`.
//!
//! Either also touches `ctx.rs` when it reads a packet field `PacketCtx` does
//! not carry yet, or leaves an effect (`Effects`) for the data plane to apply
//! to the frame, and then the data plane.
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
