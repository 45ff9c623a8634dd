//! `[nat_log]`: where the NAT events go (an IPFIX collector, syslog) and
//! what is logged. The exporter is `fastables-natlog`'s.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, Ctx};

/// Where syslog lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A Unix datagram socket (`/dev/log`, or any absolute path).
    Unix(PathBuf),
    /// A syslog server over UDP (`udp:HOST:PORT`).
    Udp(SocketAddr),
    /// Appended to a file, one line per event (`file:PATH`).
    File(PathBuf),
}

/// How syslog lines are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// `<PRI>1 TIMESTAMP HOST fastables PID NAT - MSG` (RFC 5424).
    #[default]
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOST fastables[PID]: MSG` (RFC 3164, BSD).
    Rfc3164,
}

/// `[nat_log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatLogConfig {
    /// The IPFIX collector (UDP), e.g. `10.0.0.5:4739`.
    pub ipfix: Option<SocketAddr>,
    /// The IPFIX observation domain id (default 1).
    pub observation_domain: u32,
    /// Seconds between two sendings of the templates (default 60; they
    /// also go first).
    pub template_refresh: u64,
    /// Where syslog lines go, if anywhere.
    pub syslog: Option<SyslogTarget>,
    pub syslog_format: SyslogFormat,
    /// The syslog facility's number (default 22, `local6`).
    pub facility: u8,
    /// Session create/delete events too (default true); block and
    /// exhaustion events always.
    pub sessions: bool,
    /// Events each worker's queue to the exporter holds (default 65536).
    pub queue: usize,
}

impl Default for NatLogConfig {
    fn default() -> Self {
        NatLogConfig {
            ipfix: None,
            observation_domain: 1,
            template_refresh: 60,
            syslog: None,
            syslog_format: SyslogFormat::Rfc5424,
            facility: 22,
            sessions: true,
            queue: 65536,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNatLog {
    ipfix: Option<Spanned<String>>,
    observation_domain: Option<u32>,
    template_refresh: Option<Spanned<u64>>,
    syslog: Option<Spanned<String>>,
    #[serde(default)]
    syslog_format: SyslogFormat,
    facility: Option<Spanned<String>>,
    sessions: Option<bool>,
    queue: Option<Spanned<u64>>,
}

/// The syslog facilities by name (RFC 5424 table 1).
const FACILITIES: [(&str, u8); 14] = [
    ("kern", 0),
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl RawNatLog {
    /// The section (at `span`) validated; relative file paths are from `dir`.
    pub(crate) fn validate(
        self,
        cx: &Ctx<'_>,
        span: Range<usize>,
        dir: &Path,
    ) -> Result<NatLogConfig, ConfigError> {
        let mut c = NatLogConfig::default();
        if let Some(a) = &self.ipfix {
            c.ipfix = Some(a.get_ref().parse().map_err(|_| {
                cx.err(
                    a.span(),
                    "nat_log.ipfix",
                    format!(
                        "`{}` is not a collector address: expected IP:PORT, e.g. \"10.0.0.5:4739\"",
                        a.get_ref()
                    ),
                )
            })?);
        }
        if let Some(d) = self.observation_domain {
            c.observation_domain = d;
        }
        if let Some(r) = &self.template_refresh {
            if *r.get_ref() == 0 {
                return Err(cx.err(
                    r.span(),
                    "nat_log.template_refresh",
                    "give the seconds between two sendings of the templates, at least 1",
                ));
            }
            c.template_refresh = *r.get_ref();
        }
        if let Some(s) = &self.syslog {
            let v = s.get_ref();
            let bad = |m: String| cx.err(s.span(), "nat_log.syslog", m);
            c.syslog = Some(if let Some(a) = v.strip_prefix("udp:") {
                SyslogTarget::Udp(
                    a.parse().map_err(|_| {
                        bad(format!("`{a}` is not IP:PORT, e.g. \"udp:10.0.0.5:514\""))
                    })?,
                )
            } else if let Some(p) = v.strip_prefix("file:") {
                if p.is_empty() {
                    return Err(bad("`file:` needs a path".into()));
                }
                let p = PathBuf::from(p);
                SyslogTarget::File(if p.is_absolute() { p } else { dir.join(p) })
            } else if v.starts_with('/') {
                SyslogTarget::Unix(PathBuf::from(v))
            } else {
                return Err(bad(format!(
                    "`{v}`: give a Unix socket path (\"/dev/log\"), \"udp:HOST:PORT\" or \"file:PATH\""
                )));
            });
        }
        c.syslog_format = self.syslog_format;
        if let Some(f) = &self.facility {
            c.facility = FACILITIES
                .iter()
                .find(|(n, _)| n == f.get_ref())
                .map(|x| x.1)
                .ok_or_else(|| {
                    let names: Vec<&str> = FACILITIES.iter().map(|x| x.0).collect();
                    cx.err(
                        f.span(),
                        "nat_log.facility",
                        format!(
                            "unknown facility `{}`: one of {}",
                            f.get_ref(),
                            names.join(", ")
                        ),
                    )
                })?;
        }
        if let Some(s) = self.sessions {
            c.sessions = s;
        }
        if let Some(q) = &self.queue {
            let v = *q.get_ref();
            if !(1024..=1 << 24).contains(&v) {
                return Err(cx.err(
                    q.span(),
                    "nat_log.queue",
                    format!("queue {v} is out of range [1024, 16777216]"),
                ));
            }
            c.queue = v as usize;
        }
        if c.ipfix.is_none() && c.syslog.is_none() {
            return Err(cx.err(
                span,
                "nat_log",
                "[nat_log] needs a destination: `ipfix = \"IP:PORT\"` and/or `syslog = ...`",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn parse(section: &str) -> Result<Option<NatLogConfig>, String> {
        Config::parse(section, "/etc/fastables/f.toml")
            .map(|c| c.nat_log)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn nat_log_section() {
        assert_eq!(parse("").unwrap(), None);
        let c = parse(
            "[nat_log]\nipfix = \"10.0.0.5:4739\"\nobservation_domain = 7\ntemplate_refresh = 30\n\
             syslog = \"file:nat.log\"\nsyslog_format = \"rfc3164\"\nfacility = \"local0\"\n\
             sessions = false\nqueue = 4096\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.ipfix, Some("10.0.0.5:4739".parse().unwrap()));
        assert_eq!((c.observation_domain, c.template_refresh), (7, 30));
        assert_eq!(
            c.syslog,
            Some(SyslogTarget::File(PathBuf::from("/etc/fastables/nat.log")))
        );
        assert_eq!((c.syslog_format, c.facility), (SyslogFormat::Rfc3164, 16));
        assert_eq!((c.sessions, c.queue), (false, 4096));
        let c = parse("[nat_log]\nsyslog = \"/dev/log\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.syslog, Some(SyslogTarget::Unix("/dev/log".into())));
        assert_eq!(c.ipfix, None);
        let c = parse("[nat_log]\nsyslog = \"udp:127.0.0.1:514\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.syslog,
            Some(SyslogTarget::Udp("127.0.0.1:514".parse().unwrap()))
        );
    }

    #[test]
    fn nat_log_errors_say_what_to_fix() {
        for (text, want) in [
            ("[nat_log]\n", "needs a destination"),
            ("[nat_log]\nipfix = \"collector\"\n", "expected IP:PORT"),
            ("[nat_log]\nsyslog = \"logs\"\n", "give a Unix socket path"),
            (
                "[nat_log]\nsyslog = \"/dev/log\"\nfacility = \"mail2\"\n",
                "unknown facility",
            ),
            (
                "[nat_log]\nsyslog = \"/dev/log\"\nqueue = 10\n",
                "out of range",
            ),
            (
                "[nat_log]\nsyslog = \"/dev/log\"\ntemplate_refresh = 0\n",
                "at least 1",
            ),
            (
                "[nat_log]\nsyslog = \"/dev/log\"\nsyslog_format = \"json\"\n",
                "rfc5424",
            ),
            (
                "[nat_log]\nsyslog = \"/dev/log\"\nlevel = 3\n",
                "unknown field",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("/etc/fastables/f.toml:"), "{e}");
        }
    }
}
