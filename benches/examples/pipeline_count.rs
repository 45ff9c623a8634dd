//! A workload for instruction counting (`perf/callgrind.sh`): runs one part of
//! the data path on `PACKETS` packets and exits. Only the functions named
//! `measure_*` do the measured work (callgrind is run with
//! `--toggle-collect=*measure_*`), so set-up and the frame restore between
//! batches are not counted.
//!
//! Usage: `pipeline_count MODE PACKETS`, MODE one of
//! - `parse[:tcp1500]`: `parse_frame` on 64-byte UDP frames (1514-byte TCP
//!   frames with `:tcp1500`);
//! - `rules:<empty|N>[:tcp1500]`: filter FORWARD evaluation alone
//!   (`CompiledRuleset::run`) with the bench ruleset of N rules, the packet
//!   matching rule N - 1 (the context of a 64-byte UDP frame unless `:tcp1500`);
//! - `pipeline:<empty|seed|N>[:tcp1500]`: the whole pipeline on batches of 64
//!   frames (64-byte UDP unless `:tcp1500`); PACKETS is rounded up to a
//!   multiple of 64.
//!
//! The rulesets, frames and topology are those of `benches/pipeline.rs`.

use std::hint::black_box;
use std::process::ExitCode;

use fastables_packet::parse::parse_frame;
use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::PacketCtx;
use fastables_rules::model::{Hook, Table};

#[path = "../benches/pipeline_setup/mod.rs"]
mod pipeline_setup;
use pipeline_setup::{FrameKind, Harness, BATCH};

#[inline(never)]
fn measure_parse(frames: &[Vec<u8>], n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        if parse_frame(black_box(&frames[i % frames.len()])).is_ok() {
            ok += 1;
        }
    }
    ok
}

#[inline(never)]
fn measure_rules(
    rules: &CompiledRuleset,
    state: &mut RuleState,
    ctxs: &[PacketCtx],
    n: usize,
) -> usize {
    let mut accepted = 0;
    for i in 0..n {
        let mut c = black_box(ctxs[i % ctxs.len()]);
        let v = rules.run(Table::Filter, Hook::Forward, &mut c, state, 0);
        if v == fastables_rules::ctx::Verdict::Accept {
            accepted += 1;
        }
    }
    accepted
}

#[inline(never)]
fn measure_batch(h: &mut Harness, now_ns: u64) {
    h.run(now_ns);
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: pipeline_count MODE PACKETS\n  MODE: parse[:tcp1500] | rules:<empty|N>[:tcp1500] | pipeline:<empty|seed|N>[:tcp1500]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, packets] = args.as_slice() else {
        return usage();
    };
    let Ok(n) = packets.parse::<usize>() else {
        return usage();
    };
    let mut parts: Vec<&str> = mode.split(':').collect();
    let kind = if parts.last() == Some(&"tcp1500") {
        parts.pop();
        FrameKind::Tcp1500
    } else {
        FrameKind::Udp64
    };
    match parts.as_slice() {
        ["parse"] => {
            let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| pipeline_setup::frame(kind, i)).collect();
            let ok = measure_parse(&frames, n);
            assert_eq!(ok, n, "every frame parses");
        }
        ["rules", name] => {
            let rules = pipeline_setup::compile(&pipeline_setup::rules_text(name));
            let ctxs: Vec<PacketCtx> = (0..BATCH)
                .map(|i| pipeline_setup::forward_ctx(kind, i))
                .collect();
            pipeline_setup::check_forward_accept(&rules, &ctxs[0]);
            let mut state = RuleState::new(&rules);
            let accepted = measure_rules(&rules, &mut state, &ctxs, n);
            assert_eq!(accepted, n, "every packet is accepted");
        }
        ["pipeline", name] => {
            let mut h = Harness::new(&pipeline_setup::rules_text(name), kind);
            for b in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch(&mut h, 1_000_000_000 + b as u64);
            }
            h.check();
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}
