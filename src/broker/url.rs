//! The `--broker` URL: `redis://` or `rediss://` (TLS), an optional user and password
//! (percent-encoded: `%40` for `@`, `%3A` for `:`), host, port (6379) and database number.
//!
//! ```text
//! redis://HOST[:PORT][/DB]
//! redis://:PASSWORD@HOST[:PORT][/DB]        AUTH PASSWORD (requirepass, the default user)
//! redis://USER:PASSWORD@HOST[:PORT][/DB]    AUTH USER PASSWORD (an ACL user)
//! rediss://...                              the same over TLS (--broker-ca)
//! ```
//!
//! The password is never shown: [`BrokerUrl::redacted`] is what logs and errors print.

use std::net::ToSocketAddrs;

/// A parsed `--broker` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `HOST:PORT` to connect to.
    pub addr: String,
    /// The host as written (the TLS server name), without brackets for IPv6.
    pub host: String,
    /// `rediss://`: TLS.
    pub tls: bool,
    /// The ACL user (`AUTH USER PASS`); None with a password: `AUTH PASS`.
    pub user: Option<String>,
    /// The password, decoded.
    pub password: Option<String>,
    /// The database number (`SELECT DB` on each connection); None: 0, nothing sent.
    pub db: Option<u32>,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl BrokerUrl {
    /// Parses and checks `url` (the host must resolve). Errors never contain the password.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let shown = crate::logging::redact_url(url);
        let bad = |why: &str| {
            format!(
                "--broker {shown}: {why} (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], \
                 or rediss:// for TLS)"
            )
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(bad("not a redis:// or rediss:// URL"));
        };
        let (auth, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, None),
            Some((h, d)) => {
                let n = d
                    .parse::<u32>()
                    .map_err(|_| bad("the database must be a number"))?;
                (h, Some(n))
            }
            None => (rest, None),
        };
        if hostport.is_empty() || hostport.contains(['?', '#', '@']) {
            return Err(bad("no host, or options after it"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => {
                let (u, p) = match a.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (a, None),
                };
                let u = decode(u).ok_or_else(|| bad("bad percent-encoding in the user"))?;
                let p = match p {
                    Some(p) => {
                        Some(decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))?)
                    }
                    None => None,
                };
                match (u.is_empty(), p) {
                    (true, None) => (None, None),
                    (true, Some(p)) => (None, Some(p)),
                    // `redis://PASSWORD@host` (no colon) is taken as a password, as redis-cli
                    // and most clients do.
                    (false, None) => (None, Some(u)),
                    (false, Some(p)) => (Some(u), Some(p)),
                }
            }
        };
        let (host, with_port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "6379",
                None => return Err(bad("junk after ]")),
            };
            (h.to_string(), format!("[{h}]:{port}"))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, _)) => (h.to_string(), hostport.to_string()),
                None => (hostport.to_string(), format!("{hostport}:6379")),
            }
        };
        with_port
            .to_socket_addrs()
            .map_err(|e| format!("--broker {shown}: {e}"))?
            .next()
            .ok_or_else(|| format!("--broker {shown}: resolves to no address"))?;
        Ok(BrokerUrl {
            addr: with_port,
            host,
            tls,
            user,
            password,
            db,
        })
    }

    /// The URL as it may be shown: the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut s = String::from(if self.tls { "rediss://" } else { "redis://" });
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => s.push_str(&format!("{u}:***@")),
            (None, Some(_)) => s.push_str(":***@"),
            _ => {}
        }
        s.push_str(&self.addr);
        if let Some(db) = self.db {
            s.push_str(&format!("/{db}"));
        }
        s
    }
}

/// Percent-decodes `s` (None: a bad escape or bytes that are not UTF-8).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let u = BrokerUrl::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(u.addr, "127.0.0.1:7000");
        assert_eq!((u.tls, u.user, u.password, u.db), (false, None, None, None));
        let u = BrokerUrl::parse("redis://127.0.0.1/").unwrap();
        assert_eq!(u.addr, "127.0.0.1:6379");
        let u = BrokerUrl::parse("redis://:p%40ss%3Aw@127.0.0.1:1/2").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss:w"));
        assert_eq!((u.user.as_deref(), u.db), (None, Some(2)));
        assert_eq!(u.redacted(), "redis://:***@127.0.0.1:1/2");
        let u = BrokerUrl::parse("rediss://alice:secret@localhost:6380/15").unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "localhost");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.redacted(), "rediss://alice:***@localhost:6380/15");
        assert!(!format!("{u:?}").contains("secret"));
        let u = BrokerUrl::parse("redis://secret@127.0.0.1:1").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        let u = BrokerUrl::parse("redis://[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.addr.as_str()), ("::1", "[::1]:7000"));
        for bad in [
            "http://x:1",
            "redis://",
            "redis://h:1/x",
            "redis://h:1?db=2",
            "redis://h:x",
            "redis://:bad%zz@h:1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
        let e = BrokerUrl::parse("redis://u:hunter2@h:1/x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
