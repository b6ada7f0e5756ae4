//! Which peers are trusted proxies (`--trusted-proxies`), and the client address behind them.
//!
//! Addresses are compared in canonical form: a dual-stack or IPv6 listener sees IPv4 peers as
//! IPv4-mapped addresses (`::ffff:10.0.0.5`), which must match `10.0.0.5` and `10.0.0.0/8`.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One entry of `--trusted-proxies`: an address (`10.0.0.5`) or a CIDR range (`10.0.0.0/8`,
/// `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRange(IpNet);

impl ProxyRange {
    /// Whether `ip` (in any form) is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for ProxyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let net = if s.contains('/') {
            let net = IpNet::from_str(s)
                .map_err(|_| format!("{s:?} is not an address range (10.0.0.0/8, fd00::/8)"))?;
            match net {
                // `::ffff:10.0.0.0/104` means `10.0.0.0/8`.
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                        .map_err(|e| e.to_string())?,
                    None => net,
                },
                _ => net,
            }
        } else {
            let ip =
                IpAddr::from_str(s).map_err(|_| format!("{s:?} is not an IP address or range"))?;
            IpNet::from(ip.to_canonical())
        };
        Ok(Self(net.trunc()))
    }
}

impl fmt::Display for ProxyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ProxyRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(trusted: &[ProxyRange], peer: IpAddr) -> bool {
    trusted.iter().any(|r| r.contains(peer))
}

/// The client address of a request from `peer`: the peer itself, or, when the peer is a
/// trusted proxy, the nearest address in the `X-Forwarded-For` values (`hops`, in header
/// order) that is not a trusted proxy. Canonical form.
pub fn client_behind<'a>(
    trusted: &[ProxyRange],
    peer: IpAddr,
    hops: impl DoubleEndedIterator<Item = &'a str>,
) -> IpAddr {
    let mut ip = peer.to_canonical();
    if !is_trusted(trusted, ip) {
        return ip;
    }
    // Walk the chain from the right: the first hop we do not trust is the client.
    for hop in hops.rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(addr) => {
                ip = addr.to_canonical();
                if !is_trusted(trusted, ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<ProxyRange> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries_and_ranges() {
        let trusted = ranges(&["10.0.0.5", "192.168.0.0/16"]);
        assert!(is_trusted(&trusted, ip("::ffff:10.0.0.5")));
        assert!(is_trusted(&trusted, ip("::ffff:192.168.4.1")));
        assert!(is_trusted(&trusted, ip("10.0.0.5")));
        assert!(!is_trusted(&trusted, ip("10.0.0.6")));
        assert!(!is_trusted(&trusted, ip("::ffff:10.0.0.6")));
        let mapped = ranges(&["::ffff:172.16.0.0/108", "::ffff:10.1.1.1"]);
        assert!(is_trusted(&mapped, ip("172.16.3.4")));
        assert!(is_trusted(&mapped, ip("10.1.1.1")));
    }

    #[test]
    fn ranges_of_both_families() {
        let trusted = ranges(&["fd00::/8", "10.0.0.0/8"]);
        assert!(is_trusted(&trusted, ip("fd12:3456::1")));
        assert!(!is_trusted(&trusted, ip("fe80::1")));
        assert!(is_trusted(&trusted, ip("10.200.0.1")));
        assert_eq!(ranges(&["10.1.2.3/8"])[0].to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "10.0.0.0/33",
            "example.com",
            "10.0.0.0/",
            "/8",
            "::1/129",
        ] {
            assert!(bad.parse::<ProxyRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted = ranges(&["10.0.0.0/8"]);
        let hops = ["203.0.113.7", "::ffff:198.51.100.2", "10.0.0.9"];
        assert_eq!(
            client_behind(&trusted, ip("::ffff:10.0.0.1"), hops.iter().copied()),
            ip("198.51.100.2")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_behind(&trusted, ip("::ffff:203.0.113.9"), hops.iter().copied()),
            ip("203.0.113.9")
        );
        // A hop that is not an address ends the walk at the last one believed.
        let junk = ["198.51.100.2", "nonsense"];
        assert_eq!(
            client_behind(&trusted, ip("10.0.0.1"), junk.iter().copied()),
            ip("10.0.0.1")
        );
    }
}
