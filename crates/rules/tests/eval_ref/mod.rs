//! A naive reference evaluator: interprets the model [`Ruleset`] directly
//! (recursive chain walk, every criterion of every rule tested in order, no
//! precompilation). It exists to check `fastables_rules::compile::CompiledRuleset`
//! against in differential tests (`tests/differential_eval.rs`); it is slow
//! and allocates. A test oracle, not part of the library: a test takes it
//! with `mod eval_ref;`.
//!
//! Rule ids are positions in the ruleset (tables, chains and rules in order);
//! translate them with [`RefRuleset::rule_info`].

use std::collections::HashMap;

use fastables_rules::compile::{Flavor, RuleInfo};
use fastables_rules::ctx::{CtCtx, PacketCtx, Verdict, MAX_LOGS};
use fastables_rules::model::{
    Chain, ConnmarkTarget, Counters, CtStateSet, CtStatusSet, Hook, Ipv4Net, LimitUnit, Match,
    MultiportDir, Neg, Policy, PortRange, Rule, Ruleset, Table, Target, TcpmssTarget, TtlMatch,
    TtlTarget,
};

/// The reference interpreter over one ruleset.
#[derive(Debug, Clone)]
pub struct RefRuleset {
    rs: Ruleset,
    ifaces: Vec<String>,
    flavor: Flavor,
    /// id -> (table position, chain position, rule position).
    ids: Vec<(usize, usize, usize)>,
}

/// Mutable state of the reference interpreter: counters per rule and per
/// built-in chain, limit buckets keyed by rule and match position.
#[derive(Debug, Clone)]
pub struct RefState {
    rules: HashMap<(usize, usize, usize), Counters>,
    policies: HashMap<(usize, usize), Counters>,
    limits: HashMap<(usize, usize, usize, usize), (u64, u64)>,
}

impl RefState {
    /// Zero counters, full buckets.
    pub fn new(_r: &RefRuleset) -> RefState {
        RefState {
            rules: HashMap::new(),
            policies: HashMap::new(),
            limits: HashMap::new(),
        }
    }
}

enum Flow {
    /// A terminating verdict.
    Verdict(Verdict),
    /// The chain returned (RETURN, or fell off a user chain).
    Return,
}

impl RefRuleset {
    /// Build the interpreter following the kernel flavour `flavor`;
    /// `ifaces[i]` names interface index `i`.
    pub fn with_flavor(rs: &Ruleset, ifaces: &[&str], flavor: Flavor) -> RefRuleset {
        let mut ids = Vec::new();
        for (ti, t) in rs.tables.iter().enumerate() {
            for (ci, c) in t.chains.iter().enumerate() {
                for ri in 0..c.rules.len() {
                    ids.push((ti, ci, ri));
                }
            }
        }
        RefRuleset {
            rs: rs.clone(),
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            flavor,
            ids,
        }
    }

    /// Where rule `id` comes from.
    pub fn rule_info(&self, id: u32) -> RuleInfo<'_> {
        let (ti, ci, ri) = self.ids[id as usize];
        let t = &self.rs.tables[ti];
        let c = &t.chains[ci];
        RuleInfo {
            table: t.table,
            chain: &c.name,
            index: ri as u32 + 1,
            line: c.rules[ri].line,
        }
    }

    fn id_of(&self, pos: (usize, usize, usize)) -> u32 {
        self.ids.iter().position(|&p| p == pos).unwrap_or(0) as u32
    }

    /// The ruleset with `state`'s counters added.
    pub fn counters_into(&self, state: &RefState) -> Ruleset {
        let mut out = self.rs.clone();
        for (ti, t) in out.tables.iter_mut().enumerate() {
            for (ci, c) in t.chains.iter_mut().enumerate() {
                if let Some(p) = state.policies.get(&(ti, ci)) {
                    c.counters.packets += p.packets;
                    c.counters.bytes += p.bytes;
                }
                for (ri, r) in c.rules.iter_mut().enumerate() {
                    if let Some(x) = state.rules.get(&(ti, ci, ri)) {
                        r.counters.packets += x.packets;
                        r.counters.bytes += x.bytes;
                    }
                }
            }
        }
        out
    }

    /// Run `table`'s built-in chain for `hook` (same contract as
    /// `CompiledRuleset::run`).
    pub fn run(
        &self,
        table: Table,
        hook: Hook,
        ctx: &mut PacketCtx,
        state: &mut RefState,
        now_ns: u64,
    ) -> Verdict {
        if !table.builtin_hooks().contains(&hook) {
            return Verdict::Accept;
        }
        let Some(ti) = self.rs.tables.iter().position(|t| t.table == table) else {
            return Verdict::Accept;
        };
        let Some(ci) = self.rs.tables[ti]
            .chains
            .iter()
            .position(|c| c.name == hook.chain_name())
        else {
            return Verdict::Accept;
        };
        match self.walk(ti, ci, ctx, state, now_ns) {
            Flow::Verdict(v) => v,
            Flow::Return => {
                let c = &self.rs.tables[ti].chains[ci];
                let pc = state.policies.entry((ti, ci)).or_default();
                pc.packets += 1;
                pc.bytes += u64::from(ctx.len);
                match c.policy {
                    Some(Policy::Drop) => Verdict::Drop,
                    _ => Verdict::Accept,
                }
            }
        }
    }

    fn chain_index(&self, ti: usize, name: &str) -> usize {
        self.rs.tables[ti]
            .chains
            .iter()
            .position(|c| c.name == name)
            .expect("reference evaluator: unknown chain")
    }

    /// Walk chain `ci` (following gotos in the same frame).
    fn walk(
        &self,
        ti: usize,
        mut ci: usize,
        ctx: &mut PacketCtx,
        state: &mut RefState,
        now_ns: u64,
    ) -> Flow {
        'chain: loop {
            let chain: &Chain = &self.rs.tables[ti].chains[ci];
            for (ri, rule) in chain.rules.iter().enumerate() {
                match self.rule_matches(rule, (ti, ci, ri), ctx, state, now_ns) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => return Flow::Verdict(Verdict::Drop),
                }
                let c = state.rules.entry((ti, ci, ri)).or_default();
                c.packets += 1;
                c.bytes += u64::from(ctx.len);
                match &rule.target {
                    Target::None => {}
                    Target::Accept => return Flow::Verdict(Verdict::Accept),
                    Target::Drop => return Flow::Verdict(Verdict::Drop),
                    Target::Reject(w) => return Flow::Verdict(Verdict::Reject(*w)),
                    Target::Return => return Flow::Return,
                    Target::Jump(name) => {
                        let callee = self.chain_index(ti, name);
                        if let Flow::Verdict(v) = self.walk(ti, callee, ctx, state, now_ns) {
                            return Flow::Verdict(v);
                        }
                    }
                    Target::Goto(name) => {
                        ci = self.chain_index(ti, name);
                        continue 'chain;
                    }
                    Target::Snat { .. }
                    | Target::Dnat { .. }
                    | Target::Masquerade { .. }
                    | Target::Redirect { .. } => {
                        return Flow::Verdict(Verdict::Nat(self.id_of((ti, ci, ri))))
                    }
                    Target::Log(_) => {
                        let id = self.id_of((ti, ci, ri));
                        let fx = &mut ctx.effects;
                        if (fx.log_count as usize) < MAX_LOGS {
                            fx.logs[fx.log_count as usize] = id;
                            fx.log_count += 1;
                        } else {
                            fx.log_overflow = fx.log_overflow.saturating_add(1);
                        }
                    }
                    Target::Mark(x) => ctx.mark = (ctx.mark & !x.mask) ^ x.value,
                    Target::Connmark(cm) => {
                        if has_ct(&ctx.ct) {
                            match *cm {
                                ConnmarkTarget::Set(x) => {
                                    set_ctmark(ctx, (ctx.ct.mark & !x.mask) ^ x.value)
                                }
                                ConnmarkTarget::Save { nfmask, ctmask } => {
                                    set_ctmark(ctx, (ctx.ct.mark & !ctmask) ^ (ctx.mark & nfmask))
                                }
                                ConnmarkTarget::Restore { nfmask, ctmask } => {
                                    ctx.mark = (ctx.mark & !nfmask) ^ (ctx.ct.mark & ctmask)
                                }
                            }
                        }
                    }
                    Target::Ttl(t) => {
                        let old = i32::from(ctx.ttl);
                        let new = match *t {
                            TtlTarget::Set(v) => i32::from(v),
                            TtlTarget::Inc(v) => (old + i32::from(v)).min(255),
                            TtlTarget::Dec(v) => (old - i32::from(v)).max(0),
                        };
                        if new != old {
                            ctx.ttl = new as u8;
                            ctx.effects.ttl_changed = true;
                        }
                    }
                    Target::Trace => ctx.effects.trace = true,
                    Target::Notrack | Target::CtNotrack => {
                        if !has_ct(&ctx.ct) {
                            ctx.ct = CtCtx::untracked();
                            ctx.effects.notrack = true;
                        }
                    }
                    Target::Tcpmss(t) => {
                        ctx.effects.tcpmss = Some(match t {
                            TcpmssTarget::SetMss(v) => *v,
                            TcpmssTarget::ClampToPmtu => 0,
                        })
                    }
                }
            }
            return Flow::Return;
        }
    }

    /// `Some(matched)`, or `None` when a match hot-drops the packet.
    fn rule_matches(
        &self,
        r: &Rule,
        pos: (usize, usize, usize),
        ctx: &PacketCtx,
        state: &mut RefState,
        now_ns: u64,
    ) -> Option<bool> {
        if let Some(s) = &r.src {
            if net_has(&s.val, ctx.src) == s.inv {
                return Some(false);
            }
        }
        if let Some(d) = &r.dst {
            if net_has(&d.val, ctx.dst) == d.inv {
                return Some(false);
            }
        }
        let in_name = self.if_name(ctx.in_if);
        if let Some(i) = &r.in_iface {
            if i.val.matches(in_name) == i.inv {
                return Some(false);
            }
        }
        let out_name = self.if_name(ctx.out_if);
        if let Some(o) = &r.out_iface {
            if o.val.matches(out_name) == o.inv {
                return Some(false);
            }
        }
        if let Some(p) = &r.proto {
            if p.val != 0 && (ctx.proto == p.val) == p.inv {
                return Some(false);
            }
        }
        if let Some(inv) = r.fragment {
            if ctx.fragment == inv {
                return Some(false);
            }
        }
        for (mi, m) in r.matches.iter().enumerate() {
            let ok = match m {
                Match::Comment(_) => true,
                Match::Tcp(t) => {
                    if ctx.fragment {
                        if ctx.frag_off == 1 {
                            return None;
                        }
                        false
                    } else if !ctx.has_l4 {
                        return None;
                    } else {
                        let mut ok = port_ok(&t.sport, ctx.sport) && port_ok(&t.dport, ctx.dport);
                        if ok {
                            if let Some(f) = &t.flags {
                                ok = ((ctx.tcp_flags & f.val.mask) == f.val.comp) != f.inv;
                            }
                        }
                        if ok {
                            if let Some(o) = &t.option {
                                if o.val != 0 {
                                    if ctx.tcp_options_bad {
                                        return None;
                                    }
                                    let k = o.val as usize;
                                    let present = (ctx.tcp_options[k / 64] >> (k % 64)) & 1 == 1;
                                    ok = present != o.inv;
                                }
                            }
                        }
                        ok
                    }
                }
                Match::Udp(u) => {
                    if ctx.fragment {
                        false
                    } else if !ctx.has_l4 {
                        return None;
                    } else {
                        port_ok(&u.sport, ctx.sport) && port_ok(&u.dport, ctx.dport)
                    }
                }
                Match::Icmp(i) => {
                    if ctx.fragment {
                        false
                    } else if !ctx.has_l4 {
                        return None;
                    } else {
                        let t = i.val;
                        let hit = t.ty == 255
                            || (ctx.icmp_type == t.ty
                                && (t.code_lo..=t.code_hi).contains(&ctx.icmp_code));
                        hit != i.inv
                    }
                }
                Match::Multiport(mp) => {
                    if ctx.fragment {
                        false
                    } else if !ctx.has_l4 {
                        return None;
                    } else {
                        let inr = |p: &PortRange, v: u16| (p.lo..=p.hi).contains(&v);
                        let hit = mp.ports.iter().any(|p| match mp.dir {
                            MultiportDir::Source => inr(p, ctx.sport),
                            MultiportDir::Destination => inr(p, ctx.dport),
                            MultiportDir::Either => inr(p, ctx.sport) || inr(p, ctx.dport),
                        });
                        hit != mp.inv
                    }
                }
                Match::Conntrack(c) => {
                    let ct = &ctx.ct;
                    let tracked = has_ct(ct);
                    let mut ok = true;
                    if let Some(s) = &c.state {
                        let mut bits = ct.state
                            & (CtStateSet::INVALID
                                | CtStateSet::NEW
                                | CtStateSet::ESTABLISHED
                                | CtStateSet::RELATED
                                | CtStateSet::UNTRACKED);
                        if tracked {
                            bits |= ct.state & (CtStateSet::SNAT | CtStateSet::DNAT);
                            if ct.status & CtStatusSet::SRC_NAT != 0 {
                                bits |= CtStateSet::SNAT;
                            }
                            if ct.status & CtStatusSet::DST_NAT != 0 {
                                bits |= CtStateSet::DNAT;
                            }
                        }
                        ok = (s.val.0 & bits != 0) != s.inv;
                    }
                    if ok && !tracked {
                        ok = c.state.is_some();
                    } else if ok {
                        let nets = [
                            (&c.orig_src, ct.orig_src),
                            (&c.orig_dst, ct.orig_dst),
                            (&c.repl_src, ct.repl_src),
                            (&c.repl_dst, ct.repl_dst),
                        ];
                        for (n, a) in nets {
                            if let Some(n) = n {
                                ok &= net_has(&n.val, a) != n.inv;
                            }
                        }
                        for (p, v) in [
                            (&c.orig_src_port, ct.orig_sport),
                            (&c.orig_dst_port, ct.orig_dport),
                        ] {
                            if let Some(p) = p {
                                ok &= ct.has_ports && ((p.val.lo..=p.val.hi).contains(&v) != p.inv);
                            }
                        }
                        if let Some(s) = &c.status {
                            ok &= (s.val.0 & ct.status != 0) != s.inv;
                        }
                    }
                    ok
                }
                Match::State(s) => {
                    let bits = ctx.ct.state & 0x1f;
                    (s.val.0 & bits != 0) != s.inv
                }
                Match::Mark(mm) => ((ctx.mark & mm.val.mask) == mm.val.value) != mm.inv,
                Match::Ttl(t) => match *t {
                    TtlMatch::Eq(v) => ctx.ttl == v,
                    TtlMatch::Ne(v) => ctx.ttl != v,
                    TtlMatch::Lt(v) => ctx.ttl < v,
                    TtlMatch::Gt(v) => ctx.ttl > v,
                },
                Match::Length(l) => (l.val.lo..=l.val.hi).contains(&ctx.len) != l.inv,
                Match::Iprange(ir) => {
                    let inr = |n: &Neg<(std::net::Ipv4Addr, std::net::Ipv4Addr)>, a: u32| {
                        (u32::from(n.val.0)..=u32::from(n.val.1)).contains(&a) != n.inv
                    };
                    ir.src.as_ref().is_none_or(|n| inr(n, ctx.src))
                        && ir.dst.as_ref().is_none_or(|n| inr(n, ctx.dst))
                }
                Match::Limit(l) => {
                    let key = (pos.0, pos.1, pos.2, mi);
                    let nft = self.flavor == Flavor::Nft;
                    ref_limit(
                        nft,
                        l.rate,
                        l.unit,
                        l.burst,
                        state.limits.get_mut(&key),
                        now_ns,
                    )
                    .map(|(hit, st)| {
                        state.limits.insert(key, st);
                        hit
                    })
                    .unwrap_or(false)
                }
                Match::Addrtype(a) => {
                    let s = a.src.is_none_or(|s| (s.val.0 & ctx.src_type != 0) != s.inv);
                    let d = a.dst.is_none_or(|d| (d.val.0 & ctx.dst_type != 0) != d.inv);
                    s && d
                }
            };
            if !ok {
                return Some(false);
            }
        }
        Some(true)
    }

    fn if_name(&self, i: Option<u8>) -> &str {
        match i {
            None => "",
            Some(i) => self
                .ifaces
                .get(usize::from(i))
                .map_or("\u{0}unnamed", String::as_str),
        }
    }
}

fn has_ct(ct: &CtCtx) -> bool {
    ct.state & (CtStateSet::NEW | CtStateSet::ESTABLISHED | CtStateSet::RELATED) != 0
}

fn set_ctmark(ctx: &mut PacketCtx, v: u32) {
    if ctx.ct.mark != v {
        ctx.ct.mark = v;
        ctx.effects.ctmark_changed = true;
    }
}

fn net_has(n: &Ipv4Net, a: u32) -> bool {
    a & n.mask == u32::from(n.addr) & n.mask
}

fn port_ok(p: &Option<Neg<PortRange>>, v: u16) -> bool {
    p.as_ref()
        .is_none_or(|p| (p.val.lo..=p.val.hi).contains(&v) != p.inv)
}

/// xt_limit (or nft_limit for `nft`) written out with 64-bit arithmetic and
/// explicit 32-bit wrapping. `bucket` is `(prev, credit)`: jiffies and
/// credits for xt, nanoseconds and tokens for nft. Returns the decision and
/// the new bucket.
fn ref_limit(
    nft: bool,
    rate: u32,
    unit: LimitUnit,
    burst: u32,
    bucket: Option<&mut (u64, u64)>,
    now_ns: u64,
) -> Option<(bool, (u64, u64))> {
    const HZ: u64 = 250;
    const CPJ: u64 = 128; // largest power of two <= 2^32 / (HZ * 86400)
    let secs: u64 = match unit {
        LimitUnit::Second => 1,
        LimitUnit::Minute => 60,
        LimitUnit::Hour => 3600,
        LimitUnit::Day => 86400,
    };
    let avg = 10_000 * secs / u64::from(rate.max(1));
    if nft {
        // iptables-nft: pick the largest unit whose rate is exact enough.
        let mults = [864_000_000u64, 36_000_000, 600_000, 10_000];
        let mut i = 1;
        while i < 4 && !(avg > mults[i] || mults[i] / avg < mults[i] % avg) {
            i += 1;
        }
        let cost = mults[i - 1] / 10_000 * 1_000_000_000 / (mults[i - 1] / avg);
        let max = cost * u64::from(burst);
        let (last, tokens) = match bucket {
            Some(b) => *b,
            None => (now_ns, max),
        };
        let t = (tokens + now_ns.saturating_sub(last)).min(max);
        let hit = t >= cost;
        let left = if hit { t - cost } else { t };
        return Some((hit, (last.max(now_ns), left)));
    }
    let to_credits = |user: u64| -> u64 {
        let user = user % (1 << 32);
        if user > 0xFFFF_FFFF / (HZ * CPJ) {
            ((user / 10_000) * HZ * CPJ) % (1 << 32)
        } else {
            user * HZ * CPJ / 10_000
        }
    };
    let cap = to_credits(avg * u64::from(burst));
    let cost = to_credits(avg);
    let now = now_ns / (1_000_000_000 / HZ);
    let (prev, credit) = match bucket {
        Some(b) => *b,
        None => (now, cap),
    };
    let gained = (now.saturating_sub(prev) * CPJ) % (1 << 32);
    let mut c = (credit + gained) % (1 << 32);
    c = c.min(cap);
    let hit = c >= cost;
    if hit {
        c -= cost;
    }
    Some((hit, (prev.max(now), c)))
}
