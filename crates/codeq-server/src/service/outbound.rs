//! Outbound HTTP: the webhook requests codeQ sends (result callbacks and
//! worker notifications), signed, bounded and kept away from private
//! networks.
//!
//! - Every request carries `X-CodeQ-Timestamp` (unix seconds),
//!   `X-CodeQ-Event`, `X-CodeQ-Delivery` and, when a secret is set,
//!   `X-CodeQ-Signature`: the lowercase hex HMAC-SHA256 of
//!   `"<timestamp>.<body>"`.
//! - `webhookTimeoutSeconds` bounds each attempt; redirects are never
//!   followed; response bodies are never read; proxies named in the
//!   environment are ignored (a proxy would resolve names past the guard).
//! - A failure's message names the target's host and port, never its
//!   path or query, which often hold a secret (the message is logged).
//! - The private-network guard (on unless `webhookAllowPrivateNetworks`)
//!   refuses loopback, private, link-local, unique-local, shared, multicast
//!   and unspecified addresses. A literal address is refused outright (and
//!   at registration); a host name is resolved by the guard itself, which
//!   drops private addresses before the client connects, so the address
//!   checked is the address connected to (DNS rebinding gains nothing).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

use crate::config::Secret;

/// Why a webhook request was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The target is refused by the private-network guard or is not a
    /// valid http(s) URL.
    #[error("refused target: {0}")]
    Refused(String),
    /// The request failed (connection, timeout) or answered non-2xx.
    #[error("{0}")]
    Failed(String),
}

/// The webhook client. Cheap to share behind an `Arc`.
pub struct Outbound {
    client: reqwest::Client,
    secret: Option<Secret>,
    allow_private: bool,
}

/// One webhook request.
pub struct Request<'a> {
    /// Where to.
    pub url: &'a str,
    /// `X-CodeQ-Event`.
    pub event: &'a str,
    /// `X-CodeQ-Delivery`.
    pub delivery: &'a str,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Unix seconds, for `X-CodeQ-Timestamp` and the signature.
    pub timestamp: i64,
}

impl Outbound {
    /// A client with the given per-attempt timeout, signing with `secret`.
    pub fn new(
        timeout: Duration,
        secret: Option<Secret>,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("codeq/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self { client: builder.build()?, secret, allow_private })
    }

    /// Checks a URL as a webhook target: an absolute http(s) URL whose
    /// host, when it is a literal address, passes the guard.
    pub fn check_target(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|error| format!("is not a URL ({error})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("must be an http(s) URL".into());
        }
        let host = parsed.host_str().filter(|host| !host.is_empty()).ok_or("has no host")?;
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        match literal {
            Some(ip) if !self.allow_private && is_private(ip) => Err(format!(
                "points at the private address {ip} (set webhookAllowPrivateNetworks to allow it)"
            )),
            _ => Ok(()),
        }
    }

    /// Sends one request; `Ok` on a 2xx answer.
    pub async fn send(&self, request: Request<'_>) -> Result<(), SendError> {
        self.check_target(request.url).map_err(SendError::Refused)?;
        let mut builder = self
            .client
            .post(request.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-CodeQ-Timestamp", request.timestamp.to_string())
            .header("X-CodeQ-Event", request.event)
            .header("X-CodeQ-Delivery", request.delivery);
        if let Some(secret) = &self.secret {
            builder = builder.header(
                "X-CodeQ-Signature",
                sign(secret.expose(), request.timestamp, &request.body),
            );
        }
        let response = builder
            .body(request.body)
            .send()
            .await
            .map_err(|error| SendError::Failed(failure_of(error)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::Failed(format!("answered {status}")))
        }
    }
}

/// A failed request's message with its causes. It names the target's host
/// and port, never its path or query: those often carry a secret (chat
/// services' incoming-webhook URLs, `?token=` receivers), and the message
/// goes to the logs.
fn failure_of(error: reqwest::Error) -> String {
    let target = error
        .url()
        .and_then(|url| Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?)));
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    match target {
        Some(target) => format!("{target}: {message}"),
        None => message,
    }
}

/// The signature of a webhook: lowercase hex HMAC-SHA256 of
/// `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// True for an address a webhook must not reach unless private networks
/// are allowed: loopback, private, link-local (cloud metadata included),
/// shared (CGNAT), unique-local and site-local, the IETF's protocol
/// assignments, reserved and discard-only ranges, multicast, broadcast
/// and unspecified; an IPv6 address that carries an IPv4 one is judged by
/// that IPv4 address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_private_v4(ip),
        IpAddr::V6(ip) => embedded_v4(ip).map_or_else(|| is_private_v6(ip), is_private_v4),
    }
}

/// The IPv4 address an IPv6 address reaches through: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64's well-known prefix
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`). Teredo
/// (`2001::/32`) is not decoded: its client address is not one the server
/// could reach through it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    let last = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        [0x2002, ..] => Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])),
        _ => None,
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240 // reserved (240.0.0.0/4), broadcast included
        || (a == 100 && (64..128).contains(&b))
        || (a, b, ip.octets()[2]) == (192, 0, 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let [first, second, third, ..] = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Site-local (deprecated, still routed inside some networks).
        || (first & 0xffc0) == 0xfec0
        // Discard-only (RFC 6666).
        || (first, second, third, ip.segments()[3]) == (0x100, 0, 0, 0)
        // NAT64 for local use (RFC 8215): it reaches the local network.
        || (first, second, third) == (0x64, 0xff9b, 1)
}

/// The guard's resolver: the system's, without private addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                resolved.into_iter().filter(|address| !is_private(address.ip())).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to private addresses").into();
                return Err(refused);
            }
            let addresses: Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

/// `url` after its `http://` or `https://`, in any case (a URL's scheme is
/// case-insensitive: `HTTPS://` is `https://`); `None` for other schemes.
pub fn after_http_scheme(url: &str) -> Option<&str> {
    ["https://", "http://"].into_iter().find_map(|scheme| {
        let head = url.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then(|| &url[scheme.len()..])
    })
}

/// `url` with its userinfo (`user:password@`), if any, shown as `***@`:
/// a task is readable by every token, and the credentials of its webhook
/// are its producer's (they are sent as Basic auth, never shown). Read by
/// the parser the sender uses (`\\` is `/` in an http URL, say), and
/// shown as it normalises the URL when it has credentials to hide.
pub fn hide_credentials(url: &str) -> Cow<'_, str> {
    let Ok(mut parsed) = reqwest::Url::parse(url) else { return Cow::Borrowed("…") };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return Cow::Borrowed(url);
    }
    // Both succeed for an http(s) URL with a host, which a webhook is.
    let hidden = parsed.set_password(None).and_then(|()| parsed.set_username("***"));
    match hidden {
        Ok(()) => Cow::Owned(parsed.into()),
        Err(()) => Cow::Borrowed("…"),
    }
}

/// `url` as `scheme://host[:port]`, then `/…` when anything followed: what
/// a caller other than its owner may see of a webhook.
pub fn origin_only(url: &str) -> Cow<'_, str> {
    let Ok(parsed) = reqwest::Url::parse(url) else { return Cow::Borrowed("…") };
    let origin = parsed.origin().ascii_serialization();
    let bare = parsed.path() == "/" && parsed.query().is_none() && parsed.fragment().is_none();
    Cow::Owned(if bare { origin } else { format!("{origin}/…") })
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = after_http_scheme(url).ok_or("must be an http(s) URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err("must be an absolute http(s) URL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_keeps_scheme_host_and_port_only() {
        for (url, shown) in [
            ("https://hooks.example.com/services/T0/B0/s3cret", "https://hooks.example.com/…"),
            ("https://u:p@example.com:8443/?token=s3cret", "https://example.com:8443/…"),
            ("http://example.com/", "http://example.com"),
            ("http://example.com", "http://example.com"),
            ("http://example.com#x", "http://example.com/…"),
            ("http://127.0.0.1:9\\services\\s3cret", "http://127.0.0.1:9/…"),
            ("https://example.com:443/x", "https://example.com/…"),
        ] {
            assert_eq!(origin_only(url), shown, "{url}");
        }
    }

    #[test]
    fn credentials_are_hidden_and_nothing_else_changes() {
        for (url, shown) in [
            ("https://user:secret@example.com/hook?x=1", "https://***@example.com/hook?x=1"),
            ("http://token@example.com", "http://***@example.com/"),
            ("https://a:b@c@example.com:8443/", "https://***@example.com:8443/"),
            ("https://example.com/a@b?c=d@e#f@g", "https://example.com/a@b?c=d@e#f@g"),
            ("https://example.com", "https://example.com"),
            ("http://u:p@127.0.0.1:9\\x@y/p", "http://***@127.0.0.1:9/x@y/p"),
        ] {
            assert_eq!(hide_credentials(url), shown, "{url}");
        }
    }

    #[test]
    fn webhook_urls_must_be_absolute_http() {
        let upper = "HTTP://EXAMPLE.com/x";
        for good in ["http://a", "https://example.com/hook?x=1", "http://127.0.0.1:9000/cb", upper]
        {
            assert!(check_http_url(good).is_ok(), "{good}");
        }
        for bad in
            ["", "ftp://a", "https://", "example.com", "http:///path", "http://a b", "http:/a"]
        {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "240.0.0.1",
            "255.255.255.254",
            "192.0.0.1",
            "fec0::1",
            "100::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        let public_addresses = [
            "93.184.216.34",
            "172.32.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ];
        for public in public_addresses {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed with Python's hmac module:
        // hmac.new(b"Jefe", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign("Jefe", 1_700_000_000, b"{}"),
            "d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }

    #[test]
    fn literal_private_targets_are_refused_when_guarded() {
        let guarded = Outbound::new(Duration::from_secs(1), None, false).unwrap();
        for url in
            ["http://127.0.0.1:9/x", "http://[::1]/", "https://10.0.0.8/hook", "http://[fc00::1]/"]
        {
            assert!(guarded.check_target(url).is_err(), "{url}");
        }
        assert!(guarded.check_target("https://hooks.example.com/x").is_ok());
        assert!(guarded.check_target("ftp://example.com/x").is_err());
        let open = Outbound::new(Duration::from_secs(1), None, true).unwrap();
        assert!(open.check_target("http://127.0.0.1:9/x").is_ok());
    }

    #[tokio::test]
    async fn a_failed_request_names_its_target_but_not_its_path_or_query() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let outbound = Outbound::new(Duration::from_secs(5), None, true).unwrap();
        let url = format!("http://127.0.0.1:{port}/services/T0SECRETPATH?token=s3cr3t");
        let request =
            Request { url: &url, event: "test", delivery: "d", body: b"{}".to_vec(), timestamp: 0 };
        let Err(SendError::Failed(message)) = outbound.send(request).await else {
            panic!("a request to a closed port must fail");
        };
        assert!(message.starts_with(&format!("127.0.0.1:{port}: ")), "{message}");
        assert!(!message.contains("SECRETPATH") && !message.contains("s3cr3t"), "{message}");
    }

    #[tokio::test]
    async fn a_name_refused_by_the_guard_is_reported_without_its_path_or_query() {
        let guarded = Outbound::new(Duration::from_secs(5), None, false).unwrap();
        let url = "http://localhost:9/services/T0SECRETPATH?token=s3cr3t";
        let request =
            Request { url, event: "test", delivery: "d", body: b"{}".to_vec(), timestamp: 0 };
        let Err(SendError::Failed(message)) = guarded.send(request).await else {
            panic!("localhost resolves only to private addresses: the guard must refuse it");
        };
        assert!(message.starts_with("localhost:9: "), "{message}");
        assert!(message.contains("private"), "{message}");
        assert!(!message.contains("SECRETPATH") && !message.contains("s3cr3t"), "{message}");
    }
}
