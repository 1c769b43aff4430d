//! Where the server may send requests that users choose the address of (webhooks): by default
//! only to public addresses, never to loopback, link-local (cloud metadata), private, shared,
//! multicast, broadcast, documentation or unspecified ones, so an account holder cannot use the
//! server to reach its own network. An operator lists the destinations that are allowed anyway
//! (`[webhooks] allowed_hosts`): host names, addresses, CIDR networks, or `*` for any.
//!
//! The decision is made on the *resolved* address each time a connection is made, so a name that
//! starts resolving to an internal address (DNS rebinding) is refused then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One entry of the allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    Host(String),
    Net(IpAddr, u8),
}

/// The operator's allow list of destinations that are not public.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    allowed: Vec<Allowed>,
}

impl Destinations {
    /// Parses a list of host names, addresses, CIDR networks (`10.0.0.0/8`, `fd00::/8`) or `*`;
    /// a word that is none of these is an error naming it.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Destinations, String> {
        let mut allowed = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            allowed.push(if entry == "*" {
                Allowed::Any
            } else if let Some((net, bits)) = entry.split_once('/') {
                let net: IpAddr = net.parse().map_err(|_| format!("{entry:?} is not a CIDR network"))?;
                let max = if net.is_ipv4() { 32 } else { 128 };
                let bits: u8 =
                    bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| format!("{entry:?}: bad prefix length"))?;
                Allowed::Net(net, bits)
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Allowed::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else if entry.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                Allowed::Host(entry.to_ascii_lowercase())
            } else {
                return Err(format!("{entry:?} is not a host name, an address, a CIDR network or *"));
            });
        }
        Ok(Destinations { allowed })
    }

    /// Whether a connection to `addr`, reached through the name `host` (the URL's host, which may
    /// be the address itself), may be made.
    pub fn permits(&self, host: &str, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        if is_public(addr) {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.allowed.iter().any(|a| match a {
            Allowed::Any => true,
            Allowed::Host(name) => *name == host,
            Allowed::Net(net, bits) => in_net(addr, canonical(*net), *bits),
        })
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A globally reachable unicast address: not loopback, private, link-local, shared (CGNAT),
/// multicast, broadcast, documentation, benchmarking, reserved or unspecified.
pub fn is_public(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_documentation()
        || o0 == 0
        || (o0 == 100 && (64..128).contains(&o1))
        || (o0 == 192 && o1 == 0 && o2 == 0)
        || (o0 == 198 && (18..20).contains(&o1))
        || o0 >= 240)
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64, reaches IPv4 addresses
        || s[0] == 0x2002 // 6to4, likewise
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)) // IPv4-compatible
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &[&str], host: &str, addr: &str, want: bool) {
        let d = Destinations::parse(list.iter().copied()).expect("parses");
        assert_eq!(d.permits(host, addr.parse().expect("address")), want, "{list:?} {host} {addr}");
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            check(&[], "h", addr, false);
        }
        for addr in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            check(&[], "h", addr, true);
        }
        check(&["*"], "h", "127.0.0.1", true);
        check(&["127.0.0.1"], "h", "127.0.0.1", true);
        check(&["127.0.0.1"], "h", "127.0.0.2", false);
        check(&["10.0.0.0/8"], "h", "10.9.9.9", true);
        check(&["10.0.0.0/8"], "h", "172.16.0.1", false);
        check(&["hooks.internal"], "Hooks.Internal", "10.0.0.5", true);
        check(&["hooks.internal"], "other.internal", "10.0.0.5", false);
        check(&["::1"], "[::1]", "::1", true);
        check(&["fd00::/8"], "h", "fd12::1", true);
        assert!(Destinations::parse(["10.0.0.0/33"]).is_err());
        assert!(Destinations::parse(["not a host"]).is_err());
    }
}
