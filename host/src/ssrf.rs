//! The server-side request forgery guard: which addresses an action may not
//! reach unless a grant names them explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is internal, or `None` for a public address. IPv6 forms that embed
/// an IPv4 address where it can be read (mapped, compatible, SIIT, the
/// well-known NAT64 prefix, 6to4) are judged by it; forms that hide it
/// (Teredo, local-use NAT64 with its operator-chosen layout) are refused. An
/// IPv6 address outside the global unicast range `2000::/3` is never public.
pub(crate) fn internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "the cloud metadata address",
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (192, 168, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a reserved address",
        (192, 88, 99) => "a reserved (6to4 relay) address",
        (198, 18..=19, _) => "a reserved (benchmarking) address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_reason(v4);
    }
    let segments = ip.segments();
    Some(match segments[0] {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            "the cloud metadata address"
        }
        s if s & 0xfe00 == 0xfc00 => "a unique-local address",
        s if s & 0xffc0 == 0xfe80 => "a link-local address",
        s if s & 0xffc0 == 0xfec0 => "a site-local address",
        s if s & 0xff00 == 0xff00 => "a multicast address",
        // 64:ff9b:1::/48 is NAT64 for a local network, where the operator
        // chose where the IPv4 address sits: it cannot be read, so refuse all.
        0x64 if segments[1] == 0xff9b => "a local-use NAT64 address",
        0x0100 if segments[1..4] == [0, 0, 0] => "a reserved (discard) address",
        // Teredo hides the IPv4 peer; 2001::/23 is for protocols, not hosts.
        0x2001 if segments[1] == 0 => "a Teredo address",
        0x2001 if segments[1] < 0x0200 => "a reserved (IETF protocol) address",
        0x2001 if segments[1] == 0x0db8 => "a reserved (documentation) address",
        0x3fff if segments[1] < 0x1000 => "a reserved (documentation) address",
        0x5f00 => "a reserved (segment routing) address",
        s if s & 0xe000 != 0x2000 => "a reserved (not global unicast) address",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address stands for, if it embeds one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (SIIT, translated) and
        // ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(tail),
        // NAT64's well-known prefix, 64:ff9b::/96, with the address last.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 6to4: 2002:AABB:CCDD::/48.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Option<&'static str> {
        internal_reason(text.parse().unwrap())
    }

    #[test]
    fn internal_ipv4_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
        ] {
            assert!(reason(ip).is_some(), "{ip}");
        }
        assert_eq!(
            reason("169.254.169.254"),
            Some("the cloud metadata address")
        );
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_ranges_are_refused() {
        for ip in [
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "fd00:ec2::254",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(reason(ip).is_some(), "{ip}");
        }
        assert_eq!(reason("fd00:ec2::254"), Some("the cloud metadata address"));
    }

    #[test]
    fn ipv6_forms_embedding_an_internal_ipv4_are_refused() {
        assert_eq!(reason("::ffff:127.0.0.1"), Some("a loopback address"));
        assert_eq!(
            reason("::ffff:169.254.169.254"),
            Some("the cloud metadata address")
        );
        assert_eq!(reason("::10.0.0.1"), Some("a private address"));
        assert_eq!(reason("64:ff9b::7f00:1"), Some("a loopback address"));
        assert_eq!(reason("2002:7f00:1::"), Some("a loopback address"));
        assert_eq!(reason("::ffff:0:7f00:1"), Some("a loopback address"));
        assert_eq!(reason("::ffff:0:a00:1"), Some("a private address"));
        assert_eq!(reason("::ffff:8.8.8.8"), None);
        assert_eq!(reason("::ffff:0:808:808"), None);
        assert_eq!(reason("64:ff9b::808:808"), None);
    }

    #[test]
    fn forms_that_hide_an_ipv4_address_are_refused_whatever_it_is() {
        // The local-use NAT64 prefix is not read by its last 32 bits: with a
        // /48 layout, 64:ff9b:1:7f00:1:: is 127.0.0.1 while its tail is public.
        assert_eq!(
            reason("64:ff9b:1:7f00:1::808:808"),
            Some("a local-use NAT64 address")
        );
        assert_eq!(
            reason("64:ff9b:1::808:808"),
            Some("a local-use NAT64 address")
        );
        assert_eq!(
            reason("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Some("a Teredo address")
        );
    }

    #[test]
    fn reserved_and_documentation_ranges_are_refused() {
        for (ip, why) in [
            ("2001:2::1", "a reserved (IETF protocol) address"),
            ("2001:10::1", "a reserved (IETF protocol) address"),
            ("2001:db8::1", "a reserved (documentation) address"),
            ("3fff::1", "a reserved (documentation) address"),
            ("5f00::1", "a reserved (segment routing) address"),
            ("100::1", "a reserved (discard) address"),
            ("4000::1", "a reserved (not global unicast) address"),
            ("::2:3:4:5", "a reserved (not global unicast) address"),
            ("192.88.99.1", "a reserved (6to4 relay) address"),
            ("203.0.113.9", "a reserved address"),
        ] {
            assert_eq!(reason(ip), Some(why), "{ip}");
        }
        assert_eq!(reason("2001:4860::8888"), None);
        assert_eq!(reason("3fff:1000::1"), None);
    }
}
