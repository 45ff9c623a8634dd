//! One rule line's options: getopt_long's option resolution (exact name, else
//! a unique prefix, across the base options and the extensions loaded so far,
//! newest first), `!` before an option, the implicit `-m tcp` after
//! `-p tcp --dport`, and the rule (or command) they make.

use crate::error::{ErrorKind, PResult, Problem};
use crate::matches::{self, MatchParse};
use crate::model::*;
use crate::names;
use crate::targets::{self, TargetParse};

use super::lex::Tok;
use super::options::*;
use super::values::{bad, parse_counter, parse_iface, parse_net};

/// Who owns an option: the base options, the `i`-th match of the rule, or
/// its target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Base,
    Match(usize),
    Target,
}

/// A command of a restore line, with its chain and optional positional
/// argument (rule number, new name, policy).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cmd {
    Append(String),
    Insert(String, Option<String>),
    Delete(String, Option<String>),
    Replace(String, Option<String>),
    Flush(Option<String>),
    Zero(Option<String>),
    NewChain(String),
    DelChain(Option<String>),
    Rename(String, Option<String>),
    Policy(String, Option<String>),
}

/// The options of one line as they come; [`RuleParser::rule_only`] makes
/// the rule(s) of a rule command from them.
pub(crate) struct RuleParser {
    pub cmd: Option<(Cmd, String)>,
    src: Option<(bool, String)>,
    dst: Option<(bool, String)>,
    proto: Option<Neg<u8>>,
    in_iface: Option<Neg<IfaceName>>,
    out_iface: Option<Neg<IfaceName>>,
    fragment: Option<bool>,
    matches: Vec<MatchParse>,
    /// The target, and whether it came with `-g`.
    target: Option<(TargetParse, bool)>,
    /// Extension load order, newest first.
    exts: Vec<Owner>,
    pub(super) counters: Option<Counters>,
    /// The rule options given (for the commands that take none).
    pub(super) rule_opts: Vec<String>,
    allow_cmd: bool,
}

impl RuleParser {
    pub(crate) fn new(allow_cmd: bool) -> Self {
        RuleParser {
            cmd: None,
            src: None,
            dst: None,
            proto: None,
            in_iface: None,
            out_iface: None,
            fragment: None,
            matches: Vec::new(),
            target: None,
            exts: Vec::new(),
            counters: None,
            rule_opts: Vec::new(),
            allow_cmd,
        }
    }

    fn specs(&self, owner: Owner) -> &'static [OptSpec] {
        match owner {
            Owner::Base => BASE_OPTS,
            Owner::Match(i) => self.matches[i].options(),
            Owner::Target => self.target.as_ref().map(|t| t.0.options()).unwrap_or(&[]),
        }
    }

    /// getopt_long: exact name first, else a unique prefix.
    fn resolve(&self, name: &str, tok: &str) -> PResult<Option<(Owner, OptSpec)>> {
        let mut order = vec![Owner::Base];
        order.extend(self.exts.iter().copied());
        for &ow in &order {
            if let Some(s) = self.specs(ow).iter().find(|s| s.name == name) {
                return Ok(Some((ow, *s)));
            }
        }
        let mut found: Option<(Owner, OptSpec)> = None;
        for &ow in &order {
            for s in self.specs(ow) {
                if !name.is_empty() && s.name.starts_with(name) {
                    match found {
                        None => found = Some((ow, *s)),
                        Some((fo, fs)) if fo == ow && fs.id == s.id && fs.args == s.args => {}
                        Some((_, fs)) => {
                            return Err(Problem::new(
                                ErrorKind::UnknownOption,
                                tok,
                                format!(
                                "option `{tok}` is ambiguous (--{} or --{}): write it out in full",
                                fs.name, s.name
                            ),
                            ))
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn unknown_option(&self, tok: &str) -> Problem {
        let hint = match tok {
            "--dport" | "--sport" | "--destination-port" | "--source-port" => {
                " (port matches need `-p tcp` or `-p udp` first)".to_string()
            }
            "--icmp-type" => " (needs `-p icmp` first)".to_string(),
            _ => {
                let mut loaded: Vec<&str> = self.matches.iter().map(|m| m.name()).collect();
                if let Some((t, _)) = &self.target {
                    loaded.push(t.name());
                }
                if loaded.is_empty() {
                    String::new()
                } else {
                    format!(" for the loaded extensions ({})", loaded.join(", "))
                }
            }
        };
        Problem::new(
            ErrorKind::UnknownOption,
            tok,
            format!("unknown option `{tok}`{hint}"),
        )
    }

    fn load_match(&mut self, builder: matches::Builder) -> usize {
        self.matches.push(MatchParse::new(builder));
        let i = self.matches.len() - 1;
        self.exts.insert(0, Owner::Match(i));
        i
    }

    pub(crate) fn parse(&mut self, toks: &[Tok]) -> PResult<()> {
        let mut i = 0;
        let mut inv = false;
        while i < toks.len() {
            let t = &toks[i];
            let text = t.text.as_str();
            i += 1;
            if text == "!" && !t.quoted {
                if inv {
                    return Err(Problem::new(
                        ErrorKind::Syntax,
                        "!",
                        "multiple consecutive `!` not allowed",
                    ));
                }
                inv = true;
                continue;
            }
            let (owner, spec, opt_tok, inline) = if let Some(long) = text.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let mut r = self.resolve(name, text)?;
                if r.is_none() {
                    // iptables loads the protocol's match on an unknown option.
                    let implicit = match self.proto {
                        Some(Neg { val: 6, .. }) => matches::Builder::by_name("tcp"),
                        Some(Neg { val: 17, .. }) => matches::Builder::by_name("udp"),
                        Some(Neg { val: 1, .. }) => matches::Builder::by_name("icmp"),
                        _ => None,
                    };
                    if let Some(b) = implicit {
                        if !self.matches.iter().any(|m| m.name() == b.name()) {
                            self.load_match(b);
                            r = self.resolve(name, text)?;
                        }
                    }
                }
                match r {
                    Some((ow, s)) => (ow, s, text.to_string(), inline),
                    None => return Err(self.unknown_option(text)),
                }
            } else if text.len() == 2 && text.starts_with('-') && !t.quoted {
                let c = text.chars().nth(1).unwrap_or(' ');
                match short_opt(c) {
                    Some(spec) => (Owner::Base, spec, text.to_string(), None),
                    None => return Err(self.unknown_option(text)),
                }
            } else if text.starts_with('-') && text.len() > 1 && !t.quoted {
                return Err(self.unknown_option(text));
            } else {
                return Err(Problem::new(
                    ErrorKind::Syntax,
                    text,
                    format!("bad argument `{text}`: expected an option (values follow their option; `!` goes before the option)"),
                ));
            };
            if inv && !spec.invertible {
                return Err(Problem::new(
                    ErrorKind::Syntax,
                    &opt_tok,
                    format!("option `{opt_tok}` cannot be inverted with `!`"),
                ));
            }
            // Collect arguments.
            let mut args: Vec<String> = Vec::new();
            let nargs = usize::from(spec.args);
            if let Some(v) = inline {
                args.push(v);
            }
            while args.len() < nargs {
                match toks.get(i) {
                    Some(a) => {
                        if a.text == "!" && !a.quoted {
                            return Err(Problem::new(
                                ErrorKind::Syntax,
                                "!",
                                format!("`!` after `{opt_tok}` is not allowed: write `! {opt_tok} VALUE`"),
                            ));
                        }
                        if !args.is_empty()
                            && owner != Owner::Base
                            && a.text.starts_with('-')
                            && !a.quoted
                        {
                            return Err(Problem::new(
                                ErrorKind::Syntax,
                                &opt_tok,
                                format!("{opt_tok} requires two arguments"),
                            ));
                        }
                        args.push(a.text.clone());
                        i += 1;
                    }
                    None => {
                        return Err(Problem::new(
                            ErrorKind::Syntax,
                            &opt_tok,
                            format!(
                                "option `{opt_tok}` requires {} argument{}",
                                nargs,
                                if nargs > 1 { "s" } else { "" }
                            ),
                        ))
                    }
                }
            }
            // Optional positional arguments of commands.
            let optional_pos = |i: &mut usize| -> Option<String> {
                match toks.get(*i) {
                    Some(a) if a.quoted || !(a.text.starts_with('-') || a.text == "!") => {
                        *i += 1;
                        Some(a.text.clone())
                    }
                    _ => None,
                }
            };
            let this_inv = inv;
            inv = false;
            match owner {
                Owner::Base => {
                    let arg = args.first().cloned().unwrap_or_default();
                    let cmd = match spec.id {
                        B_APPEND => Some(Cmd::Append(arg)),
                        B_INSERT => Some(Cmd::Insert(arg, optional_pos(&mut i))),
                        B_DELETE => Some(Cmd::Delete(arg, optional_pos(&mut i))),
                        B_REPLACE => Some(Cmd::Replace(arg, optional_pos(&mut i))),
                        B_FLUSH => Some(Cmd::Flush(optional_pos(&mut i))),
                        B_ZERO => Some(Cmd::Zero(optional_pos(&mut i))),
                        B_NEW => Some(Cmd::NewChain(arg)),
                        B_DELCHAIN => Some(Cmd::DelChain(optional_pos(&mut i))),
                        B_RENAME => Some(Cmd::Rename(arg, optional_pos(&mut i))),
                        B_POLICY => Some(Cmd::Policy(arg, optional_pos(&mut i))),
                        _ => None,
                    };
                    if let Some(c) = cmd {
                        if !self.allow_cmd {
                            return Err(Problem::new(
                                ErrorKind::Syntax,
                                &opt_tok,
                                format!("command `{opt_tok}` not allowed in a rule specification"),
                            ));
                        }
                        if let Some((_, prev)) = &self.cmd {
                            return Err(Problem::new(
                                ErrorKind::Syntax,
                                &opt_tok,
                                format!("cannot use {opt_tok} with {prev}: one command per line"),
                            ));
                        }
                        self.cmd = Some((c, opt_tok));
                        continue;
                    }
                    self.base_opt(spec.id, this_inv, &opt_tok, &args)?;
                }
                Owner::Match(_) | Owner::Target => {
                    self.rule_opts.push(opt_tok.clone());
                    let opt = Opt {
                        id: spec.id,
                        inv: this_inv,
                        tok: &opt_tok,
                        args: &args,
                    };
                    if let Owner::Match(mi) = owner {
                        self.matches[mi].apply(&opt, self.proto)?;
                    } else if let Some((ts, _)) = &mut self.target {
                        ts.apply(&opt, self.proto)?;
                    }
                }
            }
        }
        if inv {
            return Err(Problem::new(
                ErrorKind::Syntax,
                "!",
                "nothing appropriate following `!`",
            ));
        }
        Ok(())
    }

    fn base_opt(&mut self, id: u8, inv: bool, tok: &str, args: &[String]) -> PResult<()> {
        let a = args.first().map(String::as_str).unwrap_or("");
        let multiple = |flag: &str| {
            Problem::new(
                ErrorKind::Conflict,
                tok,
                format!("multiple {flag} flags not allowed"),
            )
        };
        if !matches!(id, B_TABLE | B_UNSUPPORTED) {
            self.rule_opts.push(tok.to_string());
        }
        match id {
            B_SRC => {
                if self.src.is_some() {
                    return Err(multiple("-s"));
                }
                self.src = Some((inv, a.to_string()));
            }
            B_DST => {
                if self.dst.is_some() {
                    return Err(multiple("-d"));
                }
                self.dst = Some((inv, a.to_string()));
            }
            B_PROTO => {
                if self.proto.is_some() {
                    return Err(multiple("-p"));
                }
                let lower = a.to_ascii_lowercase();
                let p = names::protocol_by_name(&lower).ok_or_else(|| {
                    bad(a, format!("unknown protocol `{a}`: use a number 0-255 or a name such as tcp, udp, icmp, gre, esp, all"))
                })?;
                if p == 0 && inv {
                    return Err(bad(a, "`! -p all` would never match: remove it"));
                }
                self.proto = if p == 0 { Some(Neg { inv: false, val: 0 }) } else { Some(Neg { inv, val: p }) };
            }
            B_IN => {
                if self.in_iface.is_some() {
                    return Err(multiple("-i"));
                }
                self.in_iface = Some(Neg { inv, val: parse_iface(a)? });
            }
            B_OUT => {
                if self.out_iface.is_some() {
                    return Err(multiple("-o"));
                }
                self.out_iface = Some(Neg { inv, val: parse_iface(a)? });
            }
            B_FRAG => {
                if self.fragment.is_some() {
                    return Err(multiple("-f"));
                }
                self.fragment = Some(inv);
            }
            B_MATCH => {
                let builder = matches::Builder::by_name(a).ok_or_else(|| {
                    Problem::new(
                        ErrorKind::UnknownMatch,
                        a,
                        format!("unknown or unsupported match `{a}`; supported: {}", names::SUPPORTED_MATCHES),
                    )
                })?;
                self.load_match(builder);
            }
            B_JUMP | B_GOTO => {
                if self.target.is_some() {
                    return Err(multiple("-j/-g"));
                }
                if a.is_empty() {
                    return Err(bad(a, "empty target name"));
                }
                let goto = id == B_GOTO;
                let builder = if goto {
                    targets::Builder::Chain
                } else {
                    match targets::Builder::by_name(a) {
                        Some(b) => b,
                        None if names::XTABLES_TARGETS.contains(&a) => {
                            return Err(Problem::new(
                                ErrorKind::UnknownTarget,
                                a,
                                format!("target `{a}` is not supported; supported: {}", names::SUPPORTED_TARGETS),
                            ))
                        }
                        None => targets::Builder::Chain,
                    }
                };
                self.target = Some((TargetParse::new(a, builder), goto));
                self.exts.insert(0, Owner::Target);
            }
            B_COUNTERS => {
                let p = parse_counter(a).ok_or_else(|| bad(a, "bad packet counter: use -c PACKETS BYTES"))?;
                let b = args.get(1).map(String::as_str).unwrap_or("");
                let bb = parse_counter(b).ok_or_else(|| bad(b, "bad byte counter: use -c PACKETS BYTES"))?;
                self.counters = Some(Counters { packets: p, bytes: bb });
            }
            B_TABLE => {
                return Err(Problem::new(
                    ErrorKind::Syntax,
                    tok,
                    "the -t option cannot be used in a restore file: use a `*table` line",
                ))
            }
            _ => {
                return Err(Problem::new(
                    ErrorKind::UnknownOption,
                    tok,
                    format!("option `{tok}` is not supported in a restore file; commands: -A, -I, -D, -R, -N, -X, -F, -Z, -P, -E"),
                ))
            }
        }
        Ok(())
    }

    pub(super) fn has_rule_opts(&self) -> Option<&str> {
        self.rule_opts.first().map(String::as_str)
    }

    /// Builds the rule(s); `-s`/`-d` lists expand into one rule per pair.
    pub(crate) fn rule_only(self, chain: &str) -> PResult<Vec<Rule>> {
        let srcs = expand_addrs(&self.src)?;
        let dsts = expand_addrs(&self.dst)?;
        let proto = self.proto.filter(|p| p.val != 0);
        if self.in_iface.is_some() && (chain == "OUTPUT" || chain == "POSTROUTING") {
            return Err(Problem::new(
                ErrorKind::NotAllowed,
                "-i",
                format!("can't use -i with {chain}: no input interface there"),
            ));
        }
        if self.out_iface.is_some() && (chain == "PREROUTING" || chain == "INPUT") {
            return Err(Problem::new(
                ErrorKind::NotAllowed,
                "-o",
                format!("can't use -o with {chain}: no output interface there"),
            ));
        }
        let proto_full = self.proto;
        let mut matches = Vec::new();
        for m in self.matches {
            matches.push(m.finish(proto_full)?);
        }
        let target = match self.target {
            None => Target::None,
            Some((t, goto)) => {
                let tgt = t.finish(proto_full)?;
                match (goto, tgt) {
                    (true, Target::Jump(c)) => Target::Goto(c),
                    (_, x) => x,
                }
            }
        };
        let norm_iface = |x: Option<Neg<IfaceName>>| x.filter(|n| n.inv || n.val.0 != "+");
        let in_iface = norm_iface(self.in_iface);
        let out_iface = norm_iface(self.out_iface);
        let mut out = Vec::new();
        for s in &srcs {
            for d in &dsts {
                out.push(Rule {
                    src: *s,
                    dst: *d,
                    in_iface: in_iface.clone(),
                    out_iface: out_iface.clone(),
                    proto,
                    fragment: self.fragment,
                    matches: matches.clone(),
                    target: target.clone(),
                    counters: self.counters.unwrap_or_default(),
                    line: 0,
                });
            }
        }
        Ok(out)
    }
}

fn expand_addrs(a: &Option<(bool, String)>) -> PResult<Vec<Option<Neg<Ipv4Net>>>> {
    match a {
        None => Ok(vec![None]),
        Some((inv, s)) => {
            let parts: Vec<&str> = s.split(',').collect();
            if *inv && parts.len() > 1 {
                return Err(bad(s, "`!` cannot be used with an address list"));
            }
            let mut v = Vec::new();
            for p in parts {
                let n = parse_net(p)?;
                if n.mask == 0 {
                    if *inv {
                        return Err(bad(s, "`! 0.0.0.0/0` would never match: remove it"));
                    }
                    v.push(None);
                } else {
                    v.push(Some(Neg { inv: *inv, val: n }));
                }
            }
            Ok(v)
        }
    }
}
