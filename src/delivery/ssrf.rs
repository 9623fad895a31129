//! SSRF guard: keeps Krafter from being used as a proxy into private networks.
//!
//! Krafter accepts destination URLs from API users and then makes outbound HTTP
//! requests to them from inside the operator's network. Without a guard, anyone
//! allowed to create a destination could make Krafter reach the loopback
//! interface (the admin API, a local database), RFC 1918 networks, or the
//! cloud metadata service at 169.254.169.254 and read back the answers through
//! delivery logs.
//!
//! Unless `delivery.allow_private_networks` is true, callers use this module
//! twice:
//!
//! * at destination creation, [`check_url_host`] refuses (HTTP 422) a URL whose
//!   host is, or currently resolves to, a forbidden address;
//! * at delivery time, the connector resolves the host itself and passes the
//!   result to [`check_resolved`] before connecting, because DNS answers can
//!   change after creation (DNS rebinding).
//!
//! Both resolve names with the same [`Resolver`] (the system's in
//! production, injected answers in tests).
//!
//! The classification itself is [`forbidden_class`]; it works on single
//! addresses so that both checks agree exactly on what is forbidden.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

use super::resolve::Resolver;

/// Why an address is refused as a delivery destination.
///
/// The [`Display`](fmt::Display) text is a human phrase, including its
/// article, that is shown to API users inside [`SsrfError`] messages
/// (for example "a private (RFC 1918) address"), so that they can tell why
/// their destination was refused without knowing the range tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 0.0.0.0/8 ("this network") or `::`; connecting to these reaches the
    /// local host on common operating systems.
    Unspecified,
    /// 127.0.0.0/8 or `::1`: the Krafter host itself.
    Loopback,
    /// RFC 1918 private IPv4: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16.
    Private,
    /// Link-local: 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// A well-known cloud instance metadata endpoint (169.254.169.254,
    /// 169.254.170.2, 100.100.100.200, fd00:ec2::254). These also fall in a
    /// forbidden range; the separate class makes the refusal message explicit
    /// about the most dangerous SSRF target.
    CloudMetadata,
    /// 100.64.0.0/10, the RFC 6598 shared address space used by carrier-grade
    /// NAT and by many internal platform networks.
    SharedCgnat,
    /// 224.0.0.0/4 or ff00::/8: not a unicast destination.
    Multicast,
    /// 255.255.255.255, the limited broadcast address.
    Broadcast,
    /// 240.0.0.0/4 (former class E) and IPv6 space that is not globally
    /// routable unicast (anything outside 2000::/3 such as discard-only 100::/64
    /// or SRv6 SIDs 5f00::/16, and ORCHID 2001:10::/28 / 2001:20::/28).
    Reserved,
    /// 192.0.0.0/24, IETF protocol assignments (RFC 6890).
    IetfProtocol,
    /// Documentation ranges: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
    /// 2001:db8::/32 and 3fff::/20.
    Documentation,
    /// Benchmarking ranges: 198.18.0.0/15 and 2001:2::/48.
    Benchmarking,
    /// fc00::/7, IPv6 unique local addresses (the IPv6 analogue of RFC 1918).
    UniqueLocal,
    /// fec0::/10, deprecated IPv6 site-local addresses, still private in practice.
    SiteLocal,
    /// 64:ff9b:1::/48, local-use NAT64 (RFC 8215); it translates into whatever
    /// IPv4 space the local network chooses, typically private.
    LocalUseNat64,
    /// An IPv6 address that embeds an IPv4 address which is itself forbidden.
    /// Traffic to such an address ends up at (or is relayed via) the IPv4
    /// address, so it is classified by the embedded address.
    Embedded {
        /// How the IPv4 address is carried in the IPv6 address.
        form: Ipv4Embedding,
        /// The embedded IPv4 address.
        ipv4: Ipv4Addr,
        /// The class of the embedded address (never itself `Embedded`).
        class: Box<AddressClass>,
    },
}

impl AddressClass {
    /// The class that actually forbids the address: for [`AddressClass::Embedded`]
    /// the embedded IPv4 address's class, otherwise `self`. Useful to callers
    /// (and tests) that care about the kind of network, not the IPv6 wrapping.
    pub fn underlying(&self) -> &AddressClass {
        match self {
            AddressClass::Embedded { class, .. } => class.underlying(),
            other => other,
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phrase = match self {
            AddressClass::Unspecified => "an unspecified (\"this host\") address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::CloudMetadata => "a cloud instance metadata service address",
            AddressClass::SharedCgnat => "a shared carrier-grade NAT (RFC 6598) address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the limited broadcast address",
            AddressClass::Reserved => "a reserved, non-routable address",
            AddressClass::IetfProtocol => "an IETF protocol assignment (192.0.0.0/24) address",
            AddressClass::Documentation => "a documentation-only address",
            AddressClass::Benchmarking => "a benchmarking-only address",
            AddressClass::UniqueLocal => "a unique local (RFC 4193) IPv6 address",
            AddressClass::SiteLocal => "a site-local (deprecated) IPv6 address",
            AddressClass::LocalUseNat64 => "a local-use NAT64 (RFC 8215) address",
            AddressClass::Embedded { form, ipv4, class } => {
                return write!(f, "{}, {class}", form.describe(*ipv4));
            }
        };
        f.write_str(phrase)
    }
}

/// The ways an IPv6 address can carry an IPv4 address that traffic is
/// ultimately delivered to; used in [`AddressClass::Embedded`] so that the
/// refusal message can say which IPv4 address was found and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ipv4Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291); dual-stack sockets connect to `a.b.c.d`.
    Mapped,
    /// `::a.b.c.d` (deprecated IPv4-compatible form, RFC 4291).
    Compatible,
    /// `64:ff9b::a.b.c.d`, the well-known NAT64 prefix (RFC 6052).
    Nat64,
    /// `2002:AABB:CCDD::/48`, 6to4 (RFC 3056), gateway in bits 16..48.
    SixToFour,
    /// Teredo (RFC 4380) server address, bits 32..64 of `2001::/32`.
    TeredoServer,
    /// Teredo (RFC 4380) client address, the last 32 bits, bit-inverted.
    TeredoClient,
}

impl Ipv4Embedding {
    fn describe(self, ipv4: Ipv4Addr) -> String {
        match self {
            Ipv4Embedding::Mapped => format!("an IPv4-mapped IPv6 address for {ipv4}"),
            Ipv4Embedding::Compatible => format!("an IPv4-compatible IPv6 address for {ipv4}"),
            Ipv4Embedding::Nat64 => format!("a NAT64 (64:ff9b::/96) address for {ipv4}"),
            Ipv4Embedding::SixToFour => format!("a 6to4 (2002::/16) address for {ipv4}"),
            Ipv4Embedding::TeredoServer => {
                format!("a Teredo (2001::/32) address whose server is {ipv4}")
            }
            Ipv4Embedding::TeredoClient => {
                format!("a Teredo (2001::/32) address whose client is {ipv4}")
            }
        }
    }
}

/// Why a destination was refused.
///
/// The message is meant for API users (it becomes the 422 response detail at
/// creation time and the attempt error at delivery time), so it names the
/// host, the offending address and, in words, the reason.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SsrfError {
    /// The host is, or resolves to, an address in a forbidden class.
    #[error("{}", forbidden_message(.host, .ip, .class))]
    Forbidden {
        /// The host as written in the URL (IPv6 literals keep their brackets).
        host: String,
        /// The forbidden address the host is or resolved to.
        ip: IpAddr,
        /// Why `ip` is forbidden.
        class: AddressClass,
    },
    /// `delivery.loopback_only` is set and the host is not on loopback.
    #[error("destination host {host} is not on loopback, and delivery.loopback_only allows nothing else")]
    NotLoopback {
        /// The host as written in the URL.
        host: String,
    },
}

fn forbidden_message(host: &str, ip: &IpAddr, class: &AddressClass) -> String {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if literal.parse::<IpAddr>().ok() == Some(*ip) {
        format!("destination address {ip} is {class}")
    } else {
        format!("destination host {host} resolves to {ip}, {class}")
    }
}

/// Classifies one address: `None` when it is publicly routable and therefore
/// an acceptable delivery destination, otherwise the class that forbids it.
///
/// This is the single source of truth for both the creation-time and the
/// delivery-time checks. IPv6 forms that carry an IPv4 address (mapped,
/// compatible, NAT64, 6to4, Teredo) are judged by the embedded address, since
/// that is where the traffic ends up; IPv6 outside 2000::/3 is never globally
/// routable and is refused as reserved.
pub fn forbidden_class(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Checks a destination URL's host when the destination is created.
///
/// An IP-literal host is classified directly. A name is resolved with
/// `resolver`, bounded by `resolve_timeout`, and refused if
/// any resolved address is forbidden (see [`check_resolved`]). Per the spec a
/// name that does not resolve, or whose resolution times out, is accepted:
/// the destination may legitimately not exist yet, and the delivery-time check
/// still guards every actual connection. Names under `localhost` are refused
/// without a lookup, as RFC 6761 prescribes their answer (and the system
/// resolver answers names under `invalid` "not found" without asking DNS).
/// A URL without a host is accepted here; requiring
/// an `http(s)` URL is the caller's job.
///
/// Callers skip this check entirely when `delivery.allow_private_networks` is
/// true. The timeout bounds only the wait: the system resolver runs on a
/// blocking thread that cannot be cancelled and finishes in the background.
/// An answer is judged as it is now; the delivery-time guard judges the
/// answer of the moment again before every connection.
///
/// With `resolve_names` false (`delivery.loopback_only`) no name is looked
/// up at all: it is accepted as if it did not resolve, and the delivery-time
/// guard refuses it.
pub async fn check_url_host(
    url: &Url,
    resolver: &Resolver,
    resolve_timeout: Duration,
    resolve_names: bool,
) -> Result<(), SsrfError> {
    let name = match url.host() {
        None => return Ok(()),
        Some(Host::Ipv4(v4)) => return check_ip(&url_host_string(url), IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => return check_ip(&url_host_string(url), IpAddr::V6(v6)),
        Some(Host::Domain(name)) => name,
    };
    // Non-special schemes keep IP literals as opaque "domains".
    if let Ok(ip) = name.parse::<IpAddr>() {
        return check_ip(name, ip);
    }
    match special_use_name(name) {
        Some(SpecialUseName::Localhost) => {
            return check_ip(name, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        _ if !resolve_names => return Ok(()),
        _ => {}
    }
    match bounded_lookup(resolver.lookup(name), resolve_timeout).await {
        Some(addrs) => addrs.into_iter().try_for_each(|ip| check_ip(name, ip)),
        None => Ok(()),
    }
}

/// Checks the addresses a host resolved to, for the delivery-time connector.
///
/// Refuses if *any* address is forbidden rather than connecting to a public
/// one among them: a name that resolves to both public and private addresses
/// is the signature of a DNS-rebinding attempt, and refusing outright keeps
/// the decision independent of which address the connector would try first.
/// An empty list is accepted here (nothing forbidden); the connector fails on
/// its own when it has nothing to connect to. Ports are ignored.
pub fn check_resolved(host: &str, addrs: &[SocketAddr]) -> Result<(), SsrfError> {
    addrs.iter().try_for_each(|addr| check_ip(host, addr.ip()))
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), SsrfError> {
    match forbidden_class(ip) {
        None => Ok(()),
        Some(class) => Err(SsrfError::Forbidden {
            host: host.to_owned(),
            ip,
            class,
        }),
    }
}

/// The URL's host as written, with brackets for IPv6 (`url.host_str()` form).
fn url_host_string(url: &Url) -> String {
    match url.host() {
        Some(host) => host.to_string(),
        None => String::new(),
    }
}

/// Whether `name` is `localhost` or a name below it (RFC 6761: always
/// loopback, never looked up).
pub fn is_localhost_name(name: &str) -> bool {
    matches!(special_use_name(name), Some(SpecialUseName::Localhost))
}

/// Whether `name` is `invalid` or a name below it (RFC 6761: never
/// resolves; the system [`Resolver`] answers "not found" without DNS).
pub fn is_invalid_name(name: &str) -> bool {
    matches!(special_use_name(name), Some(SpecialUseName::Invalid))
}

enum SpecialUseName {
    Localhost,
    Invalid,
}

/// RFC 6761 names whose resolution must not depend on DNS: `localhost` (and
/// below) always means loopback, `invalid` (and below) never resolves.
fn special_use_name(name: &str) -> Option<SpecialUseName> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let under = |tld: &str| name == tld || name.ends_with(&format!(".{tld}"));
    if under("localhost") {
        Some(SpecialUseName::Localhost)
    } else if under("invalid") {
        Some(SpecialUseName::Invalid)
    } else {
        None
    }
}

/// Awaits a lookup for at most `timeout`, collapsing errors and timeouts to
/// `None` (a name that does not resolve is accepted at creation).
async fn bounded_lookup<F>(lookup: F, timeout: Duration) -> Option<Vec<IpAddr>>
where
    F: Future<Output = io::Result<Vec<IpAddr>>>,
{
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => Some(addrs),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Well-known cloud metadata endpoints, refused with a dedicated message.
const CLOUD_METADATA_V4: [Ipv4Addr; 3] = [
    // AWS, GCP, Azure, OCI, DigitalOcean, ... instance metadata.
    Ipv4Addr::new(169, 254, 169, 254),
    // AWS ECS task metadata / credentials endpoint.
    Ipv4Addr::new(169, 254, 170, 2),
    // Alibaba Cloud instance metadata.
    Ipv4Addr::new(100, 100, 100, 200),
];

/// AWS IMDS over IPv6.
const CLOUD_METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// Forbidden IPv4 ranges as (network, prefix length, class); first match wins.
const V4_RANGES: &[([u8; 4], u32, AddressClass)] = &[
    ([0, 0, 0, 0], 8, AddressClass::Unspecified),
    ([127, 0, 0, 0], 8, AddressClass::Loopback),
    ([10, 0, 0, 0], 8, AddressClass::Private),
    ([172, 16, 0, 0], 12, AddressClass::Private),
    ([192, 168, 0, 0], 16, AddressClass::Private),
    ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
    ([100, 64, 0, 0], 10, AddressClass::SharedCgnat),
    ([192, 0, 0, 0], 24, AddressClass::IetfProtocol),
    ([192, 0, 2, 0], 24, AddressClass::Documentation),
    ([198, 51, 100, 0], 24, AddressClass::Documentation),
    ([203, 0, 113, 0], 24, AddressClass::Documentation),
    ([198, 18, 0, 0], 15, AddressClass::Benchmarking),
    ([224, 0, 0, 0], 4, AddressClass::Multicast),
    ([255, 255, 255, 255], 32, AddressClass::Broadcast),
    ([240, 0, 0, 0], 4, AddressClass::Reserved),
];

/// Forbidden IPv6 ranges checked after the special and embedded forms, as
/// (network, prefix length, class); first match wins. Anything else outside
/// 2000::/3 is refused as reserved afterwards.
const V6_RANGES: &[(u128, u32, AddressClass)] = &[
    (0x0064_ff9b_0001 << 80, 48, AddressClass::LocalUseNat64),
    (0x2001_0db8 << 96, 32, AddressClass::Documentation),
    (0x3fff << 112, 20, AddressClass::Documentation),
    (0x2001_0002_0000 << 80, 48, AddressClass::Benchmarking),
    // ORCHID (deprecated) and ORCHIDv2: identifiers, not routable.
    (0x2001_0010 << 96, 28, AddressClass::Reserved),
    (0x2001_0020 << 96, 28, AddressClass::Reserved),
    (0xfc00 << 112, 7, AddressClass::UniqueLocal),
    (0xfe80 << 112, 10, AddressClass::LinkLocal),
    (0xfec0 << 112, 10, AddressClass::SiteLocal),
    (0xff00 << 112, 8, AddressClass::Multicast),
];

fn prefix_matches_u32(addr: u32, net: u32, len: u32) -> bool {
    len == 0 || (addr >> (32 - len)) == (net >> (32 - len))
}

fn prefix_matches_u128(addr: u128, net: u128, len: u32) -> bool {
    len == 0 || (addr >> (128 - len)) == (net >> (128 - len))
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    if CLOUD_METADATA_V4.contains(&ip) {
        return Some(AddressClass::CloudMetadata);
    }
    let addr = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(net, len, _)| prefix_matches_u32(addr, u32::from_be_bytes(*net), *len))
        .map(|(_, _, class)| class.clone())
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let embedded = embedded_ipv4(ip);
    if !embedded.is_empty() {
        return embedded.into_iter().find_map(|(form, ipv4)| {
            classify_v4(ipv4).map(|class| AddressClass::Embedded {
                form,
                ipv4,
                class: Box::new(class),
            })
        });
    }
    if CLOUD_METADATA_V6.contains(&ip) {
        return Some(AddressClass::CloudMetadata);
    }
    let addr = u128::from(ip);
    if let Some((_, _, class)) = V6_RANGES
        .iter()
        .find(|(net, len, _)| prefix_matches_u128(addr, *net, *len))
    {
        return Some(class.clone());
    }
    // Only 2000::/3 is allocated as global unicast.
    if !prefix_matches_u128(addr, 0x2000 << 112, 3) {
        return Some(AddressClass::Reserved);
    }
    None
}

/// The IPv4 addresses an IPv6 address delivers to, if it is one of the
/// embedding forms; Teredo yields both client and server (client first).
/// Call only after `::` and `::1` are handled, as they fit the compatible form.
fn embedded_ipv4(ip: Ipv6Addr) -> Vec<(Ipv4Embedding, Ipv4Addr)> {
    let addr = u128::from(ip);
    let low32 = Ipv4Addr::from(addr as u32);
    if prefix_matches_u128(addr, 0xffff << 32, 96) {
        vec![(Ipv4Embedding::Mapped, low32)]
    } else if prefix_matches_u128(addr, 0, 96) {
        vec![(Ipv4Embedding::Compatible, low32)]
    } else if prefix_matches_u128(addr, 0x0064_ff9b << 96, 96) {
        vec![(Ipv4Embedding::Nat64, low32)]
    } else if prefix_matches_u128(addr, 0x2002 << 112, 16) {
        vec![(
            Ipv4Embedding::SixToFour,
            Ipv4Addr::from((addr >> 80) as u32),
        )]
    } else if prefix_matches_u128(addr, 0x2001 << 112, 32) {
        vec![
            (Ipv4Embedding::TeredoClient, Ipv4Addr::from(!(addr as u32))),
            (
                Ipv4Embedding::TeredoServer,
                Ipv4Addr::from((addr >> 64) as u32),
            ),
        ]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    fn underlying(s: &str) -> Option<AddressClass> {
        forbidden_class(ip(s)).map(|c| c.underlying().clone())
    }

    #[track_caller]
    fn assert_class(class: AddressClass, addrs: &[&str]) {
        for a in addrs {
            assert_eq!(
                forbidden_class(ip(a)),
                Some(class.clone()),
                "{a} should be {class:?}"
            );
        }
    }

    #[track_caller]
    fn assert_allowed(addrs: &[&str]) {
        for a in addrs {
            assert_eq!(forbidden_class(ip(a)), None, "{a} should be allowed");
        }
    }

    #[track_caller]
    fn assert_refused(addrs: &[&str]) {
        for a in addrs {
            assert!(forbidden_class(ip(a)).is_some(), "{a} should be refused");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL parses")
    }

    const SHORT: Duration = Duration::from_millis(500);

    fn system() -> Resolver {
        Resolver::system()
    }

    /// Answers every name with `addrs`.
    fn answering(addrs: &[&str]) -> Resolver {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        Resolver::from_fn(move |_: &str| Box::pin(std::future::ready(Ok(addrs.clone()))))
    }

    #[test]
    fn unspecified() {
        assert_class(
            AddressClass::Unspecified,
            &["0.0.0.0", "0.0.0.1", "0.255.255.255", "::"],
        );
    }

    #[test]
    fn loopback() {
        assert_class(
            AddressClass::Loopback,
            &[
                "127.0.0.1",
                "127.0.0.0",
                "127.255.255.255",
                "127.1.2.3",
                "::1",
            ],
        );
    }

    #[test]
    fn private_rfc1918() {
        assert_class(
            AddressClass::Private,
            &[
                "10.0.0.0",
                "10.255.255.255",
                "172.16.0.0",
                "172.31.255.255",
                "192.168.0.0",
                "192.168.1.1",
                "192.168.255.255",
            ],
        );
    }

    #[test]
    fn link_local() {
        assert_class(
            AddressClass::LinkLocal,
            &[
                "169.254.0.0",
                "169.254.1.1",
                "169.254.255.255",
                "fe80::1",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        );
    }

    #[test]
    fn cloud_metadata() {
        assert_class(
            AddressClass::CloudMetadata,
            &[
                "169.254.169.254",
                "169.254.170.2",
                "100.100.100.200",
                "fd00:ec2::254",
            ],
        );
        // Neighbours are still refused by their range.
        assert_eq!(underlying("169.254.169.253"), Some(AddressClass::LinkLocal));
        assert_eq!(underlying("fd00:ec2::253"), Some(AddressClass::UniqueLocal));
        // And the mapped form of the metadata address too.
        assert_eq!(
            underlying("::ffff:169.254.169.254"),
            Some(AddressClass::CloudMetadata)
        );
    }

    #[test]
    fn shared_cgnat() {
        assert_class(
            AddressClass::SharedCgnat,
            &["100.64.0.0", "100.100.0.1", "100.127.255.255"],
        );
    }

    #[test]
    fn multicast() {
        assert_class(
            AddressClass::Multicast,
            &[
                "224.0.0.0",
                "224.0.0.251",
                "239.255.255.255",
                "ff02::1",
                "ff0e::1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        );
    }

    #[test]
    fn broadcast() {
        assert_class(AddressClass::Broadcast, &["255.255.255.255"]);
        assert_eq!(
            underlying("::ffff:255.255.255.255"),
            Some(AddressClass::Broadcast)
        );
    }

    #[test]
    fn reserved() {
        assert_class(
            AddressClass::Reserved,
            &[
                "240.0.0.0",
                "250.1.2.3",
                "255.255.255.254",
                // IPv6 outside 2000::/3 and not otherwise classified.
                "100::1",
                "1000::1",
                "4000::1",
                "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                // ORCHID / ORCHIDv2; SRv6 SIDs (RFC 9602, outside 2000::/3).
                "2001:10::1",
                "2001:2f:ffff::1",
                "5f00::1",
            ],
        );
    }

    #[test]
    fn ietf_protocol_assignments() {
        assert_class(
            AddressClass::IetfProtocol,
            &["192.0.0.0", "192.0.0.8", "192.0.0.255"],
        );
    }

    #[test]
    fn documentation() {
        assert_class(
            AddressClass::Documentation,
            &[
                "192.0.2.0",
                "192.0.2.255",
                "198.51.100.0",
                "198.51.100.255",
                "203.0.113.0",
                "203.0.113.255",
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                "3fff::1",
                "3fff:fff:ffff::1",
            ],
        );
    }

    #[test]
    fn benchmarking() {
        assert_class(
            AddressClass::Benchmarking,
            &[
                "198.18.0.0",
                "198.19.255.255",
                "2001:2::1",
                "2001:2:0:ffff::1",
            ],
        );
    }

    #[test]
    fn unique_local() {
        assert_class(
            AddressClass::UniqueLocal,
            &[
                "fc00::",
                "fd12:3456:789a::1",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        );
    }

    #[test]
    fn site_local() {
        assert_class(
            AddressClass::SiteLocal,
            &["fec0::1", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
        );
    }

    #[test]
    fn local_use_nat64() {
        assert_class(
            AddressClass::LocalUseNat64,
            &["64:ff9b:1::1", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"],
        );
    }

    #[test]
    fn public_addresses_are_allowed() {
        assert_allowed(&[
            "8.8.8.8",
            "1.1.1.1",
            "9.9.9.9",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:80b::200e",
        ]);
    }

    #[test]
    fn ipv4_range_edges() {
        assert_allowed(&[
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "192.0.3.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ]);
        assert_refused(&[
            "172.16.0.0",
            "172.31.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "224.0.0.0",
            "239.255.255.255",
            "240.0.0.0",
        ]);
    }

    #[test]
    fn ipv6_range_edges() {
        assert_allowed(&[
            "2000::",
            "3ffe:ffff::1",
            "3fff:1000::",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "2001:1::1",
            "2001:3::1",
            "2001:30::1",
            "2001:2:1::1",
        ]);
        assert_refused(&[
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "4000::",
            "2001:db8::1",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fc00::",
            "fdff::1",
            "fe80::",
            "fec0::",
            "ff00::",
        ]);
    }

    #[test]
    fn ipv4_mapped() {
        assert_eq!(
            forbidden_class(ip("::ffff:127.0.0.1")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::Mapped,
                ipv4: Ipv4Addr::new(127, 0, 0, 1),
                class: Box::new(AddressClass::Loopback),
            })
        );
        assert_eq!(underlying("::ffff:10.1.2.3"), Some(AddressClass::Private));
        assert_eq!(
            underlying("::ffff:0.0.0.0"),
            Some(AddressClass::Unspecified)
        );
        assert_eq!(
            underlying("::ffff:100.64.0.1"),
            Some(AddressClass::SharedCgnat)
        );
        assert_allowed(&["::ffff:8.8.8.8", "::ffff:1.1.1.1"]);
    }

    #[test]
    fn ipv4_compatible() {
        assert_eq!(
            forbidden_class(ip("::127.0.0.1")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::Compatible,
                ipv4: Ipv4Addr::new(127, 0, 0, 1),
                class: Box::new(AddressClass::Loopback),
            })
        );
        assert_eq!(underlying("::10.0.0.1"), Some(AddressClass::Private));
        assert_eq!(underlying("::192.168.0.1"), Some(AddressClass::Private));
        // `::2` is 0.0.0.2 in the compatible form.
        assert_eq!(underlying("::2"), Some(AddressClass::Unspecified));
        assert_allowed(&["::8.8.8.8"]);
    }

    #[test]
    fn nat64_well_known_prefix() {
        assert_eq!(
            forbidden_class(ip("64:ff9b::10.0.0.1")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::Nat64,
                ipv4: Ipv4Addr::new(10, 0, 0, 1),
                class: Box::new(AddressClass::Private),
            })
        );
        assert_eq!(
            underlying("64:ff9b::a9fe:a9fe"),
            Some(AddressClass::CloudMetadata)
        );
        assert_allowed(&["64:ff9b::8.8.8.8", "64:ff9b::101:101"]);
    }

    #[test]
    fn six_to_four() {
        // 2002:c0a8:0101::/48 is the 6to4 prefix of 192.168.1.1.
        assert_eq!(
            forbidden_class(ip("2002:c0a8:101::1")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::SixToFour,
                ipv4: Ipv4Addr::new(192, 168, 1, 1),
                class: Box::new(AddressClass::Private),
            })
        );
        assert_eq!(underlying("2002:7f00:1::"), Some(AddressClass::Loopback));
        assert_allowed(&["2002:808:808::1", "2002:101:101:1::1"]);
    }

    #[test]
    fn teredo() {
        // RFC 4380 example: server 65.54.227.120, client 192.0.2.45.
        assert_eq!(
            forbidden_class(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::TeredoClient,
                ipv4: Ipv4Addr::new(192, 0, 2, 45),
                class: Box::new(AddressClass::Documentation),
            })
        );
        // Server 8.8.8.8, client 10.0.0.1 (obfuscated as f5ff:fffe).
        assert_eq!(
            underlying("2001:0:808:808::f5ff:fffe"),
            Some(AddressClass::Private)
        );
        // Server 10.0.0.1, client 1.1.1.1.
        assert_eq!(
            forbidden_class(ip("2001:0:a00:1::fefe:fefe")),
            Some(AddressClass::Embedded {
                form: Ipv4Embedding::TeredoServer,
                ipv4: Ipv4Addr::new(10, 0, 0, 1),
                class: Box::new(AddressClass::Private),
            })
        );
        // Server 8.8.8.8, client 1.1.1.1.
        assert_allowed(&["2001:0:808:808::fefe:fefe"]);
    }

    #[test]
    fn class_display_is_a_human_phrase() {
        assert_eq!(
            AddressClass::Private.to_string(),
            "a private (RFC 1918) address"
        );
        assert_eq!(
            forbidden_class(ip("::ffff:10.0.0.1"))
                .map(|c| c.to_string())
                .as_deref(),
            Some("an IPv4-mapped IPv6 address for 10.0.0.1, a private (RFC 1918) address")
        );
    }

    #[test]
    fn error_messages() {
        let err =
            check_resolved("internal.example", &["10.0.0.1:443".parse().unwrap()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination host internal.example resolves to 10.0.0.1, a private (RFC 1918) address"
        );
        let err = check_ip("[::1]", ip("::1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination address ::1 is a loopback address"
        );
        let err = check_ip("169.254.169.254", ip("169.254.169.254")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination address 169.254.169.254 is a cloud instance metadata service address"
        );
    }

    #[test]
    fn check_resolved_refuses_any_forbidden_address() {
        let public: SocketAddr = "93.184.215.14:443".parse().unwrap();
        let public6: SocketAddr = "[2606:4700:4700::1111]:443".parse().unwrap();
        let private: SocketAddr = "192.168.0.10:443".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:443".parse().unwrap();

        assert_eq!(check_resolved("ok.example", &[]), Ok(()));
        assert_eq!(check_resolved("ok.example", &[public, public6]), Ok(()));
        // Rebinding-style mixed answer: refused, naming the private address.
        let err = check_resolved("rebind.example", &[public, private]).unwrap_err();
        assert_eq!(
            err,
            SsrfError::Forbidden {
                host: "rebind.example".into(),
                ip: private.ip(),
                class: AddressClass::Private,
            }
        );
        let err = check_resolved("mapped.example", &[mapped]).unwrap_err();
        let SsrfError::Forbidden { class, .. } = err else {
            panic!("expected Forbidden");
        };
        assert_eq!(class.underlying(), &AddressClass::Loopback);
    }

    #[tokio::test]
    async fn check_url_host_ip_literals() {
        for (u, host, addr, class) in [
            (
                "http://10.0.0.1/hook",
                "10.0.0.1",
                "10.0.0.1",
                AddressClass::Private,
            ),
            (
                "https://127.0.0.1:8443/",
                "127.0.0.1",
                "127.0.0.1",
                AddressClass::Loopback,
            ),
            ("http://[::1]:8080/", "[::1]", "::1", AddressClass::Loopback),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
                "169.254.169.254",
                AddressClass::CloudMetadata,
            ),
            (
                "http://[fd00::1]/",
                "[fd00::1]",
                "fd00::1",
                AddressClass::UniqueLocal,
            ),
            // The url crate normalises hex / short / decimal IPv4 forms.
            (
                "http://0x7f.1/",
                "127.0.0.1",
                "127.0.0.1",
                AddressClass::Loopback,
            ),
            (
                "http://2130706433/",
                "127.0.0.1",
                "127.0.0.1",
                AddressClass::Loopback,
            ),
            ("http://0/", "0.0.0.0", "0.0.0.0", AddressClass::Unspecified),
            // Non-special schemes keep IP literals as opaque names.
            (
                "foo://192.168.1.1/",
                "192.168.1.1",
                "192.168.1.1",
                AddressClass::Private,
            ),
        ] {
            let err = check_url_host(&url(u), &system(), SHORT, true)
                .await
                .unwrap_err();
            assert_eq!(
                err,
                SsrfError::Forbidden {
                    host: host.into(),
                    ip: ip(addr),
                    class,
                },
                "{u}"
            );
        }

        let err = check_url_host(&url("http://[::ffff:192.168.0.1]/"), &system(), SHORT, true)
            .await
            .unwrap_err();
        let SsrfError::Forbidden { host, class, .. } = err else {
            panic!("expected Forbidden");
        };
        assert_eq!(host, "[::ffff:c0a8:1]");
        assert_eq!(class.underlying(), &AddressClass::Private);

        for u in [
            "http://8.8.8.8/",
            "https://1.1.1.1:8443/hook",
            "https://[2606:4700:4700::1111]/",
            "http://172.32.0.0/",
        ] {
            assert_eq!(
                check_url_host(&url(u), &system(), SHORT, true).await,
                Ok(()),
                "{u}"
            );
        }
    }

    #[tokio::test]
    async fn check_url_host_localhost_is_refused() {
        for u in [
            "http://localhost/",
            "http://localhost:8080/hook",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            let err = check_url_host(&url(u), &system(), SHORT, true)
                .await
                .unwrap_err();
            let SsrfError::Forbidden { ip, class, .. } = err else {
                panic!("expected Forbidden");
            };
            assert!(ip.is_loopback(), "{u}");
            assert_eq!(class, AddressClass::Loopback, "{u}");
        }
    }

    #[tokio::test]
    async fn check_url_host_unresolvable_name_is_accepted() {
        assert_eq!(
            check_url_host(
                &url("https://does-not-exist.invalid/hook"),
                &system(),
                SHORT,
                true
            )
            .await,
            Ok(())
        );
        assert_eq!(
            check_url_host(
                &url("http://x.does-not-exist.INVALID./"),
                &system(),
                SHORT,
                true
            )
            .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn check_url_host_judges_what_the_resolver_answers() {
        // Names under .invalid reach the resolver too (only the system one
        // refuses to look them up), so injected answers are judged.
        let u = url("https://hooks.rebind.invalid/x");
        let err = check_url_host(&u, &answering(&["1.2.3.4", "169.254.169.254"]), SHORT, true)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SsrfError::Forbidden {
                host: "hooks.rebind.invalid".into(),
                ip: ip("169.254.169.254"),
                class: AddressClass::CloudMetadata,
            }
        );
        assert_eq!(
            check_url_host(&u, &answering(&["1.2.3.4"]), SHORT, true).await,
            Ok(())
        );
        // Without name resolution (loopback_only) the resolver is not asked.
        assert_eq!(
            check_url_host(&u, &answering(&["10.0.0.1"]), SHORT, false).await,
            Ok(())
        );
        // localhost is loopback whatever a resolver would say.
        let err = check_url_host(
            &url("http://localhost/"),
            &answering(&["1.2.3.4"]),
            SHORT,
            true,
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            SsrfError::Forbidden {
                class: AddressClass::Loopback,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn check_url_host_without_host_is_accepted() {
        assert_eq!(
            check_url_host(&url("mailto:a@b.example"), &system(), SHORT, true).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn resolving_localhost_yields_refused_loopback() {
        // Resolved from /etc/hosts by the system resolver; no network traffic.
        let addrs: Vec<SocketAddr> = system()
            .lookup("localhost")
            .await
            .expect("localhost resolves")
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 80))
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let err = check_resolved("localhost", &addrs).unwrap_err();
        let SsrfError::Forbidden { class, .. } = err else {
            panic!("expected Forbidden");
        };
        assert_eq!(class, AddressClass::Loopback);
    }

    #[tokio::test]
    async fn bounded_lookup_maps_timeout_and_error_to_none() {
        let never = std::future::pending::<io::Result<Vec<IpAddr>>>();
        assert_eq!(bounded_lookup(never, Duration::from_millis(20)).await, None);

        let failed = std::future::ready(Err::<Vec<IpAddr>, _>(io::Error::new(
            io::ErrorKind::NotFound,
            "no such host",
        )));
        assert_eq!(bounded_lookup(failed, SHORT).await, None);

        let addr = ip("10.0.0.1");
        let found = std::future::ready(Ok::<_, io::Error>(vec![addr]));
        assert_eq!(bounded_lookup(found, SHORT).await, Some(vec![addr]));
    }

    #[test]
    fn special_use_names() {
        assert!(matches!(
            special_use_name("localhost"),
            Some(SpecialUseName::Localhost)
        ));
        assert!(matches!(
            special_use_name("a.b.LocalHost."),
            Some(SpecialUseName::Localhost)
        ));
        assert!(matches!(
            special_use_name("foo.invalid"),
            Some(SpecialUseName::Invalid)
        ));
        assert!(special_use_name("notlocalhost").is_none());
        assert!(special_use_name("localhost.example").is_none());
        assert!(special_use_name("invalid.example").is_none());
    }
}
