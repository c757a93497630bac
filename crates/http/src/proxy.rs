//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary): a load balancer
//! prefixes each connection with the client's real address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::HttpError;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line the spec allows, CRLF included.
const V1_MAX: usize = 107;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// The client's address as the proxy saw it.
    Client(SocketAddr),
    /// `UNKNOWN` (v1) or `LOCAL` (v2): the connection's own peer stands.
    Unspecified,
}

/// Outcome of looking for a PROXY header at the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParsed {
    /// More bytes are needed to tell.
    Partial,
    /// No PROXY header: the bytes are HTTP.
    Absent,
    /// A header of this many bytes.
    Present(ProxySource, usize),
}

/// Look for a v1 or v2 PROXY header at the start of `buf`.
pub fn parse_proxy(buf: &[u8]) -> Result<ProxyParsed, HttpError> {
    let bad = HttpError::BadRequest("invalid PROXY protocol header");
    // v2: the binary signature.
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Ok(ProxyParsed::Partial);
        }
        let (ver_cmd, family) = (buf[12], buf[13]);
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if ver_cmd >> 4 != 2 {
            return Err(bad);
        }
        if buf.len() < 16 + len {
            return Ok(ProxyParsed::Partial);
        }
        let body = &buf[16..16 + len];
        let source = match (ver_cmd & 0x0f, family) {
            (0, _) => ProxySource::Unspecified, // LOCAL: health checks from the proxy itself
            (1, 0x11) if len >= 12 => {
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                ProxySource::Client(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([body[8], body[9]]),
                ))
            }
            (1, 0x21) if len >= 36 => {
                let octets: [u8; 16] = body[..16].try_into().map_err(|_| bad)?;
                ProxySource::Client(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(octets)),
                    u16::from_be_bytes([body[32], body[33]]),
                ))
            }
            (1, 0x00) => ProxySource::Unspecified,
            _ => return Err(bad),
        };
        return Ok(ProxyParsed::Present(source, 16 + len));
    }
    // v1: "PROXY TCP4 src dst sport dport\r\n".
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Ok(ProxyParsed::Absent);
    }
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(bad)
        } else {
            Ok(ProxyParsed::Partial)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(bad);
    }
    let line = std::str::from_utf8(&buf[6..end - 1]).map_err(|_| bad)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["UNKNOWN", ..] => ProxySource::Unspecified,
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src.parse().map_err(|_| bad)?;
            let dst: IpAddr = dst.parse().map_err(|_| bad)?;
            let v4 = *proto == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(bad);
            }
            let port = |p: &str| -> Result<u16, HttpError> {
                if p.is_empty()
                    || p.len() > 5
                    || !p.bytes().all(|b| b.is_ascii_digit())
                    || (p.len() > 1 && p.starts_with('0'))
                {
                    return Err(bad);
                }
                p.parse().map_err(|_| bad)
            };
            let sport = port(sport)?;
            port(dport)?;
            ProxySource::Client(SocketAddr::new(src, sport))
        }
        _ => return Err(bad),
    };
    Ok(ProxyParsed::Present(source, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        let ok = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy(ok),
            Ok(ProxyParsed::Present(
                ProxySource::Client("192.168.0.1:56324".parse().unwrap()),
                47
            ))
        );
        let v6 = b"PROXY TCP6 ::1 ::2 1 2\r\n";
        assert_eq!(
            parse_proxy(v6),
            Ok(ProxyParsed::Present(
                ProxySource::Client("[::1]:1".parse().unwrap()),
                v6.len()
            ))
        );
        assert_eq!(
            parse_proxy(b"PROXY UNKNOWN\r\n"),
            Ok(ProxyParsed::Present(ProxySource::Unspecified, 15))
        );
        assert_eq!(parse_proxy(b"PROXY TCP4 1.2.3.4"), Ok(ProxyParsed::Partial));
        assert_eq!(parse_proxy(b"PRO"), Ok(ProxyParsed::Partial));
        assert_eq!(parse_proxy(b"GET / HTTP/1.1\r\n"), Ok(ProxyParsed::Absent));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],  // no CR
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",         // family mismatch
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", // port out of range
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    // leading zero
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",     // unknown protocol
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       // missing field
        ] {
            assert!(
                parse_proxy(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_proxy(
            &[b'P', b'R', b'O', b'X', b'Y', b' ', b'A']
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'x', 200))
                .collect::<Vec<_>>()
        )
        .is_err());
    }

    #[test]
    fn v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        assert_eq!(
            parse_proxy(&h),
            Ok(ProxyParsed::Present(
                ProxySource::Client("10.0.0.7:8080".parse().unwrap()),
                28
            ))
        );
        assert_eq!(parse_proxy(&h[..20]), Ok(ProxyParsed::Partial));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy(&local),
            Ok(ProxyParsed::Present(ProxySource::Unspecified, 16))
        );
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse_proxy(&bad).is_err());
    }
}
