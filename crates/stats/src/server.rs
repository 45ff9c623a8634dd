//! The `/metrics` HTTP server: a thread of its own that answers `GET
//! /metrics` with the exposition of the last published [`Snapshot`].

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::{render, Snapshot};

/// Serves `GET /metrics` on `listener` from `snap` in a thread of its own
/// (never on the data path). Other paths get 404.
pub fn serve(listener: TcpListener, snap: Arc<Mutex<Snapshot>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut line = String::new();
                let mut r = BufReader::new(match c.try_clone() {
                    Ok(x) => x,
                    Err(_) => continue,
                });
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the request head.
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let resp = if line.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let body = match snap.lock() {
                        Ok(s) => render(&s),
                        Err(p) => render(&p.into_inner().clone()),
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = c.write_all(resp.as_bytes());
            }
        })
        .map(|_| ())
}
