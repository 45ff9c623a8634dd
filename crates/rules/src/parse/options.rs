//! Option tables: each option's name, how many arguments it takes and
//! whether `!` may precede it, as getopt_long sees them. The base options
//! (commands and the rule's fixed part) are here; each match and target
//! declares its own in its file (`matches/`, `targets/`).

/// One long option (getopt's `struct option`, plus whether `!` may precede
/// it). Options of one owner with the same `id` are aliases.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptSpec {
    pub name: &'static str,
    /// How many arguments follow it: 0, 1 or 2.
    pub args: u8,
    /// Whether `! --name` is allowed.
    pub invertible: bool,
    /// What its owner's parser calls it.
    pub id: u8,
}

impl OptSpec {
    /// An option without an argument (`--syn`).
    pub(crate) const fn flag(name: &'static str, id: u8) -> OptSpec {
        OptSpec {
            name,
            args: 0,
            invertible: false,
            id,
        }
    }

    /// An option with one argument (`--dport 80`).
    pub(crate) const fn value(name: &'static str, id: u8) -> OptSpec {
        OptSpec {
            name,
            args: 1,
            invertible: false,
            id,
        }
    }

    /// An option with two arguments (`--tcp-flags MASK COMP`).
    pub(crate) const fn pair(name: &'static str, id: u8) -> OptSpec {
        OptSpec {
            name,
            args: 2,
            invertible: false,
            id,
        }
    }

    /// The same option, allowed after `!`.
    pub(crate) const fn invertible(self) -> OptSpec {
        OptSpec {
            invertible: true,
            ..self
        }
    }
}

/// One option as a rule line gives it, for its owner's parser.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opt<'a> {
    /// [`OptSpec::id`].
    pub id: u8,
    /// Preceded by `!`.
    pub inv: bool,
    /// The option as written (`--dport`, `--dp`), for messages.
    pub tok: &'a str,
    /// Its arguments, as many as [`OptSpec::args`].
    pub args: &'a [String],
}

impl Opt<'_> {
    /// The first argument (empty for a flag).
    pub(crate) fn arg(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }

    /// The second argument (empty if none).
    pub(crate) fn arg2(&self) -> &str {
        self.args.get(1).map(String::as_str).unwrap_or("")
    }
}

// Base option ids.
// Base option ids.
pub(crate) const B_APPEND: u8 = 1;
pub(crate) const B_DELETE: u8 = 2;
pub(crate) const B_INSERT: u8 = 3;
pub(crate) const B_REPLACE: u8 = 4;
pub(crate) const B_FLUSH: u8 = 5;
pub(crate) const B_ZERO: u8 = 6;
pub(crate) const B_NEW: u8 = 7;
pub(crate) const B_DELCHAIN: u8 = 8;
pub(crate) const B_RENAME: u8 = 9;
pub(crate) const B_POLICY: u8 = 10;
pub(crate) const B_SRC: u8 = 11;
pub(crate) const B_DST: u8 = 12;
pub(crate) const B_PROTO: u8 = 13;
pub(crate) const B_IN: u8 = 14;
pub(crate) const B_OUT: u8 = 15;
pub(crate) const B_JUMP: u8 = 16;
pub(crate) const B_GOTO: u8 = 17;
pub(crate) const B_MATCH: u8 = 18;
pub(crate) const B_FRAG: u8 = 19;
pub(crate) const B_COUNTERS: u8 = 20;
pub(crate) const B_TABLE: u8 = 21;
pub(crate) const B_UNSUPPORTED: u8 = 22;

/// The base options: commands and the rule's fixed part.
pub(crate) const BASE_OPTS: &[OptSpec] = &[
    OptSpec::value("append", B_APPEND),
    OptSpec::value("delete", B_DELETE),
    OptSpec::value("check", B_UNSUPPORTED),
    OptSpec::value("insert", B_INSERT),
    OptSpec::value("replace", B_REPLACE),
    OptSpec::flag("list", B_UNSUPPORTED),
    OptSpec::flag("list-rules", B_UNSUPPORTED),
    OptSpec::flag("flush", B_FLUSH),
    OptSpec::flag("zero", B_ZERO),
    OptSpec::value("new-chain", B_NEW),
    OptSpec::flag("delete-chain", B_DELCHAIN),
    OptSpec::value("rename-chain", B_RENAME),
    OptSpec::value("policy", B_POLICY),
    OptSpec::value("source", B_SRC).invertible(),
    OptSpec::value("destination", B_DST).invertible(),
    OptSpec::value("src", B_SRC).invertible(),
    OptSpec::value("dst", B_DST).invertible(),
    OptSpec::value("protocol", B_PROTO).invertible(),
    OptSpec::value("in-interface", B_IN).invertible(),
    OptSpec::value("jump", B_JUMP),
    OptSpec::value("table", B_TABLE),
    OptSpec::value("match", B_MATCH),
    OptSpec::flag("numeric", B_UNSUPPORTED),
    OptSpec::value("out-interface", B_OUT).invertible(),
    OptSpec::flag("verbose", B_UNSUPPORTED),
    OptSpec::flag("wait", B_UNSUPPORTED),
    OptSpec::flag("wait-interval", B_UNSUPPORTED),
    OptSpec::flag("exact", B_UNSUPPORTED),
    OptSpec::flag("fragments", B_FRAG).invertible(),
    OptSpec::flag("version", B_UNSUPPORTED),
    OptSpec::flag("help", B_UNSUPPORTED),
    OptSpec::flag("line-numbers", B_UNSUPPORTED),
    OptSpec::value("modprobe", B_UNSUPPORTED),
    OptSpec::pair("set-counters", B_COUNTERS),
    OptSpec::value("goto", B_GOTO),
    OptSpec::flag("ipv4", B_UNSUPPORTED),
    OptSpec::flag("ipv6", B_UNSUPPORTED),
];

/// A short option (`-A`, `! -s`), as the base option it stands for.
pub(crate) fn short_opt(c: char) -> Option<OptSpec> {
    let value = OptSpec::value("", 0);
    let flag = OptSpec::flag("", 0);
    let pair = OptSpec::pair("", 0);
    let (spec, id) = match c {
        'A' => (value, B_APPEND),
        'D' => (value, B_DELETE),
        'I' => (value, B_INSERT),
        'R' => (value, B_REPLACE),
        'F' => (flag, B_FLUSH),
        'Z' => (flag, B_ZERO),
        'N' => (value, B_NEW),
        'X' => (flag, B_DELCHAIN),
        'E' => (value, B_RENAME),
        'P' => (value, B_POLICY),
        's' => (value.invertible(), B_SRC),
        'd' => (value.invertible(), B_DST),
        'p' => (value.invertible(), B_PROTO),
        'i' => (value.invertible(), B_IN),
        'o' => (value.invertible(), B_OUT),
        'j' => (value, B_JUMP),
        'g' => (value, B_GOTO),
        'm' => (value, B_MATCH),
        'f' => (flag.invertible(), B_FRAG),
        'c' => (pair, B_COUNTERS),
        't' => (value, B_TABLE),
        'L' | 'S' | 'C' | 'n' | 'v' | 'x' | 'w' | 'W' | 'h' | 'V' | 'M' | '4' | '6' => {
            (flag, B_UNSUPPORTED)
        }
        _ => return None,
    };
    Some(OptSpec { id, ..spec })
}
