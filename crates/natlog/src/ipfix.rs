//! IPFIX (RFC 7011) messages of NAT events with RFC 8158's information
//! elements and templates, and a decoder of them (for tests and tools).
//!
//! One template per kind of record (ids from 256):
//!
//! | id  | events                     | fields (IE id: bytes) |
//! |-----|----------------------------|------------------------|
//! | 256 | NAT44 session create/delete | observationTimeMilliseconds 323:8, natEvent 230:1, ingressVRFID 234:4, protocolIdentifier 4:1, sourceIPv4Address 8:4, sourceTransportPort 7:2, postNATSourceIPv4Address 225:4, postNAPTSourceTransportPort 227:2, destinationIPv4Address 12:4, destinationTransportPort 11:2, postNATDestinationIPv4Address 226:4, postNAPTDestinationTransportPort 228:2 |
//! | 257 | port block allocation/de-allocation | 323:8, 230:1, 234:4, 8:4, 225:4, portRangeStart 361:2, portRangeEnd 362:2, portRangeStepSize 363:2, portRangeNumPorts 364:2 |
//! | 258 | addresses exhausted | 323:8, 230:1, natPoolID 283:4 |
//! | 259 | ports exhausted | 323:8, 230:1, 225:4, 4:1 |
//! | 260 | quota exceeded (per user) | 323:8, 230:1, natQuotaExceededEvent 466:4, maxEntriesPerUser 473:4, 8:4 |
//!
//! A message never exceeds [`MAX_MESSAGE`] bytes (one UDP datagram within
//! a 1500-byte MTU). The sequence number counts the data records sent
//! before the message, as RFC 7011 says.

use fastables_conntrack::{NatEvent, NatEventKind};

/// Largest message sent.
pub const MAX_MESSAGE: usize = 1400;
/// `natQuotaExceededEvent` value for "maximum entries per user".
pub const QUOTA_PER_USER: u32 = 3;

const VERSION: u16 = 10;
const HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET: u16 = 2;

/// The templates: (id, fields as (IE id, length)).
pub const TEMPLATES: [(u16, &[(u16, u16)]); 5] = [
    (
        256,
        &[
            (323, 8),
            (230, 1),
            (234, 4),
            (4, 1),
            (8, 4),
            (7, 2),
            (225, 4),
            (227, 2),
            (12, 4),
            (11, 2),
            (226, 4),
            (228, 2),
        ],
    ),
    (
        257,
        &[
            (323, 8),
            (230, 1),
            (234, 4),
            (8, 4),
            (225, 4),
            (361, 2),
            (362, 2),
            (363, 2),
            (364, 2),
        ],
    ),
    (258, &[(323, 8), (230, 1), (283, 4)]),
    (259, &[(323, 8), (230, 1), (225, 4), (4, 1)]),
    (260, &[(323, 8), (230, 1), (466, 4), (473, 4), (8, 4)]),
];

/// The template of an event kind.
pub fn template_of(k: NatEventKind) -> u16 {
    match k {
        NatEventKind::SessionCreate | NatEventKind::SessionDelete => 256,
        NatEventKind::BlockAlloc | NatEventKind::BlockRelease => 257,
        NatEventKind::AddressesExhausted => 258,
        NatEventKind::PortsExhausted => 259,
        NatEventKind::QuotaExceeded => 260,
    }
}

fn fields(id: u16) -> &'static [(u16, u16)] {
    TEMPLATES.iter().find(|t| t.0 == id).map_or(&[], |t| t.1)
}

/// The value of IE `ie` of event `e` (time in ms since the epoch).
fn value(e: &NatEvent, ie: u16, time_ms: u64) -> u64 {
    let (lo, hi) = e.block;
    match ie {
        323 => time_ms,
        230 => e.kind as u64,
        4 => u64::from(e.proto),
        8 => u64::from(e.src),
        7 => u64::from(e.sport),
        225 => u64::from(e.xsrc),
        227 => u64::from(e.xsport),
        12 => u64::from(e.dst),
        11 => u64::from(e.dport),
        226 => u64::from(e.xdst),
        228 => u64::from(e.xdport),
        361 => u64::from(lo),
        362 => u64::from(hi),
        363 => 1,
        364 => u64::from(hi.wrapping_sub(lo)) + 1,
        283 => u64::from(e.pool),
        466 => u64::from(QUOTA_PER_USER),
        473 => u64::from(e.limit),
        _ => 0,
    }
}

/// Builds IPFIX messages of one observation domain.
pub struct Encoder {
    domain: u32,
    /// Data records sent so far (the next message's sequence number).
    seq: u32,
    msg: Vec<u8>,
    /// The data set being filled: its template and where it starts.
    set: Option<(u16, usize)>,
    records: u32,
}

impl Encoder {
    pub fn new(domain: u32) -> Encoder {
        Encoder {
            domain,
            seq: 0,
            msg: Vec::with_capacity(MAX_MESSAGE),
            set: None,
            records: 0,
        }
    }

    /// Data records handed out in messages so far (the next message's
    /// sequence number).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    fn header(&mut self, export_secs: u32) {
        self.msg.clear();
        self.msg.extend_from_slice(&VERSION.to_be_bytes());
        self.msg.extend_from_slice(&0u16.to_be_bytes());
        self.msg.extend_from_slice(&export_secs.to_be_bytes());
        self.msg.extend_from_slice(&self.seq.to_be_bytes());
        self.msg.extend_from_slice(&self.domain.to_be_bytes());
    }

    /// Patch the open set's and the message's lengths.
    fn close_set(&mut self) {
        if let Some((_, at)) = self.set.take() {
            let len = (self.msg.len() - at) as u16;
            self.msg[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn finish(&mut self) -> &[u8] {
        self.close_set();
        let len = self.msg.len() as u16;
        self.msg[2..4].copy_from_slice(&len.to_be_bytes());
        self.seq = self.seq.wrapping_add(self.records);
        self.records = 0;
        &self.msg
    }

    /// A message holding the template set alone.
    pub fn templates(&mut self, export_secs: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        m.extend_from_slice(&VERSION.to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes());
        m.extend_from_slice(&export_secs.to_be_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.domain.to_be_bytes());
        let set_at = m.len();
        m.extend_from_slice(&TEMPLATE_SET.to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes());
        for (id, f) in TEMPLATES {
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&(f.len() as u16).to_be_bytes());
            for (ie, len) in f {
                m.extend_from_slice(&ie.to_be_bytes());
                m.extend_from_slice(&len.to_be_bytes());
            }
        }
        let set_len = (m.len() - set_at) as u16;
        m[set_at + 2..set_at + 4].copy_from_slice(&set_len.to_be_bytes());
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    /// Adds `e` (at `time_ns` since the epoch) to the message being built;
    /// a message that is full goes to `out` first.
    pub fn add(
        &mut self,
        e: &NatEvent,
        time_ns: u64,
        export_secs: u32,
        out: &mut dyn FnMut(&[u8]),
    ) {
        let id = template_of(e.kind);
        let f = fields(id);
        let rec: usize = f.iter().map(|x| usize::from(x.1)).sum();
        let same_set = matches!(self.set, Some((t, _)) if t == id);
        let need = rec + if same_set { 0 } else { SET_HEADER };
        if !self.msg.is_empty() && self.msg.len() + need > MAX_MESSAGE {
            out(self.finish());
            self.msg.clear();
        }
        if self.msg.is_empty() {
            self.header(export_secs);
        }
        if !matches!(self.set, Some((t, _)) if t == id) {
            self.close_set();
            self.set = Some((id, self.msg.len()));
            self.msg.extend_from_slice(&id.to_be_bytes());
            self.msg.extend_from_slice(&0u16.to_be_bytes());
        }
        let ms = time_ns / 1_000_000;
        for &(ie, len) in f {
            let v = value(e, ie, ms).to_be_bytes();
            self.msg.extend_from_slice(&v[8 - usize::from(len)..]);
        }
        self.records += 1;
    }

    /// The message being built, if it holds a record, goes to `out`.
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.records > 0 {
            out(self.finish());
        }
        self.msg.clear();
        self.set = None;
    }
}

/// A data record decoded with its template: (IE id, value) in order.
pub type Record = Vec<(u16, u64)>;

/// What [`Decoder::message`] read from one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub export_secs: u32,
    pub seq: u32,
    pub domain: u32,
    /// Data records: their template and values.
    pub records: Vec<(u16, Record)>,
}

/// Decodes IPFIX messages, remembering the templates they announce
/// (fixed-length fields, no enterprise numbers: what [`Encoder`] sends).
#[derive(Debug, Default)]
pub struct Decoder {
    templates: std::collections::HashMap<u16, Vec<(u16, u16)>>,
}

impl Decoder {
    /// One message; `Err` names what is malformed.
    pub fn message(&mut self, m: &[u8]) -> Result<Decoded, String> {
        let rd16 = |b: &[u8], at: usize| -> Result<u16, String> {
            b.get(at..at + 2)
                .map(|s| u16::from_be_bytes([s[0], s[1]]))
                .ok_or_else(|| format!("short at {at}"))
        };
        let rd32 = |b: &[u8], at: usize| -> Result<u32, String> {
            b.get(at..at + 4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or_else(|| format!("short at {at}"))
        };
        if rd16(m, 0)? != VERSION {
            return Err("not IPFIX (version 10)".into());
        }
        let len = usize::from(rd16(m, 2)?);
        if len != m.len() {
            return Err(format!("length {len} but {} bytes", m.len()));
        }
        let mut d = Decoded {
            export_secs: rd32(m, 4)?,
            seq: rd32(m, 8)?,
            domain: rd32(m, 12)?,
            records: Vec::new(),
        };
        let mut at = HEADER;
        while at < len {
            let id = rd16(m, at)?;
            let slen = usize::from(rd16(m, at + 2)?);
            if slen < SET_HEADER || at + slen > len {
                return Err(format!("set {id} of length {slen} at {at}"));
            }
            let end = at + slen;
            let mut p = at + SET_HEADER;
            if id == TEMPLATE_SET {
                while p + 4 <= end {
                    let tid = rd16(m, p)?;
                    let n = usize::from(rd16(m, p + 2)?);
                    p += 4;
                    let mut f = Vec::with_capacity(n);
                    for _ in 0..n {
                        let ie = rd16(m, p)?;
                        if ie & 0x8000 != 0 {
                            return Err("enterprise elements are not decoded".into());
                        }
                        f.push((ie, rd16(m, p + 2)?));
                        p += 4;
                    }
                    self.templates.insert(tid, f);
                }
            } else if id >= 256 {
                let f = self
                    .templates
                    .get(&id)
                    .ok_or_else(|| format!("data set {id} before its template"))?;
                let rec: usize = f.iter().map(|x| usize::from(x.1)).sum();
                while rec > 0 && p + rec <= end {
                    let mut r = Vec::with_capacity(f.len());
                    for &(ie, l) in f {
                        let mut v = 0u64;
                        for b in m.get(p..p + usize::from(l)).unwrap_or(&[]) {
                            v = (v << 8) | u64::from(*b);
                        }
                        r.push((ie, v));
                        p += usize::from(l);
                    }
                    d.records.push((id, r));
                }
            }
            at = end;
        }
        Ok(d)
    }
}

/// The event a decoded record stands for (time in ns, ms precision).
pub fn event_of(r: &Record) -> Option<NatEvent> {
    let get = |ie: u16| r.iter().find(|x| x.0 == ie).map(|x| x.1);
    let kind = NatEventKind::from_value(get(230)? as u8)?;
    let mut e = NatEvent {
        kind,
        time_ns: get(323).unwrap_or(0) * 1_000_000,
        proto: get(4).unwrap_or(0) as u8,
        src: get(8).unwrap_or(0) as u32,
        sport: get(7).unwrap_or(0) as u16,
        xsrc: get(225).unwrap_or(0) as u32,
        xsport: get(227).unwrap_or(0) as u16,
        dst: get(12).unwrap_or(0) as u32,
        dport: get(11).unwrap_or(0) as u16,
        xdst: get(226).unwrap_or(0) as u32,
        xdport: get(228).unwrap_or(0) as u16,
        pool: get(283).unwrap_or(0) as u32,
        limit: get(473).unwrap_or(0) as u32,
        ..NatEvent::default()
    };
    if let (Some(lo), Some(hi)) = (get(361), get(362)) {
        e.block = (lo as u16, hi as u16);
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(i: u16) -> NatEvent {
        NatEvent {
            kind: NatEventKind::SessionCreate,
            time_ns: 1_733_604_800_123_000_000,
            proto: 6,
            src: 0xac12_0002,
            sport: 40000 + i,
            xsrc: 0xcb00_7105,
            xsport: 2000 + i,
            dst: 0x0808_0808,
            dport: 80,
            xdst: 0x0808_0808,
            xdport: 80,
            ..NatEvent::default()
        }
    }

    #[test]
    fn messages_decode_to_the_events_with_sequence_numbers() {
        let mut enc = Encoder::new(42);
        let mut dec = Decoder::default();
        let t = enc.templates(1_733_604_800);
        let d = dec.message(&t).unwrap();
        assert_eq!((d.domain, d.seq, d.records.len()), (42, 0, 0));
        let block = NatEvent {
            kind: NatEventKind::BlockAlloc,
            time_ns: 1_733_604_801_000_000_000,
            src: 0xac12_0002,
            xsrc: 0xcb00_7105,
            block: (2000, 2511),
            pool: 1,
            ..NatEvent::default()
        };
        let mut msgs = Vec::new();
        let mut events = vec![block];
        events.extend((0..100).map(session));
        events.push(NatEvent {
            kind: NatEventKind::QuotaExceeded,
            src: 7,
            limit: 512,
            ..NatEvent::default()
        });
        for e in &events {
            enc.add(e, e.time_ns, 1_733_604_802, &mut |m| msgs.push(m.to_vec()));
        }
        enc.flush(&mut |m| msgs.push(m.to_vec()));
        assert!(msgs.len() > 2, "100 sessions need several messages");
        let mut got = Vec::new();
        let mut seq = 0;
        for m in &msgs {
            assert!(m.len() <= MAX_MESSAGE);
            let d = dec.message(m).unwrap();
            assert_eq!(d.seq, seq, "the records sent before");
            seq += d.records.len() as u32;
            got.extend(d.records.iter().map(|r| event_of(&r.1).unwrap()));
        }
        assert_eq!(got.len(), events.len());
        assert_eq!(enc.sequence(), events.len() as u32);
        // The block template has no natPoolID (RFC 8158's has none).
        assert_eq!(got[0], NatEvent { pool: 0, ..block });
        assert_eq!(got[1], session(0));
        assert_eq!(got[100], session(99));
        assert_eq!(
            (got[101].kind, got[101].limit, got[101].src),
            (NatEventKind::QuotaExceeded, 512, 7)
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut dec = Decoder::default();
        assert!(dec.message(&[0, 9, 0, 4]).is_err());
        let mut enc = Encoder::new(1);
        let mut m = Vec::new();
        enc.add(&session(1), 0, 0, &mut |_| {});
        enc.flush(&mut |x| m = x.to_vec());
        assert!(dec.message(&m).unwrap_err().contains("before its template"));
    }
}
