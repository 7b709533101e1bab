//! Where the hub may call. Tenants choose a provider's address (`base_url`, a token URL), so
//! without a policy a tenant could make the workers call the hub's own network: the broker's
//! management API, a database, a cloud's metadata service (`169.254.169.254`), and read the
//! answer back through a connection test or a job's last error.
//!
//! The policy refuses loopback, private (RFC 1918), carrier-grade NAT, link-local, unique
//! local (`fc00::/7`), unspecified, multicast and broadcast addresses, and IPv4 addresses
//! mapped into IPv6, unless the operator's allowlist (`SWITCHYARD_EGRESS__ALLOW`, CIDRs)
//! names them (an on-premise ERP, tests). It is applied twice:
//! - to a host given as an IP address, when a connector is built (its settings are refused
//!   with the field named);
//! - to the addresses a host name resolves to, when the call connects (the HTTP client's
//!   resolver keeps only addresses the policy allows, so a name that resolves to a private
//!   address, or changes to one later, is not reached). Redirects are never followed.
//!
//! The process's policy is set once at start ([`configure`]); a process that sets none (the
//! library's own tests) allows every address.
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

/// An egress policy: public addresses, and the allowlist.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow: Vec<IpNet>,
    allow_all: bool,
    /// The longest any one provider call may take, whatever an integration's `timeout_ms`
    /// asks (`None`: as asked). One tenant's hanging provider then holds the fleet's
    /// workers only so long.
    max_timeout: Option<std::time::Duration>,
}

static POLICY: OnceLock<Egress> = OnceLock::new();

/// Set the process's policy (once; later calls are ignored). Returns whether it was set.
pub fn configure(policy: Egress) -> bool {
    POLICY.set(policy).is_ok()
}

/// The process's policy: the configured one, else one that allows every address.
pub fn policy() -> &'static Egress {
    static OPEN: OnceLock<Egress> = OnceLock::new();
    POLICY.get().unwrap_or_else(|| {
        OPEN.get_or_init(|| Egress {
            allow: Vec::new(),
            allow_all: true,
            max_timeout: None,
        })
    })
}

impl Egress {
    /// Public addresses and those in `allow` (CIDRs such as `10.20.0.0/16`, or single
    /// addresses).
    pub fn new<S: AsRef<str>>(allow: &[S]) -> Result<Egress, String> {
        let allow = allow
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is not an address or a CIDR (e.g. 10.20.0.0/16)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Egress {
            allow,
            allow_all: false,
            max_timeout: None,
        })
    }

    /// No provider call takes longer than `max`.
    pub fn with_max_timeout(mut self, max: std::time::Duration) -> Egress {
        self.max_timeout = Some(max);
        self
    }

    /// The timeout of a call an integration wants to wait `asked` for.
    pub fn call_timeout(&self, asked: std::time::Duration) -> std::time::Duration {
        self.max_timeout.map_or(asked, |m| asked.min(m))
    }

    /// Whether the hub may call `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_all || self.allow.iter().any(|n| n.contains(&ip)) || is_public(ip)
    }

    /// Why the hub may not call `ip`, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        (!self.permits(ip)).then(|| {
            format!(
                "{ip} is a {} address; Switchyard does not call those unless SWITCHYARD_EGRESS__ALLOW names it",
                kind(ip)
            )
        })
    }

    /// A URL whose host is an IP address the policy refuses; host names are checked when
    /// they resolve.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            _ => return Ok(()),
        };
        self.refusal(ip).map_or(Ok(()), Err)
    }
}

fn v4_is_public(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    !(a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || o0 == 0
        // carrier-grade NAT, 100.64.0.0/10
        || (o0 == 100 && (64..128).contains(&o1)))
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => v4_is_public(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return v4_is_public(v4);
            }
            let first = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || a == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0))
        }
    }
}

fn kind(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(a) if a.is_loopback() => "loopback",
        IpAddr::V4(a) if a.is_private() => "private",
        IpAddr::V4(a) if a.is_link_local() => "link-local (cloud metadata)",
        IpAddr::V6(a) if a.is_loopback() => "loopback",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => "IPv4-mapped",
        IpAddr::V6(a) if (a.segments()[0] & 0xfe00) == 0xfc00 => "unique local",
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        _ => "non-public",
    }
}

/// The HTTP client's resolver: the system's, keeping only addresses the policy allows (its
/// own, else the process's).
#[derive(Debug, Clone, Default)]
pub struct PolicyResolver(Option<Arc<Egress>>);

impl PolicyResolver {
    /// A resolver with a policy of its own.
    pub fn with(policy: Egress) -> PolicyResolver {
        PolicyResolver(Some(Arc::new(policy)))
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let own = self.0.clone();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let global = policy();
            let policy: &Egress = match own.as_deref() {
                Some(p) => p,
                None => global,
            };
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why = all
                    .first()
                    .and_then(|a| policy.refusal(a.ip()))
                    .unwrap_or_else(|| "it resolves to no address".into());
                return Err(format!("`{host}` is not called: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver, for [`crate::http_client`].
pub fn resolver() -> Arc<PolicyResolver> {
    Arc::new(PolicyResolver::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_caps_every_call_timeout() {
        use std::time::Duration;
        let open = Egress::new::<&str>(&[]).unwrap();
        assert_eq!(
            open.call_timeout(Duration::from_secs(300)),
            Duration::from_secs(300)
        );
        let capped = open.with_max_timeout(Duration::from_secs(20));
        assert_eq!(
            capped.call_timeout(Duration::from_secs(300)),
            Duration::from_secs(20)
        );
        assert_eq!(
            capped.call_timeout(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn private_and_internal_addresses_are_refused_unless_allowed() {
        let p = Egress::new::<&str>(&[]).unwrap();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!p.permits(ip), "{refused} should be refused");
            assert!(p.refusal(ip).unwrap().contains("SWITCHYARD_EGRESS__ALLOW"));
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.permits(public.parse().unwrap()), "{public}");
        }
        let onprem = Egress::new(&["10.20.0.0/16", "127.0.0.1"]).unwrap();
        assert!(onprem.permits("10.20.3.4".parse().unwrap()));
        assert!(onprem.permits("127.0.0.1".parse().unwrap()));
        assert!(!onprem.permits("10.21.0.1".parse().unwrap()));
        assert!(Egress::new(&["not-a-cidr"]).is_err());
    }

    #[test]
    fn urls_with_refused_addresses_are_named() {
        let p = Egress::new::<&str>(&[]).unwrap();
        let e = p
            .check_url(&url::Url::parse("http://169.254.169.254/latest/meta-data").unwrap())
            .unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        assert!(
            p.check_url(&url::Url::parse("http://[::1]:15672/api").unwrap())
                .is_err()
        );
        assert!(
            p.check_url(&url::Url::parse("https://api.example.com/").unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_not_called() {
        use reqwest::dns::Resolve as _;
        let strict = PolicyResolver::with(Egress::new::<&str>(&[]).unwrap());
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let e = match strict.resolve(name).await {
            Ok(_) => panic!("localhost resolved under a policy that refuses loopback"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("`localhost` is not called") && e.contains("loopback"),
            "{e}"
        );
        let lenient = PolicyResolver::with(Egress::new(&["127.0.0.0/8", "::1"]).unwrap());
        let addrs: Vec<SocketAddr> = lenient
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        // Through an HTTP client: the call fails before it connects, saying why.
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(strict.clone()))
            .build()
            .unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        assert!(
            crate::rest::source_chain(&err).contains("loopback"),
            "{err}"
        );
    }
}
