//! Which peers may tell us the original scheme (`--forwarded-allow-ips`), and what
//! their `X-Forwarded-*` headers say — gunicorn's `secure_scheme_headers` rule.

use std::net::IpAddr;

use crate::error::HttpError;
use std::str::FromStr;

/// Peers whose forwarding headers are trusted: `*`, or IPs and CIDR networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    any: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl Default for AllowList {
    /// gunicorn's default: the local host only.
    fn default() -> Self {
        "127.0.0.1,::1".parse().expect("the default list parses")
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// `*`, or a comma list of `IP` and `IP/PREFIX` (host bits must be zero, as gunicorn requires).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = AllowList {
            any: false,
            nets: Vec::new(),
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                list.any = true;
                continue;
            }
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an IP address or network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("`{item}` has a bad prefix length"))?,
            };
            if mask(ip, prefix) != ip {
                return Err(format!("`{item}` has host bits set"));
            }
            list.nets.push((ip, prefix));
        }
        Ok(list)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl AllowList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.any
            || self
                .nets
                .iter()
                .any(|&(net, prefix)| net.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == net)
    }
}

/// The scheme the trusted proxy says the client used: `Ok(Some("https"))` or
/// `Ok(Some("http"))` when a header says, `Ok(None)` when none does, and `Err` when
/// two of them disagree (gunicorn answers 400: a request cannot be both).
pub fn forwarded_scheme(headers: &[(&[u8], &[u8])]) -> Result<Option<&'static str>, HttpError> {
    const SECURE: [(&[u8], &[u8]); 3] = [
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-ssl", b"on"),
        (b"x-forwarded-protocol", b"ssl"),
    ];
    let mut found: Option<&'static str> = None;
    for (name, value) in headers {
        let Some((_, secure)) = SECURE.iter().find(|(n, _)| name.eq_ignore_ascii_case(n)) else {
            continue;
        };
        let scheme = if value.eq_ignore_ascii_case(secure) {
            "https"
        } else {
            "http"
        };
        match found {
            Some(f) if f != scheme => {
                return Err(HttpError::BadRequest(
                    "contradictory X-Forwarded scheme headers",
                ))
            }
            _ => found = Some(scheme),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let l: AllowList = "10.0.0.0/8, 192.168.1.5 ,::1".parse().unwrap();
        for (ip, want) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.168.1.5", true),
            ("192.168.1.6", false),
            ("::1", true),
            ("::ffff:10.0.0.9", true),
            ("::2", false),
        ] {
            assert_eq!(l.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert!("*"
            .parse::<AllowList>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(AllowList::default().contains("127.0.0.1".parse().unwrap()));
        assert!(!AllowList::default().contains("10.0.0.1".parse().unwrap()));
        // Strict as gunicorn: host bits set, junk and bad prefixes are refused.
        for bad in ["10.0.0.1/8", "not-an-ip", "10.0.0.0/33", "::1/129"] {
            assert!(bad.parse::<AllowList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn schemes() {
        let h = |list: &[(&'static [u8], &'static [u8])]| forwarded_scheme(list);
        assert_eq!(h(&[(b"X-Forwarded-Proto", b"https")]), Ok(Some("https")));
        assert_eq!(h(&[(b"X-Forwarded-Proto", b"http")]), Ok(Some("http")));
        assert_eq!(
            h(&[
                (b"X-Forwarded-Ssl", b"on"),
                (b"X-Forwarded-Proto", b"HTTPS")
            ]),
            Ok(Some("https"))
        );
        assert_eq!(h(&[(b"Host", b"x")]), Ok(None));
        // Contradictory headers: refused rather than guessed.
        assert!(h(&[
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Ssl", b"off")
        ])
        .is_err());
    }
}
