//! The metrics listener: `GET /metrics` (the exposition of the last
//! published [`Snapshot`] and the live lines of [`render_live`]),
//! `/healthz` (200 while the process serves) and `/readyz` (200 when the
//! ports are open and every worker makes progress, 503 and the reason
//! otherwise). A bounded server (`fastables-serve`): one thread, at most
//! [`HTTP_LIMITS`]`.max_clients` clients, a request head of at most 8 KiB
//! sent within 5 s, the answer read within 10 s; never on the data path.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastables_serve::{
    Chunk, ConnId, Io, Limits, Listener, Parse, Protocol, Refusal, Server, ServerStats,
};

use crate::{render, render_live, Health, Snapshot};

/// The metrics listener's bounds.
pub const HTTP_LIMITS: Limits = Limits {
    max_clients: 256,
    small_request: MAX_HEAD,
    max_request: MAX_HEAD,
    large_budget: 0,
    request_deadline: Duration::from_secs(5),
    answer_deadline: Duration::from_secs(1),
    write_deadline: Duration::from_secs(10),
    stream_stall: Duration::from_secs(10),
    linger: Duration::from_secs(2),
};

/// The largest request head (request line and headers) taken.
const MAX_HEAD: usize = 8 << 10;

/// What the metrics listener serves: the page the control thread publishes,
/// and what it reads live.
pub struct Exporter {
    page: Mutex<Arc<[u8]>>,
    health: Arc<Health>,
    servers: Mutex<Vec<Arc<ServerStats>>>,
}

impl Exporter {
    /// An exporter with an empty page, over `health`.
    pub fn new(health: Arc<Health>) -> Arc<Exporter> {
        Arc::new(Exporter {
            page: Mutex::new(Arc::from(&b""[..])),
            health,
            servers: Mutex::new(Vec::new()),
        })
    }

    /// Renders `s` as the page that scrapes get from now on.
    pub fn publish(&self, s: &Snapshot) {
        let page: Arc<[u8]> = Arc::from(render(s).into_bytes());
        if let Ok(mut p) = self.page.lock() {
            *p = page;
        }
    }

    /// Adds a server whose counters `/metrics` shows.
    pub fn add_server(&self, s: Arc<ServerStats>) {
        if let Ok(mut v) = self.servers.lock() {
            v.push(s);
        }
    }

    /// The whole `/metrics` text: the published page and the live lines.
    pub fn scrape(&self) -> String {
        let (page, live) = self.parts(Instant::now());
        String::from_utf8_lossy(&page).into_owned() + &live
    }

    fn parts(&self, now: Instant) -> (Arc<[u8]>, String) {
        let page = match self.page.lock() {
            Ok(p) => Arc::clone(&p),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        let servers = match self.servers.lock() {
            Ok(s) => s.clone(),
            Err(s) => s.into_inner().clone(),
        };
        (page, render_live(&self.health, &servers, now))
    }
}

/// Serves `listener` in a thread of its own until the returned server is
/// dropped; its counters are added to `exporter`'s page.
pub fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    limits: Limits,
) -> std::io::Result<Server> {
    let e = Arc::clone(&exporter);
    let server = Server::start("metrics", Listener::tcp(listener)?, limits, move |_| Http {
        exporter: e,
    })?;
    exporter.add_server(server.stats());
    Ok(server)
}

struct Http {
    exporter: Arc<Exporter>,
}

/// An answer: status line, content type, and the body in parts.
fn response(status: &str, content_type: &str, body: &[&[u8]], head_only: bool) -> Vec<u8> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if !head_only {
        for b in body {
            r.extend_from_slice(b);
        }
    }
    r
}

fn text(status: &str, body: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        &[body.as_bytes()],
        false,
    )
}

impl Protocol for Http {
    fn parse(&mut self, input: &[u8], eof: bool) -> Parse {
        let end =
            input.windows(4).any(|w| w == b"\r\n\r\n") || input.windows(2).any(|w| w == b"\n\n");
        if end || eof {
            Parse::Complete
        } else if input.len() >= MAX_HEAD {
            Parse::TooLarge
        } else {
            Parse::More
        }
    }

    fn request(&mut self, id: ConnId, request: Vec<u8>, io: &mut Io<'_>) {
        let head = String::from_utf8_lossy(&request);
        let mut words = head.lines().next().unwrap_or("").split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            let mut r = text("405 Method Not Allowed", "only GET and HEAD\n");
            let at = r.len() - "only GET and HEAD\n".len() - 2;
            r.splice(at..at, *b"\r\nAllow: GET, HEAD");
            io.send(id, Chunk::Owned(r));
            io.finish(id);
            return;
        }
        let now = Instant::now();
        match path {
            "/metrics" => {
                let (page, live) = self.exporter.parts(now);
                let head = response(
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    &[&page, live.as_bytes()],
                    true,
                );
                io.send(id, Chunk::Owned(head));
                if !head_only {
                    io.send(id, Chunk::Shared(page));
                    io.send(id, Chunk::Owned(live.into_bytes()));
                }
            }
            "/healthz" => {
                io.send(
                    id,
                    Chunk::Owned(response(
                        "200 OK",
                        "text/plain; charset=utf-8",
                        &[b"ok\n"],
                        head_only,
                    )),
                );
            }
            "/readyz" => {
                let r = match self.exporter.health.ready(now) {
                    Ok(()) => response(
                        "200 OK",
                        "text/plain; charset=utf-8",
                        &[b"ready\n"],
                        head_only,
                    ),
                    Err(why) => {
                        let body = format!("not ready: {why}\n");
                        response(
                            "503 Service Unavailable",
                            "text/plain; charset=utf-8",
                            &[body.as_bytes()],
                            head_only,
                        )
                    }
                };
                io.send(id, Chunk::Owned(r));
            }
            _ => {
                io.send(
                    id,
                    Chunk::Owned(text(
                        "404 Not Found",
                        "not found: /metrics, /healthz, /readyz\n",
                    )),
                );
            }
        }
        io.finish(id);
    }

    fn refusal(&mut self, why: Refusal) -> Option<Vec<u8>> {
        Some(match why {
            Refusal::Full | Refusal::Evicted | Refusal::Busy | Refusal::Streams => {
                text("503 Service Unavailable", "too many clients\n")
            }
            Refusal::TooLarge => text(
                "431 Request Header Fields Too Large",
                "request head over 8 KiB\n",
            ),
            Refusal::RequestDeadline => text(
                "408 Request Timeout",
                "request head not complete within 5 s\n",
            ),
            Refusal::AnswerDeadline | Refusal::WriteDeadline => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn get(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn endpoints_answer_and_idle_clients_do_not_hold_them_up() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let health = Arc::new(Health::new(1));
        let e = Exporter::new(Arc::clone(&health));
        e.publish(&Snapshot {
            ct_entries: 7,
            ..Snapshot::default()
        });
        let limits = Limits {
            max_clients: 4,
            ..HTTP_LIMITS
        };
        let _server = serve(l, Arc::clone(&e), limits).unwrap();
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t = Instant::now();
        let m = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("\nfastables_conntrack_entries 7\n"), "{m}");
        assert!(m.contains("\nfastables_ready 0\n"), "{m}");
        assert!(
            m.contains("\nfastables_server_refused_total{server=\"metrics\",reason=\"evicted\"} "),
            "{m}"
        );
        let (head, body) = m.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        let r = get(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        health.set_open(true);
        let r = get(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK") && r.ends_with("ready\n"),
            "{r}"
        );
        assert!(get(addr, "GET /healthz HTTP/1.0\n\n").ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("\r\nAllow: GET, HEAD\r\n"),
            "{post}"
        );
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(get(addr, &big).starts_with("HTTP/1.1 431 "));
        drop(idle);
    }
}
