//! A deadline for a whole request body.
//!
//! hyper times out nothing once the headers are in, so a client could hold
//! a request (and a slot in the ingest path) open by sending its body one
//! byte every few seconds. Every request body is wrapped so that it must
//! arrive completely within `server.body_read_timeout` of the headers; past
//! that, reading it fails and the handler answers 400.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// The error a body reports once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
pub struct BodyTimedOut(pub Duration);

/// A body that fails once `limit` has passed since it was wrapped.
pub struct DeadlineBody {
    inner: Body,
    deadline: tokio::time::Instant,
    /// Made the first time the body is not ready, so a body that arrives
    /// with its headers costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    limit: Duration,
}

impl DeadlineBody {
    /// Wraps `inner`; the clock starts now.
    pub fn wrap(inner: Body, limit: Duration) -> Body {
        if inner.is_end_stream() {
            return inner;
        }
        Body::new(DeadlineBody {
            inner,
            deadline: tokio::time::Instant::now() + limit,
            sleep: None,
            limit,
        })
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
