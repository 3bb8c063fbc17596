//! A request's client address as the connection caps and the auth rate
//! limits count it. A leaf: the listener sets it on every request, the
//! WebSocket upgrade and the auth endpoints read it.

use std::net::{IpAddr, Ipv6Addr};

/// The client's address as the caps count it (see [`client_key`]), set as a
/// request extension on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// What the per-address caps count: an IPv4 address as it is, an IPv6 one by
/// its /64 network (a host is given a whole /64, so its single addresses are
/// free to it), an IPv4-mapped IPv6 address as the IPv4 one.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}
