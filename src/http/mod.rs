//! The listener: plain HTTP or HTTPS (rustls), HTTP/1.1 and HTTP/2.

pub mod server;
pub mod tls;
