//! Closing connections that stop talking.
//!
//! hyper arms its HTTP/1 header-read timeout only once protocol detection
//! has read the first bytes, and has no idle timeout for HTTP/2, so a
//! connection that sends nothing — or an HTTP/2 connection left idle after
//! its preface — would stay open forever and hold a file descriptor. The
//! listener wraps every socket in [`Activity`], which notes when bytes last
//! moved, and a per-connection watchdog (over [`Clock::deadline`]) closes
//! the connection once it has been silent too long.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved bytes, shared between its I/O and its
/// watchdog.
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    /// Milliseconds after `started` of the last read or write.
    last_ms: AtomicU64,
    /// Whether the peer has sent anything at all.
    heard: AtomicBool,
}

impl Clock {
    fn touch(&self, read: bool) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        if read {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// When the connection must be closed if nothing moves before then:
    /// `silent_limit` after the start while the peer has sent nothing,
    /// `idle_limit` after the last read or write afterwards.
    pub fn deadline(&self, silent_limit: Duration, idle_limit: Duration) -> Instant {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        if self.heard.load(Ordering::Relaxed) {
            last + idle_limit
        } else {
            last + silent_limit
        }
    }

    /// Whether the peer has sent any byte yet.
    pub fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }
}

/// A socket that records on its [`Clock`] every time bytes move.
pub struct Activity<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Activity<S> {
    /// Wraps `inner`; the returned clock starts now.
    pub fn new(inner: S) -> (Activity<S>, Arc<Clock>) {
        let clock = Arc::new(Clock {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            heard: AtomicBool::new(false),
        });
        (
            Activity {
                inner,
                clock: clock.clone(),
            },
            clock,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch(true);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch(false);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
