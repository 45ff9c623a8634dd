//! The bounds of a server, with a line protocol: a request is a line (or
//! what came before EOF), answered `ok <length>` at once; `later` is
//! answered from another thread; `stream` starts a stream of lines.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastables_serve::{
    Chunk, ConnId, Io, Limits, Listener, Parse, Protocol, Refusal, Server, Waker,
};

struct Lines {
    later: Arc<Mutex<Vec<ConnId>>>,
    streams: Vec<ConnId>,
    lines: mpsc::Receiver<String>,
}

impl Protocol for Lines {
    fn parse(&mut self, input: &[u8], eof: bool) -> Parse {
        if input.contains(&b'\n') || eof {
            Parse::Complete
        } else {
            Parse::More
        }
    }

    fn request(&mut self, id: ConnId, request: Vec<u8>, io: &mut Io<'_>) {
        match &request[..] {
            b"later\n" => self.later.lock().unwrap().push(id),
            b"stream\n" => {
                io.send(id, Chunk::Owned(b"streaming\n".to_vec()));
                io.stream(id);
                self.streams.push(id);
            }
            _ => {
                io.send(
                    id,
                    Chunk::Owned(format!("ok {}\n", request.len()).into_bytes()),
                );
                io.finish(id);
            }
        }
    }

    fn refusal(&mut self, why: Refusal) -> Option<Vec<u8>> {
        Some(format!("refused {}\n", why.name()).into_bytes())
    }

    fn woken(&mut self, io: &mut Io<'_>) {
        for id in self.later.lock().unwrap().drain(..) {
            io.send(id, Chunk::Shared(Arc::from(&b"later ok\n"[..])));
            io.finish(id);
        }
        while let Ok(l) = self.lines.try_recv() {
            for id in &self.streams {
                io.send(*id, Chunk::Owned(l.clone().into_bytes()));
            }
        }
    }

    fn gone(&mut self, id: ConnId) {
        self.streams.retain(|x| *x != id);
    }
}

struct Fixture {
    path: PathBuf,
    server: Server,
    waker: Arc<Waker>,
    later: Arc<Mutex<Vec<ConnId>>>,
    lines: mpsc::Sender<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn limits() -> Limits {
    Limits {
        max_clients: 8,
        small_request: 16,
        max_request: 64,
        large_budget: 48,
        request_deadline: Duration::from_millis(500),
        answer_deadline: Duration::from_millis(500),
        write_deadline: Duration::from_millis(500),
        stream_stall: Duration::from_millis(300),
        linger: Duration::from_millis(200),
    }
}

fn start(tag: &str, limits: Limits) -> Fixture {
    let path = std::env::temp_dir().join(format!("fastables-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let later = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let mut waker = None;
    let l2 = Arc::clone(&later);
    let server = Server::start("test", Listener::unix(l).unwrap(), limits, |w| {
        waker = Some(w);
        Lines {
            later: l2,
            streams: Vec::new(),
            lines: rx,
        }
    })
    .unwrap();
    Fixture {
        path,
        server,
        waker: waker.unwrap(),
        later,
        lines: tx,
    }
}

/// Sends `req` (then EOF) and reads the answer until EOF.
fn ask(path: &PathBuf, req: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn idle_clients_give_way_to_a_new_one() {
    let f = start("idle", limits());
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&f.path).unwrap())
        .collect();
    let t = Instant::now();
    assert_eq!(ask(&f.path, b"hello\n"), "ok 6\n");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let stats = f.server.stats();
    assert!(stats.refused(Refusal::Evicted) >= 92, "{stats:?}");
    assert!(stats.clients() <= 8, "{stats:?}");
    drop(idle);
}

#[test]
fn a_request_over_the_limit_is_refused_whole() {
    let f = start("large", limits());
    let big = vec![b'x'; 1000];
    assert_eq!(ask(&f.path, &big), "refused too_large\n");
    assert_eq!(f.server.stats().refused(Refusal::TooLarge), 1);
    // Within the limit, drawn from the budget.
    assert_eq!(ask(&f.path, &[b'y'; 40]), "ok 40\n");
}

#[test]
fn the_shared_budget_refuses_what_does_not_fit() {
    let f = start("budget", limits());
    // Two clients hold 40 bytes each: 24 + 24 of a budget of 48.
    let mut a = UnixStream::connect(&f.path).unwrap();
    a.write_all(&[b'a'; 40]).unwrap();
    let mut b = UnixStream::connect(&f.path).unwrap();
    b.write_all(&[b'b'; 40]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ask(&f.path, &[b'c'; 40]), "refused busy\n");
    assert_eq!(f.server.stats().refused(Refusal::Busy), 1);
    drop((a, b));
}

#[test]
fn a_silent_client_is_dropped_at_its_deadline() {
    let f = start("slow", limits());
    let mut s = UnixStream::connect(&f.path).unwrap();
    s.write_all(b"no newline").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(out, "refused request_deadline\n");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(f.server.stats().refused(Refusal::RequestDeadline), 1);
}

#[test]
fn answers_from_elsewhere_and_their_deadline() {
    let f = start("later", limits());
    let path = f.path.clone();
    let asker = std::thread::spawn(move || ask(&path, b"later\n"));
    while f.later.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    f.waker.wake().unwrap();
    assert_eq!(asker.join().unwrap(), "later ok\n");
    // Nobody answers: the client is told.
    let unanswered = ask(&f.path, b"later\n");
    assert_eq!(unanswered, "refused answer_deadline\n");
    f.later.lock().unwrap().clear();
    assert_eq!(f.server.stats().refused(Refusal::AnswerDeadline), 1);
}

#[test]
fn a_stream_lives_while_it_reads() {
    let f = start("stream", limits());
    let mut s = UnixStream::connect(&f.path).unwrap();
    s.write_all(b"stream\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"streaming\n");
    // Idle for longer than every deadline: it stays.
    std::thread::sleep(Duration::from_millis(800));
    f.lines.send("line 1\n".into()).unwrap();
    f.waker.wake().unwrap();
    let mut line = [0u8; 7];
    s.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"line 1\n");
    // A reader that stops reading while output waits is dropped.
    let big = "z".repeat(64 << 10) + "\n";
    for _ in 0..64 {
        f.lines.send(big.clone()).unwrap();
    }
    f.waker.wake().unwrap();
    let t = Instant::now();
    while f.server.stats().refused(Refusal::WriteDeadline) == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "never dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(f.server.stats().clients(), 0);
}
