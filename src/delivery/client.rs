//! The outgoing HTTP client: pooled keep-alive connections, rustls with the
//! system roots plus `delivery.extra_ca_path`, and the SSRF guard applied
//! where it cannot be dodged — on the addresses actually connected to.
//!
//! Names are resolved by our own resolver, which refuses the whole answer
//! if any address is private (unless allowed) before the connector sees it,
//! so no connection to a refused address is ever attempted; it asks the
//! [`Resolver`] the client is built with at every new connection, so an
//! answer that changed since the destination was created (DNS rebinding) is
//! judged anew. IP-literal URLs never reach a resolver, so
//! [`guard_literal`] checks them before a request is sent.
//! Redirects are never followed (hyper's client doesn't), so a 3xx is just a
//! failed attempt.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tower::Service;

use super::resolve::Resolver;
use super::ssrf::{self, SsrfError};
use crate::config::DeliveryConfig;
use crate::http::tls::provider;

/// The pooled client every delivery uses.
pub type DeliveryClient = Client<HttpsConnector<Connector>, Full<Bytes>>;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("delivery.extra_ca_path {path}: {message}")]
    ExtraCa { path: String, message: String },
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("delivery.proxy_url: {0}")]
    Proxy(String),
}

/// How deliveries reach the network: straight to the destination, or
/// through `delivery.proxy_url` with a CONNECT tunnel (for http and https
/// alike, so the proxy never sees a request, only the address).
///
/// Through the proxy, the destination's name is resolved here by the
/// SSRF-guarded resolver and the tunnel asked for the checked address
/// (`CONNECT 203.0.113.7:443`), so the proxy cannot be pointed at what the
/// guard refuses; TLS still verifies the destination's name.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector<GuardedResolver>,
    proxy: Option<ProxyRoute>,
}

#[derive(Clone)]
struct ProxyRoute {
    tunnel: hyper_util::client::legacy::connect::proxy::Tunnel<HttpConnector>,
    guard: GuardedResolver,
}

type Stream = hyper_util::rt::TokioIo<tokio::net::TcpStream>;

impl Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        // Both inner connectors are always ready; each call readies its own.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        match self.proxy.clone() {
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| direct.poll_ready(cx)).await?;
                    Ok(direct.call(uri).await?)
                })
            }
            Some(ProxyRoute {
                mut tunnel,
                mut guard,
            }) => Box::pin(async move {
                let target = checked_target(&uri, &mut guard).await?;
                std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
                Ok(tunnel.call(target).await?)
            }),
        }
    }
}

/// The address a tunnel is asked for: the destination's host resolved and
/// checked by the SSRF guard (an IP literal is checked as is), its port.
async fn checked_target(
    uri: &http::Uri,
    guard: &mut GuardedResolver,
) -> Result<http::Uri, BoxError> {
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            guard.reach.check(bare, ip)?;
            ip
        }
        Err(_) => {
            use std::str::FromStr;
            let name = Name::from_str(bare)?;
            std::future::poll_fn(|cx| guard.poll_ready(cx)).await?;
            guard
                .call(name)
                .await?
                .next()
                .ok_or("the name resolved to no address")?
                .ip()
        }
    };
    let authority = SocketAddr::new(ip, port).to_string();
    Ok(http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(authority)
        .path_and_query("/")
        .build()?)
}

/// Which networks deliveries may reach (`delivery.allow_private_networks`
/// and `delivery.loopback_only`).
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    pub allow_private: bool,
    pub loopback_only: bool,
}

impl Reach {
    /// The delivery configuration's reach.
    pub fn of(config: &DeliveryConfig) -> Reach {
        Reach {
            allow_private: config.allow_private_networks,
            loopback_only: config.loopback_only,
        }
    }

    /// Whether a connection to `ip` (named `host` in the URL) may be made.
    fn check(&self, host: &str, ip: std::net::IpAddr) -> Result<(), SsrfError> {
        if self.loopback_only && !ip.is_loopback() {
            return Err(SsrfError::NotLoopback {
                host: host.to_string(),
            });
        }
        if self.allow_private {
            return Ok(());
        }
        ssrf::check_resolved(host, &[SocketAddr::new(ip, 0)])
    }
}

/// DNS resolution that refuses private answers (the SSRF guard), and under
/// `loopback_only` resolves nothing but `localhost`, without DNS (nor the
/// injected resolver).
#[derive(Clone)]
pub struct GuardedResolver {
    reach: Reach,
    resolver: Resolver,
}

type Resolved = std::vec::IntoIter<SocketAddr>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Name> for GuardedResolver {
    type Response = Resolved;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach;
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            if reach.loopback_only && !ssrf::is_localhost_name(&host) {
                return Err(SsrfError::NotLoopback { host }.into());
            }
            let addrs: Vec<SocketAddr> = if reach.loopback_only {
                vec![
                    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
                ]
            } else {
                let ips = resolver.lookup(&host).await?;
                ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect()
            };
            for addr in &addrs {
                reach.check(&host, addr.ip())?;
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Builds the client from the delivery configuration, resolving names with
/// `resolver` (the system's, except in tests).
pub fn build(config: &DeliveryConfig, resolver: Resolver) -> Result<DeliveryClient, ClientError> {
    build_with_body(config, resolver)
}

/// The same client for another request body type (the CLI's GETs).
pub fn build_with_body<B>(
    config: &DeliveryConfig,
    resolver: Resolver,
) -> Result<Client<HttpsConnector<Connector>, B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    build_with_identity(config, resolver, None)
}

/// A client certificate chain and its private key, for mutual TLS.
pub type Identity = (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The same client presenting `identity` to servers that ask for a client
/// certificate (a destination's `tls_client_certificate`); it has its own
/// connection pool, so no connection made with one identity serves another.
pub fn build_with_identity<B>(
    config: &DeliveryConfig,
    resolver: Resolver,
    identity: Option<Identity>,
) -> Result<Client<HttpsConnector<Connector>, B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = crate::http::tls::native_roots();
    if let Some(path) = &config.extra_ca_path {
        for cert in load_pem(path)? {
            roots.add(cert).map_err(|e| ClientError::ExtraCa {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let tls = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };

    let guard = GuardedResolver {
        reach: Reach::of(config),
        resolver,
    };
    let connect_timeout = Some(config.timeout.min(Duration::from_secs(10)));
    let mut http = HttpConnector::new_with_resolver(guard.clone());
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let proxy = match &config.proxy_url {
        None => None,
        Some(proxy_url) => {
            let proxy_uri: http::Uri = proxy_url
                .parse()
                .map_err(|e: http::uri::InvalidUri| ClientError::Proxy(e.to_string()))?;
            // The proxy is the operator's choice (often on a private
            // network), so it is not held to the destination SSRF rules;
            // under `loopback_only` it must be on loopback too.
            if config.loopback_only {
                let host = proxy_uri.host().unwrap_or_default();
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let loopback = bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(ClientError::Proxy(
                        "must be a loopback address while delivery.loopback_only is true".into(),
                    ));
                }
            }
            let mut to_proxy = HttpConnector::new();
            to_proxy.set_nodelay(true);
            to_proxy.set_connect_timeout(connect_timeout);
            to_proxy.set_keepalive(Some(Duration::from_secs(60)));
            let tunnel =
                hyper_util::client::legacy::connect::proxy::Tunnel::new(proxy_uri, to_proxy);
            Some(ProxyRoute { tunnel, guard })
        }
    };
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Connector {
            direct: http,
            proxy,
        });
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(https))
}

fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |message: String| ClientError::ExtraCa {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Refuses an IP-literal URL host on a forbidden network (names are
/// checked by [`GuardedResolver`] when connecting).
pub fn guard_literal(url: &url::Url, reach: Reach) -> Result<(), SsrfError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
        _ => return Ok(()),
    };
    reach.check(&ip.to_string(), ip)
}

/// Whether an error chain contains an SSRF refusal.
pub fn is_ssrf_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<SsrfError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tower::Service;

    use super::*;
    use crate::delivery::ssrf::AddressClass;

    /// A resolver answering `ip` for every name, counting the questions.
    fn answering(ip: &str, asked: Arc<AtomicUsize>) -> Resolver {
        let ip: IpAddr = ip.parse().unwrap();
        Resolver::from_fn(move |_: &str| {
            asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Ok(vec![ip])))
        })
    }

    async fn resolve(
        reach: Reach,
        resolver: Resolver,
        name: &str,
    ) -> Result<Vec<SocketAddr>, BoxError> {
        let mut guarded = GuardedResolver { reach, resolver };
        let name = Name::from_str(name).unwrap();
        guarded.call(name).await.map(Iterator::collect)
    }

    const GUARDED: Reach = Reach {
        allow_private: false,
        loopback_only: false,
    };

    /// The connector connects only to what this service answers, so a
    /// refusal here means no connection to the address is ever attempted.
    #[tokio::test]
    async fn a_refused_answer_never_reaches_the_connector() {
        for (ip, class) in [
            ("10.0.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::CloudMetadata),
        ] {
            let asked = Arc::new(AtomicUsize::new(0));
            let err = resolve(
                GUARDED,
                answering(ip, asked.clone()),
                "hooks.rebind.invalid",
            )
            .await
            .unwrap_err();
            assert_eq!(
                asked.load(Ordering::SeqCst),
                1,
                "the injected resolver is asked"
            );
            let refusal = err.downcast_ref::<SsrfError>().expect("an SSRF refusal");
            assert_eq!(
                refusal,
                &SsrfError::Forbidden {
                    host: "hooks.rebind.invalid".into(),
                    ip: ip.parse().unwrap(),
                    class,
                }
            );
        }
        // A public answer passes (never connected to here: no connector).
        let asked = Arc::new(AtomicUsize::new(0));
        let addrs = resolve(GUARDED, answering("1.2.3.4", asked), "hooks.rebind.invalid")
            .await
            .unwrap();
        assert_eq!(addrs, vec![SocketAddr::from(([1, 2, 3, 4], 0))]);
    }

    #[tokio::test]
    async fn loopback_only_never_asks_the_resolver() {
        let reach = Reach {
            allow_private: true,
            loopback_only: true,
        };
        let asked = Arc::new(AtomicUsize::new(0));
        let err = resolve(
            reach,
            answering("127.0.0.1", asked.clone()),
            "hooks.rebind.invalid",
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err.downcast_ref::<SsrfError>(),
            Some(SsrfError::NotLoopback { .. })
        ));
        let addrs = resolve(reach, answering("10.0.0.1", asked.clone()), "localhost")
            .await
            .unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 0);
    }
}
