//! TCP tracking, ported from net/netfilter/nf_conntrack_proto_tcp.c (Linux 6.x).
//!
//! Function names in comments are the kernel's. Sequence arithmetic is modulo
//! 2^32 exactly as in the kernel (`before()` / `after()`).

use crate::entry::{status, tcp_flags as F, ProtoInfo, TcpDirState, TcpInfo, TcpState};
use crate::tuple::Dir;
use crate::{Events, Timeouts};

/// TCP header flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}
use flags::*;

/// `enum tcp_bit_set`.
pub(crate) const TCP_SYN_SET: u8 = 0;
pub(crate) const TCP_SYNACK_SET: u8 = 1;
pub(crate) const TCP_FIN_SET: u8 = 2;
pub(crate) const TCP_ACK_SET: u8 = 3;
pub(crate) const TCP_RST_SET: u8 = 4;
pub(crate) const TCP_NONE_SET: u8 = 5;

/// Index of `TCP_CONNTRACK_RETRANS` / `_UNACK` in the timeout array.
const T_RETRANS: usize = 12;
const T_UNACK: usize = 13;

/// `TCP_MAX_WSCALE`.
const TCP_MAX_WSCALE: u8 = 14;
/// `MAXACKWINCONST`.
const MAXACKWINCONST: u32 = 66000;

// Transition table values: states, plus sIV (TCP_CONNTRACK_MAX) and sIG.
const S_NO: u8 = 0;
const S_SS: u8 = 1;
const S_SR: u8 = 2;
const S_ES: u8 = 3;
const S_FW: u8 = 4;
const S_CW: u8 = 5;
const S_LA: u8 = 6;
const S_TW: u8 = 7;
const S_CL: u8 = 8;
const S_S2: u8 = 9;
const S_IV: u8 = 10;
const S_IG: u8 = 11;

/// `tcp_conntracks[dir][index][state]`, copied from the kernel (6.x).
#[rustfmt::skip]
static TCP_CONNTRACKS: [[[u8; 10]; 6]; 2] = [
    [
        //          sNO,  sSS,  sSR,  sES,  sFW,  sCW,  sLA,  sTW,  sCL,  sS2
        /*syn*/    [S_SS, S_SS, S_IG, S_IG, S_IG, S_IG, S_IG, S_SS, S_SS, S_S2],
        /*synack*/ [S_IV, S_IV, S_SR, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_SR],
        /*fin*/    [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
        /*ack*/    [S_ES, S_IV, S_ES, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IV],
        /*rst*/    [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
        /*none*/   [S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV],
    ],
    [
        //          sNO,  sSS,  sSR,  sES,  sFW,  sCW,  sLA,  sTW,  sCL,  sS2
        /*syn*/    [S_IV, S_S2, S_IV, S_IV, S_IV, S_IV, S_IV, S_SS, S_IV, S_S2],
        /*synack*/ [S_IV, S_SR, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_SR],
        /*fin*/    [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
        /*ack*/    [S_IV, S_IG, S_SR, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IG],
        /*rst*/    [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
        /*none*/   [S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV],
    ],
];

/// The TCP facts of one segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpSeg<'a> {
    /// Flag byte (FIN..CWR).
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Raw (unscaled) window.
    pub window: u16,
    /// Header length in bytes (`doff * 4`).
    pub hdr_len: u16,
    /// Bytes from the TCP header to the end of the IP payload (`skb->len - dataoff`).
    pub l4_len: u32,
    /// The option bytes (header bytes 20..hdr_len).
    pub options: &'a [u8],
}

/// Outcome of the TCP tracker for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TcpVerdict {
    /// NF_ACCEPT: the packet belongs to the connection.
    Accept,
    /// -NF_ACCEPT: the packet is INVALID (no connection attached).
    Invalid,
    /// NF_ACCEPT after `nf_ct_kill_acct`: the packet belongs to the connection,
    /// which is removed now (RST without a reply seen).
    Kill,
    /// -NF_REPEAT: delete the entry and look the packet up again (reopen).
    Repeat,
}

/// Per-table TCP settings (the `nf_tcp_net` sysctls).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpCfg {
    pub loose: bool,
    pub be_liberal: bool,
    pub ignore_invalid_rst: bool,
    pub max_retrans: u8,
    /// Timeouts in ns indexed by `TCP_CONNTRACK_*` (0 = SYN_SENT), 12 = RETRANS, 13 = UNACK.
    pub timeouts: [u64; 14],
}

impl TcpCfg {
    pub(crate) fn from_timeouts(
        t: &Timeouts,
        loose: bool,
        be_liberal: bool,
        ignore_invalid_rst: bool,
        max_retrans: u8,
    ) -> TcpCfg {
        let s = |v: u32| u64::from(v) * 1_000_000_000;
        TcpCfg {
            loose,
            be_liberal,
            ignore_invalid_rst,
            max_retrans,
            timeouts: [
                s(t.tcp_syn_sent), // [0] = SYN_SENT, see nf_conntrack_tcp_init_net
                s(t.tcp_syn_sent),
                s(t.tcp_syn_recv),
                s(t.tcp_established),
                s(t.tcp_fin_wait),
                s(t.tcp_close_wait),
                s(t.tcp_last_ack),
                s(t.tcp_time_wait),
                s(t.tcp_close),
                s(t.tcp_syn_sent2),
                0,
                0,
                s(t.tcp_max_retrans),
                s(t.tcp_unacknowledged),
            ],
        }
    }
}

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// `get_conntrack_index()`.
pub(crate) fn get_conntrack_index(fl: u8) -> u8 {
    if fl & RST != 0 {
        TCP_RST_SET
    } else if fl & SYN != 0 {
        if fl & ACK != 0 {
            TCP_SYNACK_SET
        } else {
            TCP_SYN_SET
        }
    } else if fl & FIN != 0 {
        TCP_FIN_SET
    } else if fl & ACK != 0 {
        TCP_ACK_SET
    } else {
        TCP_NONE_SET
    }
}

/// `segment_seq_plus_len()`.
#[inline]
fn segment_seq_plus_len(seg: &TcpSeg) -> u32 {
    let payload = seg.l4_len.wrapping_sub(u32::from(seg.hdr_len));
    seg.seq
        .wrapping_add(payload)
        .wrapping_add(u32::from(seg.flags & SYN != 0))
        .wrapping_add(u32::from(seg.flags & FIN != 0))
}

#[inline]
fn maxackwindow(sender: &TcpDirState) -> u32 {
    if sender.td_maxwin > MAXACKWINCONST {
        sender.td_maxwin
    } else {
        MAXACKWINCONST
    }
}

/// `tcp_options()`: window scale and SACK-permitted from the option bytes.
pub(crate) fn tcp_options(opts: &[u8], state: &mut TcpDirState) {
    if opts.is_empty() {
        return;
    }
    state.td_scale = 0;
    state.flags &= F::BE_LIBERAL;
    let mut i = 0usize;
    let mut length = opts.len() as isize;
    while length > 0 {
        let Some(&opcode) = opts.get(i) else { return };
        i += 1;
        match opcode {
            0 => return, // TCPOPT_EOL
            1 => {
                // TCPOPT_NOP
                length -= 1;
                continue;
            }
            _ => {
                if length < 2 {
                    return;
                }
                let Some(&opsize) = opts.get(i) else { return };
                i += 1;
                if opsize < 2 || isize::from(opsize) > length {
                    return;
                }
                if opcode == 4 && opsize == 2 {
                    // TCPOPT_SACK_PERM
                    state.flags |= F::SACK_PERM;
                } else if opcode == 3 && opsize == 3 {
                    // TCPOPT_WINDOW
                    let Some(&s) = opts.get(i) else { return };
                    state.td_scale = s.min(TCP_MAX_WSCALE);
                    state.flags |= F::WINDOW_SCALE;
                }
                i += usize::from(opsize) - 2;
                length -= isize::from(opsize);
            }
        }
    }
}

/// `tcp_sack()`: the highest right edge of the SACK blocks, if above `sack`.
fn tcp_sack(opts: &[u8], sack: &mut u32) {
    let length0 = opts.len();
    if length0 == 0 {
        return;
    }
    // Fast path for timestamp-only option.
    if length0 == 12 && opts[..4] == [1, 1, 8, 10] {
        return;
    }
    let mut i = 0usize;
    let mut length = length0 as isize;
    while length > 0 {
        let Some(&opcode) = opts.get(i) else { return };
        i += 1;
        match opcode {
            0 => return,
            1 => {
                length -= 1;
                continue;
            }
            _ => {
                if length < 2 {
                    return;
                }
                let Some(&opsize) = opts.get(i) else { return };
                i += 1;
                if opsize < 2 || isize::from(opsize) > length {
                    return;
                }
                // TCPOPT_SACK, TCPOLEN_SACK_BASE 2, TCPOLEN_SACK_PERBLOCK 8
                if opcode == 5 && opsize >= 10 && (opsize - 2) % 8 == 0 {
                    let mut j = 0usize;
                    while j < usize::from(opsize - 2) {
                        let at = i + j + 4;
                        if let Some(b) = opts.get(at..at + 4) {
                            let tmp = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                            if after(tmp, *sack) {
                                *sack = tmp;
                            }
                        }
                        j += 8;
                    }
                    return;
                }
                i += usize::from(opsize) - 2;
                length -= isize::from(opsize);
            }
        }
    }
}

/// `tcp_init_sender()`.
fn tcp_init_sender(
    sender: &mut TcpDirState,
    receiver: &mut TcpDirState,
    seg: &TcpSeg,
    end: u32,
    win: u32,
    dir: Dir,
) {
    sender.td_end = end;
    sender.td_maxend = end;
    sender.td_maxwin = if win == 0 { 1 } else { win };
    tcp_options(seg.options, sender);
    // RFC 1323: both sides must send the Window Scale option.
    if dir == Dir::Reply
        && !(sender.flags & F::WINDOW_SCALE != 0 && receiver.flags & F::WINDOW_SCALE != 0)
    {
        sender.td_scale = 0;
        receiver.td_scale = 0;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WinAction {
    Ignore,
    Invalid,
    Accept,
}

/// `nf_tcp_log_invalid()`: liberal connections accept what would be invalid.
#[inline]
fn log_invalid(sender_flags: u8, be_liberal: bool, ret: WinAction) -> WinAction {
    if sender_flags & F::BE_LIBERAL != 0 || be_liberal {
        WinAction::Accept
    } else {
        ret
    }
}

/// `tcp_in_window()`.
fn tcp_in_window(
    t: &mut TcpInfo,
    dir: Dir,
    index: u8,
    seg: &TcpSeg,
    be_liberal: bool,
) -> WinAction {
    let state = t.state;
    let seq0 = seg.seq;
    let mut ack = seg.ack;
    let mut sack = ack;
    let win_raw = seg.window;
    let mut win = u32::from(win_raw);
    let mut end = segment_seq_plus_len(seg);
    let syn = seg.flags & SYN != 0;
    let ackf = seg.flags & ACK != 0;
    let rst = seg.flags & RST != 0;

    let [s0, s1] = &mut t.seen;
    let (sender, receiver) = if dir == Dir::Original {
        (s0, s1)
    } else {
        (s1, s0)
    };

    if receiver.flags & F::SACK_PERM != 0 {
        tcp_sack(seg.options, &mut sack);
    }
    // No NAT sequence adjustment (no helpers): receiver_offset is 0.

    if sender.td_maxwin == 0 {
        // Initialize sender data.
        if syn {
            tcp_init_sender(sender, receiver, seg, end, win, dir);
            if !ackf {
                // Simultaneous open
                return WinAction::Accept;
            }
        } else {
            // We are in the middle of a connection, its history is lost for us.
            sender.td_end = end;
            let swin = win << sender.td_scale;
            sender.td_maxwin = if swin == 0 { 1 } else { swin };
            sender.td_maxend = end.wrapping_add(sender.td_maxwin);
            if receiver.td_maxwin == 0 {
                receiver.td_end = sack;
                receiver.td_maxend = sack;
            } else if sack == receiver.td_end.wrapping_add(1) {
                // Likely a reply to a keepalive.
                receiver.td_end = receiver.td_end.wrapping_add(1);
            }
        }
    } else if syn
        && after(end, sender.td_end)
        && (state == TcpState::SynSent || state == TcpState::SynRecv)
    {
        // RFC 793: re-init state for this direction.
        tcp_init_sender(sender, receiver, seg, end, win, dir);
        if dir == Dir::Reply && !ackf {
            return WinAction::Accept;
        }
    }

    if !ackf {
        // If there is no ACK, just pretend it was set and OK.
        ack = receiver.td_end;
        sack = ack;
    } else if seg.flags & (ACK | RST) == (ACK | RST) && ack == 0 {
        // Broken TCP stacks, that set ACK in RST packets as well with zero ack value.
        ack = receiver.td_end;
        sack = ack;
    }

    let mut seq = seq0;
    if rst && seq == 0 && state == TcpState::SynSent {
        // RST sent answering SYN.
        seq = sender.td_end;
        end = sender.td_end;
    }

    let seq_ok = before(seq, sender.td_maxend.wrapping_add(1));
    if !seq_ok {
        let overshot = end.wrapping_sub(sender.td_maxend).wrapping_add(1);
        let ack_ok = after(
            sack,
            receiver
                .td_end
                .wrapping_sub(maxackwindow(sender))
                .wrapping_sub(1),
        );
        let in_recv_win = receiver.td_maxwin != 0
            && after(
                end,
                sender
                    .td_end
                    .wrapping_sub(receiver.td_maxwin)
                    .wrapping_sub(1),
            );
        if in_recv_win
            && ack_ok
            && overshot <= receiver.td_maxwin
            && before(sack, receiver.td_end.wrapping_add(1))
        {
            // Work around TCPs that send more bytes than allowed by the receive window.
            sender.td_end = end;
            sender.flags |= F::DATA_UNACKNOWLEDGED;
            return log_invalid(sender.flags, be_liberal, WinAction::Ignore);
        }
        // SEQ is over upper bound (over the window of the receiver)
        return log_invalid(sender.flags, be_liberal, WinAction::Invalid);
    }

    if !before(sack, receiver.td_end.wrapping_add(1)) {
        // ACK is over upper bound (ACKed data not seen yet)
        return log_invalid(sender.flags, be_liberal, WinAction::Invalid);
    }

    // Is the ending sequence in the receive window (if available)?
    let in_recv_win = receiver.td_maxwin == 0
        || after(
            end,
            sender
                .td_end
                .wrapping_sub(receiver.td_maxwin)
                .wrapping_sub(1),
        );
    if !in_recv_win {
        // SEQ is under lower bound (already ACKed data retransmitted)
        return log_invalid(sender.flags, be_liberal, WinAction::Ignore);
    }
    if !after(
        sack,
        receiver
            .td_end
            .wrapping_sub(maxackwindow(sender))
            .wrapping_sub(1),
    ) {
        // ignored ACK under lower bound (possible overly delayed)
        return log_invalid(sender.flags, be_liberal, WinAction::Ignore);
    }

    // Take into account window scaling (RFC 1323).
    if !syn {
        win <<= sender.td_scale;
    }

    // Update sender data.
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if sender.td_maxwin < swin {
        sender.td_maxwin = swin;
    }
    if after(end, sender.td_end) {
        sender.td_end = end;
        sender.flags |= F::DATA_UNACKNOWLEDGED;
    }
    if ackf {
        if sender.flags & F::MAXACK_SET == 0 {
            sender.td_maxack = ack;
            sender.flags |= F::MAXACK_SET;
        } else if after(ack, sender.td_maxack) {
            sender.td_maxack = ack;
        }
    }

    // Update receiver data.
    if receiver.td_maxwin != 0 && after(end, sender.td_maxend) {
        receiver.td_maxwin = receiver
            .td_maxwin
            .wrapping_add(end.wrapping_sub(sender.td_maxend));
    }
    if after(sack.wrapping_add(win), receiver.td_maxend.wrapping_sub(1)) {
        receiver.td_maxend = sack.wrapping_add(win);
        if win == 0 {
            receiver.td_maxend = receiver.td_maxend.wrapping_add(1);
        }
    }
    if ack == receiver.td_end {
        receiver.flags &= !F::DATA_UNACKNOWLEDGED;
    }

    // Check retransmissions.
    if index == TCP_ACK_SET {
        let d = dir as u8;
        if t.last_dir == d
            && t.last_seq == seq
            && t.last_ack == ack
            && t.last_end == end
            && t.last_win == win_raw
        {
            t.retrans = t.retrans.saturating_add(1);
        } else {
            t.last_dir = d;
            t.last_seq = seq;
            t.last_ack = ack;
            t.last_end = end;
            t.last_win = win_raw;
            t.retrans = 0;
        }
    }
    WinAction::Accept
}

/// `nf_tcp_handle_invalid()`: shrink the timeout of assured connections when
/// FIN/RST answers are out of window in both directions.
fn tcp_handle_invalid(
    t: &mut TcpInfo,
    st: u32,
    timeout: &mut u64,
    dir: Dir,
    index: u8,
    cfg: &TcpCfg,
    now: u64,
) {
    if st & status::ASSURED == 0 || st & status::FIXED_TIMEOUT != 0 {
        return;
    }
    if index != TCP_RST_SET && index != TCP_FIN_SET {
        return;
    }
    let d = dir as u8;
    if t.last_dir != d && (t.last_index == TCP_FIN_SET || t.last_index == TCP_RST_SET) {
        let expires = timeout.saturating_sub(now);
        if expires < 120 * 1_000_000_000 {
            return;
        }
        let to = cfg.timeouts[T_UNACK];
        if expires > to {
            *timeout = now + to;
        }
    } else {
        t.last_index = index;
        t.last_dir = d;
    }
}

/// `tcp_error()`: truncated header or an invalid flag combination.
/// (Checksums are verified by the caller: `PacketFacts::csum_bad`.)
pub(crate) fn tcp_error(seg: &TcpSeg) -> bool {
    if seg.hdr_len < 20 || seg.l4_len < u32::from(seg.hdr_len) {
        return true;
    }
    let f = seg.flags & !(ECE | CWR | PSH);
    !matches!(
        f,
        x if x == SYN
            || x == SYN | URG
            || x == SYN | ACK
            || x == RST
            || x == RST | ACK
            || x == FIN | ACK
            || x == FIN | ACK | URG
            || x == ACK
            || x == ACK | URG
    )
}

/// `tcp_new()`: initialise the state of a new (unconfirmed) connection.
fn tcp_new(t: &mut TcpInfo, seg: &TcpSeg, loose: bool) -> bool {
    let new_state =
        TCP_CONNTRACKS[0][usize::from(get_conntrack_index(seg.flags))][usize::from(S_NO)];
    if new_state >= S_IV {
        // invalid new
        return false;
    }
    let end = segment_seq_plus_len(seg);
    let win = u32::from(seg.window);
    if new_state == S_SS {
        *t = TcpInfo::default();
        t.seen[0].td_end = end;
        t.seen[0].td_maxwin = if win == 0 { 1 } else { win };
        t.seen[0].td_maxend = t.seen[0].td_end;
        tcp_options(seg.options, &mut t.seen[0]);
    } else if !loose {
        // Don't try to pick up connections.
        return false;
    } else {
        *t = TcpInfo::default();
        t.seen[0].td_end = end;
        t.seen[0].td_maxwin = if win == 0 { 1 } else { win };
        t.seen[0].td_maxend = t.seen[0].td_end.wrapping_add(t.seen[0].td_maxwin);
        // We assume SACK and liberal window checking to handle window scaling.
        t.seen[0].flags = F::SACK_PERM | F::BE_LIBERAL;
        t.seen[1].flags = F::SACK_PERM | F::BE_LIBERAL;
    }
    t.last_index = TCP_NONE_SET;
    true
}

/// `tcp_can_early_drop()`.
pub(crate) fn tcp_can_early_drop(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::FinWait
            | TcpState::LastAck
            | TcpState::TimeWait
            | TcpState::Close
            | TcpState::CloseWait
    )
}

/// `nf_ct_tcp_state_reset()`.
fn tcp_state_reset(s: &mut TcpDirState) {
    s.td_end = 0;
    s.td_maxend = 0;
    s.td_maxwin = 0;
    s.td_maxack = 0;
    s.td_scale = 0;
    s.flags &= F::BE_LIBERAL;
}

/// `nf_conntrack_tcp_established()`.
#[inline]
fn established(t: &TcpInfo, st: u32) -> bool {
    t.state == TcpState::Established && st & status::ASSURED != 0
}

/// `nf_ct_refresh_acct()` (accounting not kept).
#[inline]
pub(crate) fn refresh(st: u32, timeout: &mut u64, extra: u64, now: u64) {
    if st & status::FIXED_TIMEOUT != 0 {
        return;
    }
    *timeout = if st & status::CONFIRMED != 0 {
        now + extra
    } else {
        extra
    };
}

/// The fields of a connection's entry that the TCP tracker reads and updates.
pub(crate) struct TcpEntry<'a> {
    /// The entry's status bits (`IPS_*`).
    pub status: &'a mut u32,
    /// The entry's timeout (a relative one until it is confirmed).
    pub timeout: &'a mut u64,
    /// The entry's protocol state (`ProtoInfo::Tcp`).
    pub proto: &'a mut ProtoInfo,
}

/// `nf_conntrack_tcp_packet()`: track one segment of the connection whose
/// entry fields `e` holds. Events (PROTOINFO, ASSURED) are added to `ev`.
// The match mirrors the kernel's `switch (new_state)` case by case.
#[allow(clippy::collapsible_match)]
pub(crate) fn tcp_packet(
    e: TcpEntry<'_>,
    dir: Dir,
    seg: &TcpSeg,
    cfg: &TcpCfg,
    now: u64,
    ev: &mut Events,
) -> TcpVerdict {
    let TcpEntry {
        status: e_status,
        timeout,
        proto,
    } = e;
    if tcp_error(seg) {
        return TcpVerdict::Invalid;
    }
    let ProtoInfo::Tcp(t) = proto else {
        return TcpVerdict::Invalid;
    };
    if *e_status & status::CONFIRMED == 0 && !tcp_new(t, seg, cfg.loose) {
        return TcpVerdict::Invalid;
    }

    let st = *e_status;
    let d = dir.idx();
    let mut old_state = t.state;
    let index = get_conntrack_index(seg.flags);
    let mut new_state = TCP_CONNTRACKS[d][usize::from(index)][old_state as usize];
    let mut skip_window = false;

    // The `switch (new_state)` of nf_conntrack_tcp_packet().
    let mut ignore_path = false;
    match new_state {
        S_SS => {
            if old_state >= TcpState::TimeWait {
                // RFC 1122 reopen from TIME-WAIT, or aborted connection reopened.
                if (t.seen[d].flags | t.seen[1 - d].flags) & F::CLOSE_INIT != 0
                    || (t.last_dir == d as u8 && t.last_index == TCP_RST_SET)
                {
                    // Attempt to reopen a closed/aborted connection.
                    return TcpVerdict::Repeat;
                }
                ignore_path = true; // fallthrough
            }
        }
        S_IG => ignore_path = true,
        S_IV => {
            // Invalid packet (no synproxy here).
            return TcpVerdict::Invalid;
        }
        S_TW => {
            // RFC5961 challenge ACK must not be taken as ACKing the last FIN.
            if old_state == TcpState::LastAck
                && index == TCP_ACK_SET
                && t.last_dir != d as u8
                && t.last_index == TCP_SYN_SET
                && t.last_flags & F::EXP_CHALLENGE_ACK != 0
            {
                t.last_flags &= !F::EXP_CHALLENGE_ACK;
                return TcpVerdict::Accept; // Don't change state
            }
        }
        S_S2 => {
            // tcp_conntracks table is not smart enough to handle simultaneous open.
            t.last_flags |= F::SIMULTANEOUS_OPEN;
        }
        S_SR => {
            if dir == Dir::Reply && index == TCP_ACK_SET && t.last_flags & F::SIMULTANEOUS_OPEN != 0
            {
                new_state = S_ES;
            }
        }
        S_CL => {
            if index == TCP_RST_SET {
                'close: {
                    // Tuple might have been re-used already: skip validation.
                    if tcp_can_early_drop(t.state) {
                        skip_window = true;
                        break 'close;
                    }
                    // td_maxack might be outdated if we let a SYN through earlier
                    if t.seen[1 - d].flags & F::MAXACK_SET != 0 && t.last_index != TCP_SYN_SET {
                        let seq = seg.seq;
                        if seq == 0 && !established(t, st) {
                            break 'close;
                        }
                        if before(seq, t.seen[1 - d].td_maxack) && !cfg.ignore_invalid_rst {
                            // Invalid RST
                            return TcpVerdict::Invalid;
                        }
                        if !established(t, st) || seq == t.seen[1 - d].td_maxack {
                            break 'close;
                        }
                        // Check if rst is part of train.
                        if t.last_index == TCP_ACK_SET && t.last_dir == d as u8 && seq == t.last_end
                        {
                            break 'close;
                        }
                        // RST sequence number doesn't match exactly, keep established
                        // state to allow a possible challenge ACK.
                        new_state = old_state as u8;
                    }
                    if ((st & status::SEEN_REPLY != 0 && t.last_index == TCP_SYN_SET)
                        || (st & status::ASSURED == 0 && t.last_index == TCP_ACK_SET))
                        && seg.ack == t.last_end
                    {
                        // RST sent to invalid SYN or ACK we had let through.
                        skip_window = true;
                        break 'close;
                    }
                    // Reset in response to a challenge-ack we let through earlier
                    if old_state == TcpState::SynSent
                        && t.last_index == TCP_ACK_SET
                        && t.last_dir == Dir::Reply as u8
                        && seg.seq == t.last_ack
                    {
                        skip_window = true;
                    }
                }
            }
        }
        _ => {}
    }

    if ignore_path {
        if index == TCP_SYNACK_SET
            && t.last_index == TCP_SYN_SET
            && t.last_dir != d as u8
            && seg.ack == t.last_end
        {
            // This SYN/ACK acknowledges a SYN that we earlier ignored as invalid:
            // get in sync from the annotated values.
            old_state = TcpState::SynSent;
            new_state = S_SR;
            let ld = usize::from(t.last_dir & 1);
            t.seen[ld].td_end = t.last_end;
            t.seen[ld].td_maxend = t.last_end;
            t.seen[ld].td_maxwin = if t.last_win == 0 {
                1
            } else {
                u32::from(t.last_win)
            };
            t.seen[ld].td_scale = t.last_wscale;
            t.last_flags &= !F::EXP_CHALLENGE_ACK;
            t.seen[ld].flags = t.last_flags;
            tcp_state_reset(&mut t.seen[d]);
        } else {
            t.last_index = index;
            t.last_dir = d as u8;
            t.last_seq = seg.seq;
            t.last_end = segment_seq_plus_len(seg);
            t.last_win = seg.window;
            // a) SYN in ORIGINAL: annotate the options.
            if index == TCP_SYN_SET && dir == Dir::Original {
                let mut seen = TcpDirState::default();
                t.last_flags = 0;
                t.last_wscale = 0;
                tcp_options(seg.options, &mut seen);
                if seen.flags & F::WINDOW_SCALE != 0 {
                    t.last_flags |= F::WINDOW_SCALE;
                    t.last_wscale = seen.td_scale;
                }
                if seen.flags & F::SACK_PERM != 0 {
                    t.last_flags |= F::SACK_PERM;
                }
                if old_state == TcpState::LastAck {
                    t.last_flags |= F::EXP_CHALLENGE_ACK;
                }
            }
            // possible challenge ack reply to syn
            if old_state == TcpState::SynSent && index == TCP_ACK_SET && dir == Dir::Reply {
                t.last_ack = seg.ack;
            }
            // packet ignored: accepted, state unchanged, no refresh
            return TcpVerdict::Accept;
        }
    }

    if !skip_window {
        match tcp_in_window(t, dir, index, seg, cfg.be_liberal) {
            WinAction::Ignore => return TcpVerdict::Accept,
            WinAction::Invalid => {
                tcp_handle_invalid(t, st, timeout, dir, index, cfg, now);
                return TcpVerdict::Invalid;
            }
            WinAction::Accept => {}
        }
    }

    // in_window: from now on we have got in-window packets
    t.last_index = index;
    t.last_dir = d as u8;
    let new = TcpState::from_u8(new_state).unwrap_or(old_state);
    t.state = new;
    if old_state != new && new == TcpState::FinWait {
        t.seen[d].flags |= F::CLOSE_INIT;
    }

    let to = &cfg.timeouts;
    let ns = new as usize;
    let mut tmo = if t.retrans >= cfg.max_retrans && to[ns] > to[T_RETRANS] {
        to[T_RETRANS]
    } else if index == TCP_RST_SET {
        to[TcpState::Close as usize]
    } else if (t.seen[0].flags | t.seen[1].flags) & F::DATA_UNACKNOWLEDGED != 0
        && to[ns] > to[T_UNACK]
    {
        to[T_UNACK]
    } else if t.last_win == 0 && to[ns] > to[T_RETRANS] {
        to[T_RETRANS]
    } else {
        to[ns]
    };

    if new != old_state {
        ev.0 |= Events::PROTOINFO;
    }

    if st & status::SEEN_REPLY == 0 {
        // If only reply is a RST, we can consider ourselves not to have an
        // established connection.
        if seg.flags & RST != 0 {
            return TcpVerdict::Kill;
        }
        if index == TCP_SYN_SET && old_state == TcpState::SynSent {
            // do not renew timeout on SYN retransmit.
            return TcpVerdict::Accept;
        }
        // ESTABLISHED without SEEN_REPLY (mid-connection pickup): avoid the
        // large ESTABLISHED timeout.
        if new == TcpState::Established && tmo > to[T_UNACK] {
            tmo = to[T_UNACK];
        }
    } else if st & status::ASSURED == 0
        && (old_state == TcpState::SynRecv || old_state == TcpState::Established)
        && new == TcpState::Established
    {
        // Set ASSURED if we see valid ack in ESTABLISHED after SYN_RECV or a
        // valid answer for a picked up connection.
        *e_status |= status::ASSURED;
        ev.0 |= Events::ASSURED;
    }
    refresh(*e_status, timeout, tmo, now);
    TcpVerdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_wscale_and_sack() {
        // MSS 1460, SACK_PERM, TS, NOP, WSCALE 7
        let opts = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut s = TcpDirState::default();
        tcp_options(&opts, &mut s);
        assert_eq!(s.td_scale, 7);
        assert_eq!(s.flags, F::WINDOW_SCALE | F::SACK_PERM);
        // Scale capped at 14, truncated option ignored.
        let mut s = TcpDirState::default();
        tcp_options(&[3, 3, 20], &mut s);
        assert_eq!(s.td_scale, 14);
        let mut s = TcpDirState::default();
        tcp_options(&[3, 3], &mut s);
        assert_eq!(s.flags, 0);
    }

    #[test]
    fn sack_right_edge() {
        let mut sack = 1000;
        // NOP NOP SACK len 10: block 1500..2000
        let opts = [1, 1, 5, 10, 0, 0, 5, 0xdc, 0, 0, 7, 0xd0];
        tcp_sack(&opts, &mut sack);
        assert_eq!(sack, 2000);
    }

    #[test]
    fn flag_validity() {
        let mut seg = TcpSeg {
            hdr_len: 20,
            l4_len: 20,
            ..Default::default()
        };
        for (f, bad) in [
            (SYN, false),
            (SYN | FIN, true),
            (0, true),
            (FIN, true),
            (FIN | ACK | PSH, false),
            (RST | ACK | ECE, false),
        ] {
            seg.flags = f;
            assert_eq!(tcp_error(&seg), bad, "flags {f:#x}");
        }
        seg.flags = ACK;
        seg.l4_len = 10;
        assert!(tcp_error(&seg), "truncated");
    }

    #[test]
    fn index_order() {
        assert_eq!(get_conntrack_index(RST | SYN), TCP_RST_SET);
        assert_eq!(get_conntrack_index(SYN | ACK), TCP_SYNACK_SET);
        assert_eq!(get_conntrack_index(FIN | ACK), TCP_FIN_SET);
        assert_eq!(get_conntrack_index(ACK | PSH), TCP_ACK_SET);
        assert_eq!(get_conntrack_index(PSH), TCP_NONE_SET);
    }
}
