//! Who sent a request: the connection's peer, or, when that peer is one of the operator's
//! reverse proxies (`SWITCHYARD_INGEST__TRUSTED_PROXIES`), the client it forwarded for, read
//! from `X-Forwarded-For` right to left (the rightmost address not itself a trusted proxy: a
//! sender can prepend any address it likes, but not the ones the proxies appended). The IP
//! allowlists of integrations see this address.
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The sender's address.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&unmap(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, as one list.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // An address we cannot read: stop at the last one we could.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    unmap(client)
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_may_say_who_the_client_is() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // Straight from the client: its header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.9"), &headers(&["203.0.113.7"]), &proxies),
            ip("198.51.100.9")
        );
        // Through our proxy: the address it appended.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers(&["203.0.113.7"]), &proxies),
            ip("203.0.113.7")
        );
        // A forged address the client prepended is not believed.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &headers(&["203.0.113.50, 198.51.100.9"]),
                &proxies
            ),
            ip("198.51.100.9")
        );
        // Two proxies of ours in a row, in one header or several.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &headers(&["198.51.100.9, 10.9.9.9"]),
                &proxies
            ),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &headers(&["198.51.100.9", "10.9.9.9"]),
                &proxies
            ),
            ip("198.51.100.9")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers(&[]), &proxies),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers(&["not-an-ip"]), &proxies),
            ip("10.1.2.3")
        );
        // No trusted proxies configured: the peer, always.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers(&["203.0.113.7"]), &[]),
            ip("10.1.2.3")
        );
        // IPv4 through an IPv6 socket.
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &headers(&["203.0.113.7"]), &proxies),
            ip("203.0.113.7")
        );
    }
}
