//! The JWT part of the attack catalogue (J1–J17), over HTTP: each forged token is sent as a
//! bearer token and as a JWT cookie to `GET /auth/whoami`, and must get a 401 (never a 5xx).

use crate::support::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cloakroom::jwt::SigningKey;
use ring::hmac;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Ctx {
    t: TestServer,
    key: SigningKey,
    kid: String,
    claims: Value,
    now: i64,
}

impl Ctx {
    async fn new() -> Self {
        let t = TestServer::start().await;
        t.signup("jwt@example.com", PASSWORD).await;
        let pair = t.token_login("jwt@example.com", PASSWORD).await;
        let token = pair["access_token"].as_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let ring = t.auth().key_ring();
        let key = ring.signing().unwrap().clone();
        let kid = key.verify_key().kid().to_string();
        let now = t.clock.now_ts();
        Self {
            t,
            key,
            kid,
            claims,
            now,
        }
    }

    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    /// Signs raw header and payload text with the server's real key.
    fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = self.key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    fn claims_with(&self, f: impl FnOnce(&mut Value)) -> String {
        let mut c = self.claims.clone();
        f(&mut c);
        self.sign(&self.header(), &c)
    }

    async fn accepted(&self, token: &str) -> bool {
        let bearer = self.t.bearer_status(token).await;
        let cookie = self.t.whoami_status(token).await;
        assert!(bearer == 200 || bearer == 401, "bearer answered {bearer}");
        assert!(cookie == 200 || cookie == 401, "cookie answered {cookie}");
        bearer == 200
    }

    async fn refused(&self, token: &str, what: &str) {
        let what = format!("{what:.80}");
        // Always also straight through the engine, which is what every transport calls.
        let engine = self.t.auth().authenticate_bearer(token).await;
        assert!(
            matches!(engine, Err(cloakroom::AuthError::Unauthenticated)),
            "engine accepted: {what}"
        );
        if reqwest::header::HeaderValue::from_str(token).is_err() {
            return; // not sendable in a header at all
        }
        let bearer = self.t.bearer_status(token).await;
        assert_eq!(bearer, 401, "bearer accepted: {what}");
        let cookie = self.t.whoami_status(token).await;
        assert!(
            cookie == 401 || cookie == 431,
            "cookie answered {cookie}: {what}"
        );
    }
}

trait NowTs {
    fn now_ts(&self) -> i64;
}
impl NowTs for cloakroom::ManualClock {
    fn now_ts(&self) -> i64 {
        cloakroom::Clock::now(self).unix_timestamp()
    }
}

#[tokio::test]
async fn control_a_correctly_forged_token_is_accepted() {
    let c = Ctx::new().await;
    assert!(c.accepted(&c.sign(&c.header(), &c.claims)).await);
}

#[tokio::test]
async fn j1_alg_none_in_every_spelling() {
    let c = Ctx::new().await;
    let good = c.sign(&c.header(), &c.claims);
    let sig = good.rsplit('.').next().unwrap().to_string();
    let payload = b64(c.claims.to_string().as_bytes());
    for alg in [
        json!("none"),
        json!("None"),
        json!("NONE"),
        json!("nOnE"),
        json!(""),
        Value::Null,
        json!(1),
        json!(["EdDSA"]),
        json!({"alg": "EdDSA"}),
    ] {
        let header = b64(json!({"alg": alg, "typ": "at+jwt", "kid": c.kid})
            .to_string()
            .as_bytes());
        c.refused(
            &format!("{header}.{payload}.{sig}"),
            &format!("alg {alg} with signature"),
        )
        .await;
        c.refused(
            &format!("{header}.{payload}."),
            &format!("alg {alg} without signature"),
        )
        .await;
    }
    let header = b64(json!({"typ": "at+jwt", "kid": c.kid})
        .to_string()
        .as_bytes());
    c.refused(&format!("{header}.{payload}.{sig}"), "no alg")
        .await;
}

#[tokio::test]
async fn j2_key_confusion() {
    let c = Ctx::new().await;
    let jwk = c.key.verify_key().to_jwk().unwrap();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        x.clone(),
        jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        jwk.to_string().into_bytes(),
        STANDARD.encode(&x).into_bytes(),
        format!("{}\n", STANDARD.encode(&x)).into_bytes(),
    ];
    let payload = b64(c.claims.to_string().as_bytes());
    for secret in secrets {
        let header = b64(json!({"alg": "HS256", "typ": "at+jwt", "kid": c.kid})
            .to_string()
            .as_bytes());
        let input = format!("{header}.{payload}");
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        c.refused(
            &format!("{input}.{}", b64(mac.as_ref())),
            "HS256 keyed with the public key",
        )
        .await;
    }
    for alg in ["ES256", "RS256", "PS256", "HS256"] {
        let token = c.sign(
            &json!({"alg": alg, "typ": "at+jwt", "kid": c.kid}),
            &c.claims,
        );
        c.refused(&token, &format!("EdDSA key with alg {alg}"))
            .await;
    }
}

#[tokio::test]
async fn j3_j4_structure_and_strict_base64url() {
    let c = Ctx::new().await;
    let good = c.sign(&c.header(), &c.claims);
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let mut flipped = URL_SAFE_NO_PAD.decode(s).unwrap();
    flipped[10] ^= 1;
    let cases = vec![
        format!("{h}.{p}."),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.x"),
        format!("{h}.{p}.{s}.x.y"),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        json!({"protected": h, "payload": p, "signature": s}).to_string(),
        String::new(),
        format!(" {good}"),
        format!("{good}\n"),
        format!("{h}.{p}.{}", &s[..s.len() - 4]),
        format!("{h}.{p}.{}", b64(&flipped)),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
        format!("{h}.{} {}.{s}", &p[..5], &p[5..]),
        format!("{h}.{}\n{}.{s}", &p[..5], &p[5..]),
    ];
    for token in cases {
        // A signature with no `-` or `_` has no standard-alphabet twin: that case is the good
        // token itself (about one run in 15).
        if token == good {
            continue;
        }
        c.refused(&token, &format!("{token:.60}")).await;
    }
    // Non-canonical trailing bits: same bytes, different text.
    let last = p.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    if p.len() % 4 != 0 {
        let twin = &alphabet[idx + 1..idx + 2];
        let p2 = format!("{}{twin}", &p[..p.len() - 1]);
        if URL_SAFE_NO_PAD.decode(&p2).is_err() {
            c.refused(&format!("{h}.{p2}.{s}"), "non-canonical trailing bits")
                .await;
        }
    }
}

#[tokio::test]
async fn j5_j6_bad_signatures_and_weak_secrets() {
    let c = Ctx::new().await;
    let good = c.sign(&c.header(), &c.claims);
    let input = good.rsplit_once('.').unwrap().0;
    c.refused(
        &format!("{input}.{}", b64(&[0u8; 64])),
        "Ed25519 signature of zeros",
    )
    .await;
    c.refused(&format!("{input}.{}", b64(&[0u8; 65])), "wrong length")
        .await;
    let payload = b64(c.claims.to_string().as_bytes());
    for secret in ["", "secret", "your-256-bit-secret", "password"] {
        let header = b64(json!({"alg": "HS256", "typ": "at+jwt", "kid": c.kid})
            .to_string()
            .as_bytes());
        let input = format!("{header}.{payload}");
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            input.as_bytes(),
        );
        c.refused(&format!("{input}.{}", b64(mac.as_ref())), secret)
            .await;
    }
}

#[tokio::test]
async fn j7_kid_abuse_is_a_fast_plain_lookup() {
    let c = Ctx::new().await;
    let kids = vec![
        json!("unknown"),
        json!(""),
        json!("../../../../dev/null"),
        json!("/dev/null"),
        json!("x' UNION SELECT '1';--"),
        json!("|sleep 10"),
        json!("k".repeat(10_000)),
        json!(42),
        json!("a\u{0}b"),
        json!("a\r\nb"),
        Value::Null,
    ];
    for kid in kids {
        let start = Instant::now();
        let token = c.sign(
            &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}),
            &c.claims,
        );
        c.refused(&token, &format!("kid {kid:.40}")).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "kid {kid:.40} took {:?}",
            start.elapsed()
        );
    }
    let token = c.sign(&json!({"alg": "EdDSA", "typ": "at+jwt"}), &c.claims);
    c.refused(&token, "no kid").await;
    // MAC'd with "1", as the SQL injection would have it.
    let header = b64(
        json!({"alg": "HS256", "typ": "at+jwt", "kid": "x' UNION SELECT '1';--"})
            .to_string()
            .as_bytes(),
    );
    let input = format!("{header}.{}", b64(c.claims.to_string().as_bytes()));
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"1"), input.as_bytes());
    c.refused(
        &format!("{input}.{}", b64(mac.as_ref())),
        "kid injection MAC'd with 1",
    )
    .await;
}

#[tokio::test]
async fn j8_header_supplied_keys_are_never_used_or_fetched() {
    let c = Ctx::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let attacker = SigningKey::generate(
        cloakroom::jwt::Algorithm::EdDSA,
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .unwrap()
    .0;
    let mut attacker_jwk = attacker.verify_key().to_jwk().unwrap();
    attacker_jwk["kid"] = json!(c.kid);
    let sign_attacker = |header: Value| {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(c.claims.to_string().as_bytes())
        );
        format!("{input}.{}", b64(&attacker.sign(input.as_bytes()).unwrap()))
    };
    for extra in [
        ("jwk", attacker_jwk.clone()),
        ("jku", json!(url)),
        ("x5u", json!(url)),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUW"])),
    ] {
        let mut header = c.header();
        header[extra.0] = extra.1.clone();
        c.refused(&sign_attacker(header.clone()), extra.0).await;
        // Even signed by the real key, a header with these members is refused.
        c.refused(
            &c.sign(&header, &c.claims),
            &format!("{} with a real signature", extra.0),
        )
        .await;
    }
    let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        connected.is_err(),
        "the server fetched a header-supplied URL"
    );
}

#[tokio::test]
async fn j9_typ() {
    let c = Ctx::new().await;
    for typ in [
        Value::Null,
        json!("JWT"),
        json!("secevent+jwt"),
        json!("JOSE"),
        json!("at+jwt "),
        json!(1),
    ] {
        let mut h = c.header();
        h["typ"] = typ.clone();
        c.refused(&c.sign(&h, &c.claims), &format!("typ {typ}"))
            .await;
    }
    let mut h = c.header();
    h.as_object_mut().unwrap().remove("typ");
    c.refused(&c.sign(&h, &c.claims), "no typ").await;
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+Jwt",
    ] {
        let mut h = c.header();
        h["typ"] = json!(typ);
        assert!(c.accepted(&c.sign(&h, &c.claims)).await, "typ {typ}");
    }
}

#[tokio::test]
async fn j10_crit_and_unknown_header_members() {
    let c = Ctx::new().await;
    for (k, v) in [
        ("crit", json!(["foo"])),
        ("crit", json!([])),
        ("crit", json!(["b64"])),
        ("b64", json!(false)),
        ("cty", json!("JWT")),
        ("crit", json!(["exp"])),
        ("zip", json!("DEF")),
    ] {
        let mut h = c.header();
        h[k] = v.clone();
        if k == "crit" && v == json!(["b64"]) {
            h["b64"] = json!(false);
        }
        c.refused(&c.sign(&h, &c.claims), &format!("{k}: {v}"))
            .await;
    }
}

#[tokio::test]
async fn j11_duplicate_members() {
    let c = Ctx::new().await;
    let claims = c.claims.to_string();
    let header = format!(
        r#"{{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"{}"}}"#,
        c.kid
    );
    c.refused(&c.sign_raw(&header, &claims), "duplicate alg")
        .await;
    for (name, value) in [
        ("sub", json!("someone-else")),
        ("exp", json!(c.now + 99_999)),
        ("sid", json!("00000000-0000-4000-8000-000000000000")),
    ] {
        let dup = format!("{},\"{name}\":{value}}}", &claims[..claims.len() - 1]);
        c.refused(
            &c.sign_raw(&c.header().to_string(), &dup),
            &format!("duplicate {name}"),
        )
        .await;
    }
}

#[tokio::test]
async fn j12_json_shapes() {
    let c = Ctx::new().await;
    let h = c.header().to_string();
    let claims = c.claims.to_string();
    for payload in [
        "[]".to_string(),
        "\"string\"".into(),
        "42".into(),
        "null".into(),
        format!("\u{feff}{claims}"),
        format!("{claims}garbage"),
        format!("{claims} {{}}"),
        claims.replace("\"sub\":\"", "\"sub\":\"\\ud800"),
        claims.replace(&format!("\"iat\":{}", c.claims["iat"]), "\"iat\":NaN"),
        claims.replace(&format!("\"exp\":{}", c.claims["exp"]), "\"exp\":1e400"),
    ] {
        c.refused(&c.sign_raw(&h, &payload), &format!("payload {payload:.50}"))
            .await;
    }
    for header in ["[]", "\"EdDSA\"", "null", "1"] {
        c.refused(&c.sign_raw(header, &claims), &format!("header {header}"))
            .await;
    }
    // Invalid UTF-8.
    let input = format!("{}.{}", b64(h.as_bytes()), b64(b"{\"sub\":\"\xff\"}"));
    let sig = c.key.sign(input.as_bytes()).unwrap();
    c.refused(&format!("{input}.{}", b64(&sig)), "invalid UTF-8")
        .await;
}

#[tokio::test]
async fn j13_size_and_depth() {
    let c = Ctx::new().await;
    let big = c.claims_with(|cl| cl["pad"] = json!("x".repeat(9000)));
    let start = Instant::now();
    c.refused(&big, "over 8 KiB").await;
    assert!(start.elapsed() < Duration::from_millis(200));
    let res =
        c.t.bearer(reqwest::Method::GET, "/auth/whoami", &".".repeat(1 << 20))
            .await;
    assert!(
        res.status() == 401 || res.status() == 431,
        "{}",
        res.status()
    );
    let deep = format!("{}{}", "[".repeat(4000), "]".repeat(4000));
    c.refused(&c.sign_raw(&c.header().to_string(), &deep), "deep nesting")
        .await;
    let mut h = c.header();
    for i in 0..1000 {
        h[format!("m{i}")] = json!(i);
    }
    c.refused(&c.sign(&h, &c.claims), "1000 header members")
        .await;
}

#[tokio::test]
async fn j14_claim_types() {
    let c = Ctx::new().await;
    let exp = c.claims["exp"].as_i64().unwrap();
    for claim in ["exp", "iat", "nbf"] {
        for bad in [
            json!(exp.to_string()),
            json!(exp as f64 + 0.5),
            json!(-1),
            Value::Null,
            json!(true),
            json!([exp]),
            json!(1e300),
            json!(u64::MAX),
        ] {
            let token = c.claims_with(|cl| cl[claim] = bad.clone());
            c.refused(&token, &format!("{claim}: {bad}")).await;
        }
    }
    for claim in ["sub", "sid", "jti", "iss", "client_id"] {
        let token = c.claims_with(|cl| cl[claim] = json!(123));
        c.refused(&token, &format!("{claim} a number")).await;
    }
}

#[tokio::test]
async fn j15_time_boundaries() {
    let c = Ctx::new().await;
    let now = c.now;
    let l = 60;
    let with = |exp: i64, iat: i64, nbf: Option<i64>| {
        c.claims_with(|cl| {
            cl["exp"] = json!(exp);
            cl["iat"] = json!(iat);
            if let Some(n) = nbf {
                cl["nbf"] = json!(n);
            }
        })
    };
    assert!(
        c.accepted(&with(now - l + 1, now - 600, None)).await,
        "inside the leeway"
    );
    c.refused(
        &with(now - l - 1, now - 600, None),
        "expired beyond the leeway",
    )
    .await;
    c.refused(&with(now - l, now - 600, None), "at exp + leeway")
        .await;
    c.refused(
        &with(now + 600, now, Some(now + l + 1)),
        "nbf beyond the leeway",
    )
    .await;
    assert!(
        c.accepted(&with(now + 600, now, Some(now + l - 1))).await,
        "nbf inside the leeway"
    );
    c.refused(&with(now + 700, now + l + 1, None), "issued in the future")
        .await;
    c.refused(&with(now + 3600, now, None), "longer than we ever mint")
        .await;
    for missing in ["exp", "iat"] {
        let token = c.claims_with(|cl| {
            cl.as_object_mut().unwrap().remove(missing);
        });
        c.refused(&token, &format!("no {missing}")).await;
    }
}

#[tokio::test]
async fn j16_iss_and_aud_are_exact() {
    let c = Ctx::new().await;
    let iss = c.claims["iss"].as_str().unwrap().to_string();
    for bad in [
        Value::Null,
        json!(format!("{iss}/")),
        json!(iss.to_uppercase()),
        json!(format!("{iss}.evil")),
        json!(&iss[..iss.len() - 1]),
        json!(format!("x{iss}")),
        json!([iss.clone()]),
    ] {
        c.refused(
            &c.claims_with(|cl| cl["iss"] = bad.clone()),
            &format!("iss {bad}"),
        )
        .await;
    }
    c.refused(
        &c.claims_with(|cl| {
            cl.as_object_mut().unwrap().remove("iss");
        }),
        "no iss",
    )
    .await;
    for bad in [
        Value::Null,
        json!(""),
        json!("https://someone-else.example"),
        json!(["https://a.example", "https://b.example"]),
        json!([]),
    ] {
        c.refused(
            &c.claims_with(|cl| cl["aud"] = bad.clone()),
            &format!("aud {bad}"),
        )
        .await;
    }
    c.refused(
        &c.claims_with(|cl| {
            cl.as_object_mut().unwrap().remove("aud");
        }),
        "no aud",
    )
    .await;
    let ours = c.claims["aud"].clone();
    assert!(
        c.accepted(&c.claims_with(|cl| cl["aud"] = json!(["https://other.example", ours])))
            .await
    );
}

#[tokio::test]
async fn j17_binding_claims() {
    let c = Ctx::new().await;
    for claim in ["sid", "jti", "sub", "client_id"] {
        c.refused(
            &c.claims_with(|cl| {
                cl.as_object_mut().unwrap().remove(claim);
            }),
            &format!("no {claim}"),
        )
        .await;
    }
    c.refused(
        &c.claims_with(|cl| cl["sid"] = json!("6f0e7d1c-0000-4000-8000-000000000000")),
        "unknown sid",
    )
    .await;
    c.refused(
        &c.claims_with(|cl| cl["sid"] = json!("not-a-uuid")),
        "malformed sid",
    )
    .await;
    // A real session of another user.
    c.t.signup("other@example.com", PASSWORD).await;
    let other = c.t.token_login("other@example.com", PASSWORD).await;
    let other_payload = other["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let other_claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(other_payload).unwrap()).unwrap();
    c.refused(
        &c.claims_with(|cl| cl["sid"] = other_claims["sid"].clone()),
        "another user's sid",
    )
    .await;
    // An ended session.
    let sid = c.claims["sid"].as_str().unwrap().parse().unwrap();
    let token = c.sign(&c.header(), &c.claims);
    c.t.auth().admin_revoke(sid).await.unwrap();
    c.refused(&token, "ended session").await;
}

/// A token bound to a DPoP key (`cnf.jkt`), presented as a plain bearer token, is refused even
/// with a valid signature and session (RFC 9449 §7.1): without the key's proof a copy of it is
/// worth nothing. A malformed `cnf` is refused too.
#[tokio::test]
async fn j20_a_dpop_bound_token_presented_as_a_bearer_token_is_refused() {
    let c = Ctx::new().await;
    let bound = c.claims_with(|cl| {
        cl["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    });
    c.refused(&bound, "cnf.jkt as bearer").await;
    for cnf in [
        json!({}),
        json!({"jkt": ""}),
        json!({"jkt": 5}),
        json!({"x5t#S256": "a"}),
    ] {
        let token = c.claims_with(|cl| cl["cnf"] = cnf.clone());
        c.refused(&token, &format!("cnf {cnf}")).await;
    }
    // The one rule the remote verifier applies as well.
    let claims: cloakroom::jwt::AccessClaims = serde_json::from_value({
        let mut cl = c.claims.clone();
        cl["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
        cl
    })
    .unwrap();
    assert_eq!(
        claims.usable_as_bearer(),
        Err(cloakroom::jwt::VerifyError::Bound)
    );
}
