//! The sockets a server listens on and talks over: Unix or TCP, made
//! non-blocking for the event loop.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::{Interest, Registry, Token};

/// A listening socket (already bound and listening).
pub enum Listener {
    /// A Unix stream socket (the control socket).
    Unix(mio::net::UnixListener),
    /// A TCP socket (the metrics listener).
    Tcp(mio::net::TcpListener),
}

impl Listener {
    /// `l`, made non-blocking.
    pub fn unix(l: std::os::unix::net::UnixListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(Listener::Unix(mio::net::UnixListener::from_std(l)))
    }

    /// `l`, made non-blocking.
    pub fn tcp(l: std::net::TcpListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(mio::net::TcpListener::from_std(l)))
    }

    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    }

    pub(crate) fn register(&mut self, r: &Registry, t: Token) -> io::Result<()> {
        match self {
            Listener::Unix(l) => r.register(l, t, Interest::READABLE),
            Listener::Tcp(l) => r.register(l, t, Interest::READABLE),
        }
    }
}

/// A client's socket.
pub(crate) enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
}

impl Stream {
    pub(crate) fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    pub(crate) fn register(&mut self, r: &Registry, t: Token) -> io::Result<()> {
        r.register(self.source(), t, Interest::READABLE | Interest::WRITABLE)
    }

    pub(crate) fn deregister(&mut self, r: &Registry) {
        let _ = r.deregister(self.source());
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
