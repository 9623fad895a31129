//! Name resolution for deliveries, behind one seam.
//!
//! The SSRF guard asks for a destination host's addresses twice: when the
//! destination is created ([`super::ssrf::check_url_host`]) and every time
//! the delivery client connects ([`super::client::GuardedResolver`]), because
//! a DNS answer can change in between (DNS rebinding). Both ask the same
//! [`Resolver`], which the delivery engine is built with. `krafter serve`
//! always uses [`Resolver::system`]; tests inject answers with
//! [`Resolver::from_fn`], so a rebinding can be proven without a DNS server
//! and without any traffic leaving the machine.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::ssrf;

/// An answer being looked up: the host's addresses, or why there are none.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

type LookupFn = dyn Fn(&str) -> Lookup + Send + Sync;

/// Answers a host name with its addresses; cheap to clone (shared).
#[derive(Clone)]
pub struct Resolver {
    lookup: Arc<LookupFn>,
}

impl Resolver {
    /// The operating system's resolver (`getaddrinfo`, so `/etc/hosts` and
    /// the configured DNS servers), except that names under `.invalid` are
    /// answered "not found" without asking anyone: RFC 6761 reserves them
    /// never to resolve, and a query for them would only leak the name.
    pub fn system() -> Resolver {
        Resolver::from_fn(|name: &str| {
            let name = name.to_string();
            Box::pin(async move {
                if ssrf::is_invalid_name(&name) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} is a reserved .invalid name and never resolves"),
                    ));
                }
                let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
                Ok(addrs.map(|a| a.ip()).collect())
            })
        })
    }

    /// A resolver that answers with `lookup` (for tests: fixed or changing
    /// answers). The SSRF checks apply to whatever it answers.
    pub fn from_fn(lookup: impl Fn(&str) -> Lookup + Send + Sync + 'static) -> Resolver {
        Resolver {
            lookup: Arc::new(lookup),
        }
    }

    /// The addresses of `name` (a host name, never an IP literal).
    pub fn lookup(&self, name: &str) -> Lookup {
        (self.lookup)(name)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_resolver_never_resolves_invalid_names() {
        for name in ["hooks.invalid", "x.does-not-exist.INVALID."] {
            let err = Resolver::system().lookup(name).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{name}");
            assert!(err.to_string().contains(".invalid"), "{err}");
        }
    }

    #[tokio::test]
    async fn the_system_resolver_reads_localhost_from_the_hosts_file() {
        // /etc/hosts: no network traffic.
        let addrs = Resolver::system().lookup("localhost").await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
    }

    #[tokio::test]
    async fn an_injected_resolver_answers_instead_of_the_system() {
        let resolver = Resolver::from_fn(|name: &str| {
            let answer = if name == "a.invalid" {
                Ok(vec![IpAddr::from([10, 0, 0, 1])])
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            };
            Box::pin(std::future::ready(answer))
        });
        assert_eq!(
            resolver.lookup("a.invalid").await.unwrap(),
            vec![IpAddr::from([10, 0, 0, 1])]
        );
        assert!(resolver.clone().lookup("b.invalid").await.is_err());
    }
}
