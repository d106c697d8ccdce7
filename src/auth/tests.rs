use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const NOW: u64 = 1_800_000_000;

fn hs(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn with(src: Sources) -> Auth {
    Auth::load(&src).unwrap()
}

fn hs_auth() -> Auth {
    with(Sources {
        token_secrets: vec![SECRET.into()],
        ..Sources::default()
    })
}

#[test]
fn valid_hs256_grants_its_channels() {
    let a = hs_auth();
    let t = hs(
        json!({"exp": NOW + 60, "sub": "alice", "channels": ["news/*", "chat"],
                      "publish": "chat"}),
    );
    let g = a.verify(&t, NOW).unwrap();
    assert_eq!(g.sub.as_deref(), Some("alice"));
    assert_eq!(g.ends, NOW + 60);
    assert!(g.may_subscribe("news/eu") && g.may_subscribe("chat"));
    assert!(!g.may_subscribe("news") && !g.may_subscribe("other"));
    assert!(g.may_publish("chat") && !g.may_publish("news/eu"));
    assert_eq!(g.left(NOW + 59), 1);
}

#[test]
fn times() {
    let a = hs_auth();
    let t = hs(json!({"exp": NOW, "channels": ["a"]}));
    assert_eq!(
        a.verify(&t, NOW),
        Err(TokenError::Expired),
        "not on or after exp"
    );
    assert!(a.verify(&t, NOW - 1).is_ok());
    let t = hs(json!({"exp": NOW + 60, "nbf": NOW + 10, "channels": ["a"]}));
    assert_eq!(a.verify(&t, NOW), Err(TokenError::NotYetValid));
    assert!(a.verify(&t, NOW + 10).is_ok());
    let t = hs(json!({"channels": ["a"]}));
    assert_eq!(
        a.verify(&t, NOW),
        Err(TokenError::Malformed),
        "exp is required"
    );
    let t = hs(json!({"exp": "tomorrow"}));
    assert_eq!(a.verify(&t, NOW), Err(TokenError::Malformed));
    let t = hs(json!({"exp": (NOW + 5) as f64 + 0.5}));
    assert!(
        a.verify(&t, NOW).is_ok(),
        "a NumericDate may have a fraction"
    );
    // Leeway moves both ends.
    let a = with(Sources {
        token_secrets: vec![SECRET.into()],
        leeway: 30,
        ..Sources::default()
    });
    let t = hs(json!({"exp": NOW - 10, "nbf": NOW + 20}));
    assert_eq!(a.verify(&t, NOW).unwrap().ends, NOW + 20);
}

#[test]
fn bad_tokens() {
    let a = hs_auth();
    let good = hs(json!({"exp": NOW + 60}));
    assert_eq!(a.verify("", NOW), Err(TokenError::Missing));
    for garbage in [
        "x",
        "a.b",
        "a.b.c",
        "....",
        "é.é.é",
        &"a".repeat(MAX_TOKEN + 1),
    ] {
        assert_eq!(
            a.verify(garbage, NOW),
            Err(TokenError::Malformed),
            "{garbage:.20}"
        );
    }
    // A flipped signature byte.
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        a.verify(std::str::from_utf8(&bad).unwrap(), NOW),
        Err(TokenError::Signature)
    );
    // Signed with another secret.
    let other = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": NOW + 60}),
        &EncodingKey::from_secret(b"another secret that is long enough!!"),
    )
    .unwrap();
    assert_eq!(a.verify(&other, NOW), Err(TokenError::Signature));
    // alg: none, with and without a signature.
    let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = B64.encode(format!(r#"{{"exp":{}}}"#, NOW + 60));
    assert_eq!(
        a.verify(&format!("{header}.{body}."), NOW),
        Err(TokenError::Malformed)
    );
    let sig = good.rsplit('.').next().unwrap();
    assert_eq!(
        a.verify(&format!("{header}.{body}.{sig}"), NOW),
        Err(TokenError::Malformed)
    );
    // An HS token where only public keys are configured, and the other way round.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = std::env::temp_dir().join(format!("edgecomet-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pub_path = dir.join("ec.pub.pem");
    std::fs::write(&pub_path, ec.public_key_pem()).unwrap();
    let es_only = with(Sources {
        token_public_keys: vec![pub_path.clone()],
        ..Sources::default()
    });
    assert_eq!(es_only.verify(&good, NOW), Err(TokenError::Algorithm));
    // HS/RS confusion: an HS256 token "signed" with the public key's PEM as the secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": NOW + 60}),
        &EncodingKey::from_secret(ec.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(es_only.verify(&confused, NOW), Err(TokenError::Algorithm));
    let es = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": NOW + 60, "channels": ["x/**"]}),
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(es_only.verify(&es, NOW).unwrap().may_subscribe("x/y/z"));
    assert_eq!(a.verify(&es, NOW), Err(TokenError::Algorithm));
    // Both configured: each family with its own key.
    let both = with(Sources {
        token_secrets: vec![SECRET.into()],
        token_public_keys: vec![pub_path],
        ..Sources::default()
    });
    assert!(both.verify(&es, NOW).is_ok() && both.verify(&good, NOW).is_ok());
    assert_eq!(both.verify(&confused, NOW), Err(TokenError::Signature));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audience_and_issuer() {
    let a = with(Sources {
        token_secrets: vec![SECRET.into()],
        audience: Some("edge".into()),
        issuer: Some("app".into()),
        ..Sources::default()
    });
    assert!(
        a.verify(
            &hs(json!({"exp": NOW + 9, "aud": "edge", "iss": "app"})),
            NOW
        )
        .is_ok()
    );
    for c in [
        json!({"exp": NOW + 9, "aud": "other", "iss": "app"}),
        json!({"exp": NOW + 9, "aud": "edge"}),
    ] {
        assert_eq!(a.verify(&hs(c), NOW), Err(TokenError::Claims));
    }
    // Without --token-audience, a token that names an audience is still accepted.
    assert!(
        hs_auth()
            .verify(&hs(json!({"exp": NOW + 9, "aud": "x"})), NOW)
            .is_ok()
    );
}

#[test]
fn rotation_several_secrets() {
    let a = with(Sources {
        token_secrets: vec!["x".repeat(40), SECRET.into()],
        ..Sources::default()
    });
    assert!(a.verify(&hs(json!({"exp": NOW + 9})), NOW).is_ok());
}

#[test]
fn publish_keys() {
    assert_eq!(Auth::open().check_publish(None), Ok(()));
    let a = with(Sources {
        publish_keys: vec!["old-key-0123456789".into(), "new-key-0123456789".into()],
        ..Sources::default()
    });
    assert!(a.publish_keys() && !a.tokens());
    assert_eq!(a.check_publish(None), Err(KeyError::Missing));
    assert_eq!(a.check_publish(Some(b"Basic abc")), Err(KeyError::Missing));
    assert_eq!(a.check_publish(Some(b"Bearer ")), Err(KeyError::Missing));
    assert_eq!(
        a.check_publish(Some(b"Bearer old-key-012345678")),
        Err(KeyError::Wrong)
    );
    assert_eq!(a.check_publish(Some(b"Bearer old-key-0123456789")), Ok(()));
    assert_eq!(
        a.check_publish(Some(b"bearer  new-key-0123456789 ")),
        Ok(())
    );
    let short = Auth::load(&Sources {
        publish_keys: vec!["short".into()],
        ..Sources::default()
    });
    assert!(short.unwrap_err().contains("at least 16"));
}

#[test]
fn constant_time_compare() {
    assert_eq!(ct_eq(b"abc", b"abc"), 1);
    assert_eq!(ct_eq(b"abc", b"abd"), 0);
    assert_eq!(ct_eq(b"abc", b"ab"), 0);
    for d in 1..=255u8 {
        assert_eq!(ct_eq(&[0], &[d]), 0);
    }
}
