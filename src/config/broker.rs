//! The broker's address: the one parser of `mqtt.url`, used by `check-config`, the daemon
//! and the uplink alike.

use std::fmt;

/// Where the broker is: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// From the URL, else 1883 (`mqtt://`) or 8883 (`mqtts://`).
    pub port: u16,
}

impl BrokerUrl {
    /// Parse `mqtt://host[:port]` or `mqtts://host[:port]`, an optional trailing `/`, nothing
    /// else (no path, query or credentials: nothing would use them). The error says what is
    /// wrong, for `check-config`'s line.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a URL; expected mqtt://host:port or mqtts://host:port")
        })?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(format!("scheme {scheme:?} must be mqtt:// or mqtts://")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
            return Err(format!(
                "{url:?}: only {scheme}://host[:port] is supported (no path, query, credentials or spaces)"
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("{url:?}: unexpected text after ]")),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(format!(
                        "{url:?}: put an IPv6 address in brackets, [::1]:1883"
                    ))
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("{url:?}: port {text:?} must be 1-65535")),
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// `mqtt://host:port`, IPv6 hosts in brackets: for logs and for reaching the broker.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls_with_the_scheme_default_port() {
        let parsed = |u: &str| BrokerUrl::parse(u).map(|b| (b.host, b.port, b.tls));
        assert_eq!(
            parsed("mqtt://broker.example:1884"),
            Ok(("broker.example".into(), 1884, false))
        );
        assert_eq!(
            parsed("mqtt://10.0.0.1"),
            Ok(("10.0.0.1".into(), 1883, false))
        );
        assert_eq!(parsed("mqtt://[::1]:1883"), Ok(("::1".into(), 1883, false)));
        assert_eq!(parsed("MQTTS://b/"), Ok(("b".into(), 8883, true)));
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_refused_with_a_reason() {
        for url in [
            "http://b",
            "mqtt://:1883",
            "mqtt://b:x",
            "mqtts://b:99999",
            "mqtt://b:0",
            "mqtt://user@b",
            "mqtt://b/path",
            "mqtt://::1",
            "mqtt://[::1",
            "broker:1883",
        ] {
            assert!(BrokerUrl::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn display_gives_a_url_that_parses_back_to_the_same() {
        for url in ["mqtt://b", "mqtts://[::1]:9", "mqtt://10.0.0.1:1884"] {
            let b = BrokerUrl::parse(url).unwrap();
            assert_eq!(BrokerUrl::parse(&b.to_string()), Ok(b));
        }
    }
}
