//! Who may publish and who may subscribe: publish keys for `POST /pub`, signed subscribe
//! tokens (JSON Web Tokens) for every transport, and private push addresses ([`push`]).
//!
//! [`Auth`] is built from the flags and the key files (at start, and again on SIGHUP so a key
//! can be rotated without a restart); after that it is read-only and shared by every worker.
//! Checking a token reads no clock: the caller passes the wall clock in ([`Auth::verify`]).
//! Nothing here is on the delivery path: a token is checked once, when a subscription or a
//! Bayeux session starts, and what a connection keeps of it is its expiry (a tick in the
//! connection entry) and, for a WebSocket subscriber with `--client-publish`, one bit.
//!
//! Tokens are checked with the `jsonwebtoken` crate (ring underneath, the same ring as TLS).
//! The key is chosen by the token's `alg` family: an `HS*` token is checked only against
//! `--token-secret`s, an `RS*`/`PS*`/`ES*`/`EdDSA` token only against `--token-public-key`s of
//! that family, so a public key can never be used as an HMAC secret (the HS/RS confusion);
//! `alg: none` is no algorithm the crate knows, so such a token is malformed.

pub mod pattern;
pub mod push;

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::digest;
use serde::Deserialize;

/// Where the keys come from (the flags, see `config.rs`).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub publish_keys: Vec<String>,
    pub publish_key_file: Option<PathBuf>,
    pub token_secrets: Vec<String>,
    pub token_secret_file: Option<PathBuf>,
    pub token_public_keys: Vec<PathBuf>,
    pub leeway: u64,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl Sources {
    /// The flags' keys.
    pub fn of(cfg: &crate::Config) -> Sources {
        Sources {
            publish_keys: cfg.publish_key.clone(),
            publish_key_file: cfg.publish_key_file.clone(),
            token_secrets: cfg.token_secret.clone(),
            token_secret_file: cfg.token_secret_file.clone(),
            token_public_keys: cfg.token_public_key.clone(),
            leeway: u64::from(cfg.token_leeway),
            audience: cfg.token_audience.clone(),
            issuer: cfg.token_issuer.clone(),
        }
    }
}

/// The keys in effect.
pub struct Auth {
    /// SHA-256 of each publish key: compared in constant time, whatever the lengths.
    publish: Vec<digest::Digest>,
    secrets: Vec<DecodingKey>,
    public: Vec<(DecodingKey, Family)>,
    leeway: u64,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("publish_keys", &self.publish.len())
            .field("token_secrets", &self.secrets.len())
            .field("token_public_keys", &self.public.len())
            .field("leeway", &self.leeway)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

/// Why `POST /pub` was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No `Authorization: Bearer`.
    Missing,
    /// A key that is not one of `--publish-key`.
    Wrong,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// None given (`?token=`, `Authorization: Bearer`, Bayeux `ext.auth.token`).
    Missing,
    /// Not a JWT, or not one we can read: bad base64 or JSON, an unknown `alg` (`none`),
    /// claims of the wrong type, a missing `exp`.
    Malformed,
    /// An `alg` for which no key is configured (an HS token with only a public key, and the
    /// other way round).
    Algorithm,
    /// The signature does not verify with any configured key of its family.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYetValid,
    /// `aud` / `iss` are not the configured `--token-audience` / `--token-issuer`.
    Claims,
    /// Valid, but the channel is not in its `channels` (or `publish`) claim: 403.
    Channel,
}

impl TokenError {
    /// The status of an HTTP answer that refuses it.
    pub fn status(self) -> u16 {
        match self {
            TokenError::Channel => 403,
            _ => 401,
        }
    }

    /// Words for the answer's body and `error_description`.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "a token is required (?token= or Authorization: Bearer)",
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token algorithm not accepted",
            TokenError::Signature => "bad token signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::Claims => "token audience or issuer not accepted",
            TokenError::Channel => "the token does not grant this channel",
        }
    }

    /// The `WWW-Authenticate` header of a refusal (RFC 6750 §3).
    pub fn www_authenticate(self) -> String {
        match self {
            TokenError::Missing => "WWW-Authenticate: Bearer realm=\"edgecomet\"\r\n".to_string(),
            TokenError::Channel => format!(
                "WWW-Authenticate: Bearer realm=\"edgecomet\", error=\"insufficient_scope\", \
                 error_description=\"{}\"\r\n",
                self.message()
            ),
            _ => format!(
                "WWW-Authenticate: Bearer realm=\"edgecomet\", error=\"invalid_token\", \
                 error_description=\"{}\"\r\n",
                self.message()
            ),
        }
    }
}

/// What a valid token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// `sub`: who it was issued to.
    pub sub: Option<Box<str>>,
    /// `exp` (seconds since the Unix epoch) plus `--token-leeway`: when the token, and every
    /// connection it opened, ends.
    pub ends: u64,
    channels: Vec<Box<str>>,
    publish: Vec<Box<str>>,
}

impl Grant {
    /// Whether the token lets its bearer subscribe to `channel` (native name).
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| pattern::covers(p, channel))
    }

    /// Whether the token lets its bearer publish to `channel` as a client.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| pattern::covers(p, channel))
    }

    /// The `channels` patterns.
    pub fn channel_patterns(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|p| &**p)
    }

    /// Seconds it has left at `now_unix` (0 once ended).
    pub fn left(&self, now_unix: u64) -> u64 {
        self.ends.saturating_sub(now_unix)
    }
}

/// A claim holding one string or an array of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    fn into_vec(self) -> Vec<Box<str>> {
        match self {
            Names::One(s) => vec![s.into()],
            Names::Many(v) => v.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    sub: Option<String>,
    channels: Option<Names>,
    publish: Option<Names>,
}

/// Longest token accepted (bytes): far above any real one, and it bounds the work of a
/// hostile one.
pub const MAX_TOKEN: usize = 8192;

impl Auth {
    /// Reads the keys the flags name. An error names the flag and the file.
    pub fn load(src: &Sources) -> Result<Auth, String> {
        let mut publish: Vec<digest::Digest> = Vec::new();
        let mut add_key = |k: &str, from: &str| -> Result<(), String> {
            let k = k.trim();
            if k.len() < 16 {
                return Err(format!(
                    "{from}: a publish key must be at least 16 characters (got {})",
                    k.len()
                ));
            }
            publish.push(digest::digest(&digest::SHA256, k.as_bytes()));
            Ok(())
        };
        for k in &src.publish_keys {
            add_key(k, "--publish-key")?;
        }
        if let Some(path) = &src.publish_key_file {
            for k in key_lines(path, "--publish-key-file")? {
                add_key(&k, &format!("--publish-key-file {}", path.display()))?;
            }
        }
        let mut secrets = Vec::new();
        let mut add_secret = |s: &str, from: &str| -> Result<(), String> {
            let s = s.trim();
            if s.len() < 32 {
                return Err(format!(
                    "{from}: an HS256 secret must be at least 32 bytes (got {})",
                    s.len()
                ));
            }
            secrets.push(DecodingKey::from_secret(s.as_bytes()));
            Ok(())
        };
        for s in &src.token_secrets {
            add_secret(s, "--token-secret")?;
        }
        if let Some(path) = &src.token_secret_file {
            for s in key_lines(path, "--token-secret-file")? {
                add_secret(&s, &format!("--token-secret-file {}", path.display()))?;
            }
        }
        let mut public = Vec::new();
        for path in &src.token_public_keys {
            public.push(public_key(path)?);
        }
        Ok(Auth {
            publish,
            secrets,
            public,
            leeway: src.leeway,
            audience: src.audience.clone(),
            issuer: src.issuer.clone(),
        })
    }

    /// No keys at all: the server is open (as before authorization existed).
    pub fn open() -> Auth {
        Auth {
            publish: Vec::new(),
            secrets: Vec::new(),
            public: Vec::new(),
            leeway: 0,
            audience: None,
            issuer: None,
        }
    }

    /// Whether `POST /pub` needs a key.
    pub fn publish_keys(&self) -> bool {
        !self.publish.is_empty()
    }

    /// Whether subscriptions need a token.
    pub fn tokens(&self) -> bool {
        !self.secrets.is_empty() || !self.public.is_empty()
    }

    /// Checks a publish request's `Authorization` header value against the publish keys
    /// (always `Ok` without keys). Every key is compared, in constant time, so the time taken
    /// says nothing about which key or how much of it matched.
    pub fn check_publish(&self, authorization: Option<&[u8]>) -> Result<(), KeyError> {
        if self.publish.is_empty() {
            return Ok(());
        }
        let Some(given) = authorization.and_then(bearer) else {
            return Err(KeyError::Missing);
        };
        let given = digest::digest(&digest::SHA256, given);
        let mut ok = 0u8;
        for k in &self.publish {
            ok |= ct_eq(k.as_ref(), given.as_ref());
        }
        if ok == 1 {
            Ok(())
        } else {
            Err(KeyError::Wrong)
        }
    }

    /// Checks a token at `now_unix` (seconds since the epoch): what it grants, or why not.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Grant, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.secrets.iter().collect(),
            alg => {
                let family = match alg {
                    Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
                    Algorithm::EdDSA => Family::Ed,
                    _ => Family::Rsa,
                };
                self.public
                    .iter()
                    .filter(|(_, f)| *f == family)
                    .map(|(k, _)| k)
                    .collect()
            }
        };
        if keys.is_empty() {
            return Err(TokenError::Algorithm);
        }
        let mut v = Validation::new(header.alg);
        v.required_spec_claims.clear();
        // The times are checked below against the `now` we were given.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = 0;
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
            v.set_required_spec_claims(&["iss"]);
        }
        let mut last = TokenError::Signature;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => return self.grant(data.claims, now_unix),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => TokenError::Signature,
                        K::InvalidAudience | K::InvalidIssuer | K::MissingRequiredClaim(_) => {
                            return Err(TokenError::Claims);
                        }
                        // A key the signature cannot be checked with (a P-384 key for an
                        // ES256 token): try the next one.
                        K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::Crypto(_) => {
                            TokenError::Signature
                        }
                        _ => return Err(TokenError::Malformed),
                    };
                }
            }
        }
        Err(last)
    }

    fn grant(&self, c: Claims, now_unix: u64) -> Result<Grant, TokenError> {
        let Some(exp) = c.exp.filter(|e| e.is_finite() && *e >= 0.0) else {
            return Err(TokenError::Malformed);
        };
        let now = now_unix as f64;
        let leeway = self.leeway as f64;
        // RFC 7519 §4.1.4: not accepted on or after `exp`.
        if now >= exp + leeway {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = c.nbf {
            if !nbf.is_finite() {
                return Err(TokenError::Malformed);
            }
            if now + leeway < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(Grant {
            sub: c.sub.map(Into::into),
            ends: (exp + leeway) as u64,
            channels: c.channels.map_or_else(Vec::new, Names::into_vec),
            publish: c.publish.map_or_else(Vec::new, Names::into_vec),
        })
    }
}

/// The credentials of an `Authorization: Bearer …` value.
pub fn bearer(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// 1 if equal, else 0, in time that depends only on the lengths (both 32 here).
fn ct_eq(a: &[u8], b: &[u8]) -> u8 {
    if a.len() != b.len() {
        return 0;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // `d` is 0 only when every byte matched; turn that into 1 without a branch on it.
    (((u16::from(d)).wrapping_sub(1) >> 8) & 1) as u8
}

/// The non-empty, non-comment lines of a key file.
fn key_lines(path: &Path, flag: &str) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err(format!("{flag} {}: no key in the file", path.display()));
    }
    Ok(keys)
}

/// A PEM public key: EC (P-256 for ES256, P-384 for ES384), RSA, or Ed25519.
fn public_key(path: &Path) -> Result<(DecodingKey, Family), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--token-public-key {}: {e}", path.display()))?;
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((k, Family::Ec));
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((k, Family::Rsa));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok((k, Family::Ed));
    }
    Err(format!(
        "--token-public-key {}: not a PEM public key (EC, RSA or Ed25519 \
         `-----BEGIN PUBLIC KEY-----`)",
        path.display()
    ))
}

#[cfg(test)]
mod tests;
