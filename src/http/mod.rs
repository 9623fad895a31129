//! The listener: plain HTTP or HTTPS (rustls), HTTP/1.1 and HTTP/2.

pub mod body_deadline;
pub mod headers;
pub mod server;
pub mod tls;
pub mod watch;
