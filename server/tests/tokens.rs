//! Tokens minted by an integrator's backend: HS256 with a shared secret, RS256 and ES256 with the
//! keys of a real JWKS endpoint (served by the test, keys made by `openssl`), grants that hold only
//! for the token that carries them, and every bad token refused with a typed 401.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{TestServer, WsClient};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "the-backend-and-rally-share-this-secret";
const ISSUER: &str = "https://backend.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "rally", "iss": ISSUER, "exp": now() + 600})
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn hs_server(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--guest-sign-in",
        "false",
    ];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// (status, error code, message) of an API answer.
async fn answer(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn whoami(server: &TestServer, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.url("/api/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The status of a WebSocket upgrade carrying `token` (101 when accepted).
async fn upgrade_status(server: &TestServer, token: &str) -> u16 {
    let url = server.url(&format!("/ws?token={token}"));
    reqwest::Client::new()
        .get(url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn update_title(client: &mut WsClient, campaign: &str, title: &str, id: &str) -> Value {
    client.update(campaign, json!({"title": title}), id).await
}

#[tokio::test]
async fn backend_tokens_sign_people_in_and_grant_roles_only_while_they_carry_them() {
    let server = hs_server(&[]).await;
    let http = reqwest::Client::new();
    let mut owner_claims = claims("owner-1");
    owner_claims["name"] = json!("Olive");
    let owner = hs256(&owner_claims);
    let (status, me) = whoami(&server, &owner).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["user_id"], "owner-1");
    assert_eq!(me["user"]["display_name"], "Olive");

    // Guests are off; a token's name is the backend's to change.
    let guest = http
        .post(server.url("/api/session"))
        .json(&json!({"display_name": "Mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(guest).await.0, 403);
    let rename = http
        .post(server.url("/api/session"))
        .bearer_auth(&owner)
        .json(&json!({"display_name": "Eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(rename).await.0, 403);

    let mut olive = server.connect_as(&owner).await;
    olive.create_campaign("spring", "Spring").await;

    // A grant for spring (and one for a campaign that does not exist).
    let mut granted_claims = claims("ed-2");
    granted_claims["campaigns"] = json!({"spring": "editor", "ghost": "owner"});
    let granted = hs256(&granted_claims);
    let mut editor = server.connect_as(&granted).await;
    let reply = update_title(&mut editor, "spring", "Spring 2027", "u1").await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    let snapshot: Value = http
        .get(server.url("/api/campaigns/spring"))
        .bearer_auth(&granted)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["role"], "editor");

    // The same person without the grant: nothing was stored.
    let plain = hs256(&claims("ed-2"));
    let mut without = server.connect_as(&plain).await;
    let reply = update_title(&mut without, "spring", "Nope", "u2").await;
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");

    // A grant for a campaign that does not exist creates nothing.
    let ghost = http
        .get(server.url("/api/campaigns/ghost"))
        .bearer_auth(&granted)
        .send()
        .await
        .unwrap();
    assert_eq!(answer(ghost).await.0, 404);
    let list: Value = http
        .get(server.url("/api/campaigns"))
        .bearer_auth(&granted)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["spring"]);
    // Nor does acting on it, on any path: each answers as for any missing campaign.
    let reply = update_title(&mut editor, "ghost", "Boo", "g1").await;
    assert_eq!(reply["payload"]["code"], "not_found", "{reply}");
    let reply = editor
        .request(
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "ghost"}),
            "g2",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "not_found", "{reply}");
    let invite = http
        .post(server.url("/api/campaigns/ghost/invites"))
        .bearer_auth(&granted)
        .send()
        .await
        .unwrap();
    assert_eq!(answer(invite).await.0, 404);
    let created = olive.create_campaign("ghost", "Real now").await;
    assert_eq!(created["payload"]["campaign"]["version"], 1, "{created}");
    assert_eq!(
        created["payload"]["campaign"]["created_by"]["display_name"], "Olive",
        "the first to create it owns it: {created}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_typed_401_on_every_path() {
    let server = hs_server(&[]).await;
    let good = hs256(&claims("ada"));
    let (head, rest) = good.split_once('.').unwrap();
    let (body, signature) = rest.split_once('.').unwrap();
    let flipped = {
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[0] ^= 1;
        URL_SAFE_NO_PAD.encode(sig)
    };
    let with = |key: &str, value: Value| {
        let mut c = claims("ada");
        c[key] = value;
        c
    };
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let rs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims("ada"),
        &EncodingKey::from_secret(b"not-the-secret-rally-knows-at-all!!"),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "tampered signature",
            format!("{head}.{body}.{flipped}"),
            "signature is invalid",
        ),
        ("another secret", other_secret, "signature is invalid"),
        (
            "tampered claims",
            format!(
                "{head}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(with("sub", json!("admin")).to_string())
            ),
            "signature is invalid",
        ),
        (
            "expired",
            hs256(&with("exp", json!(now() - 120))),
            "expired",
        ),
        (
            "not yet valid",
            hs256(&with("nbf", json!(now() + 120))),
            "not valid yet",
        ),
        (
            "wrong audience",
            hs256(&with("aud", json!("billing"))),
            "another audience",
        ),
        (
            "wrong issuer",
            hs256(&with("iss", json!("https://evil.test"))),
            "another issuer",
        ),
        ("alg none", format!("{none_header}.{body}."), "malformed"),
        (
            "unknown key",
            format!("{rs_header}.{body}.{signature}"),
            "unknown key",
        ),
        (
            "bad sub",
            hs256(&with("sub", json!("no spaces allowed"))),
            "sub",
        ),
        (
            "bad grant",
            hs256(&with("campaigns", json!({"x": "emperor"}))),
            "malformed",
        ),
        ("garbage", "a.b.c".to_owned(), "malformed"),
    ];
    for (what, token, says) in cases {
        let response = reqwest::Client::new()
            .get(server.url("/api/session"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, code, message) = answer(response).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{what}: {message}"
        );
        assert!(message.contains(says), "{what}: {message}");
        assert_eq!(upgrade_status(&server, &token).await, 401, "{what} on /ws");
    }
    assert_eq!(upgrade_status(&server, &good).await, 101);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_open_connection_closes_when_its_token_expires() {
    let server = hs_server(&["--jwt-leeway-secs", "0"]).await;
    let owner = hs256(&claims("owner-1"));
    let mut olive = server.connect_as(&owner).await;
    olive.create_campaign("brief", "Brief").await;
    let short = hs256(&{
        let mut c = claims("viewer-9");
        c["exp"] = json!(now() + 2);
        c
    });
    let mut watching = server.connect_as(&short).await;
    watching.subscribe("brief", None).await;
    let started = Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(4), watching.socket.next_close())
        .await
        .expect("closed within 4 s of a 2 s token");
    assert_eq!(code, Some(4011));
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

/// Closing helpers for a raw socket.
trait NextClose {
    async fn next_close(&mut self) -> Option<u16>;
}

impl NextClose
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn next_close(&mut self) -> Option<u16> {
        use futures_util::StreamExt;
        while let Some(message) = self.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    }
}

/// A key pair made by `openssl`, as a signing key and its public JWK.
struct KeyPair {
    signing: EncodingKey,
    jwk: Value,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
    output.stdout
}

fn rsa_key(dir: &std::path::Path, kid: &str) -> KeyPair {
    let path = dir.join(format!("{kid}.pem"));
    let path = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    KeyPair {
        signing: EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(bytes), "e": "AQAB"}),
    }
}

fn ec_key(dir: &std::path::Path, kid: &str) -> KeyPair {
    let path = dir.join(format!("{kid}.pem"));
    let path = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path,
    ]);
    let der = openssl(&["pkey", "-in", path, "-pubout", "-outform", "DER"]);
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4, "an uncompressed point");
    KeyPair {
        signing: EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap(),
        jwk: json!({"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
    }
}

fn signed_by(key: &KeyPair, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &key.signing).unwrap()
}

/// A JWKS endpoint whose keys the test can change; how many times it was fetched.
async fn jwks_endpoint(keys: Arc<Mutex<Vec<Value>>>, fetches: Arc<Mutex<u32>>) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (keys, fetches) = (keys.clone(), fetches.clone());
            async move {
                *fetches.lock().unwrap() += 1;
                axum::Json(json!({ "keys": *keys.lock().unwrap() }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_keys_come_from_the_jwks_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_a, rsa_b, ec) = (
        rsa_key(dir.path(), "rsa-a"),
        rsa_key(dir.path(), "rsa-b"),
        ec_key(dir.path(), "ec-1"),
    );
    let keys = Arc::new(Mutex::new(vec![rsa_a.jwk.clone(), ec.jwk.clone()]));
    let fetches = Arc::new(Mutex::new(0));
    let url = jwks_endpoint(keys.clone(), fetches.clone()).await;
    let server = TestServer::start_with(&["--jwt-jwks-url", &url, "--jwt-issuer", ISSUER]).await;

    let by_rsa = signed_by(&rsa_a, Algorithm::RS256, "rsa-a", &claims("rita"));
    assert_eq!(whoami(&server, &by_rsa).await.1["user"]["user_id"], "rita");
    let by_ec = signed_by(&ec, Algorithm::ES256, "ec-1", &claims("eli"));
    assert_eq!(whoami(&server, &by_ec).await.1["user"]["user_id"], "eli");
    assert_eq!(upgrade_status(&server, &by_ec).await, 101);
    assert_eq!(*fetches.lock().unwrap(), 1, "the key set is cached");
    // No shared secret is configured: HS256 cannot be checked, whatever it is signed with.
    assert_eq!(whoami(&server, &hs256(&claims("rita"))).await.0, 401);
    // An RSA key claiming to be the EC one.
    let confused = signed_by(&rsa_a, Algorithm::RS256, "ec-1", &claims("rita"));
    assert_eq!(whoami(&server, &confused).await.0, 401);

    // The provider rotates to a new key: unknown at first, accepted once published (the set is
    // fetched again at most every 10 s).
    let by_new = signed_by(&rsa_b, Algorithm::RS256, "rsa-b", &claims("rita"));
    let (status, body) = whoami(&server, &by_new).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown key"));
    keys.lock().unwrap().push(rsa_b.jwk.clone());
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    let (status, body) = whoami(&server, &by_new).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await.unwrap();

    // Keys that cannot be fetched: try again later (503), not "you are nobody" (401).
    let unreachable = TestServer::start_with(&[
        "--jwt-jwks-url",
        "http://127.0.0.1:9/jwks.json",
        "--jwt-issuer",
        ISSUER,
    ])
    .await;
    let response = reqwest::Client::new()
        .get(unreachable.url("/api/session"))
        .bearer_auth(&by_rsa)
        .send()
        .await
        .unwrap();
    let (status, code, _) = answer(response).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    unreachable.stop().await.unwrap();
}

/// `POST /auth/token`: a page the server trusts hands a browser its token; the cookie it sets
/// is the token (grants and all) until the token expires. Bad tokens and untrusted pages sign
/// nobody in; the OpenID Connect routes do not exist without a provider.
#[tokio::test]
async fn a_trusted_page_hands_a_browser_its_token() {
    let server = hs_server(&["--allowed-origins", "https://app.example"]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |origin: Option<&str>, body: String| {
        let mut request = http
            .post(server.url("/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let token = hs256(&claims("handed-1"));

    let accepted = post(
        Some("https://app.example"),
        format!("token={token}&return_to=%2Fcampaigns%2Fx"),
    )
    .await
    .unwrap();
    assert_eq!(accepted.status(), 303);
    assert_eq!(accepted.headers()["location"], "/campaigns/x");
    let cookie = accepted.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("rally_session={token};")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (590..=600 + 30).contains(&max_age),
        "until the token expires: {max_age}"
    );
    // The cookie works like the bearer token.
    let me = http
        .get(server.url("/api/session"))
        .header("cookie", format!("rally_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // Elsewhere than this site is never a place to return to.
    let offsite = post(
        Some("https://app.example"),
        format!("token={token}&return_to=%2F%2Fevil.example"),
    )
    .await
    .unwrap();
    assert_eq!(offsite.headers()["location"], "/");

    let mut expired = claims("handed-1");
    expired["exp"] = json!(now() - 120);
    let cases = [
        (
            Some("https://app.example"),
            format!("token={}", hs256(&expired)),
            401,
            "token has expired",
        ),
        (
            Some("https://app.example"),
            "token=not-a-token".to_owned(),
            401,
            "token is malformed",
        ),
        (
            Some("https://evil.example"),
            format!("token={token}"),
            403,
            "not one Rally trusts",
        ),
    ];
    for (origin, body, status, reason) in cases {
        let refused = post(origin, body).await.unwrap();
        assert_eq!(refused.status(), status, "{reason}");
        assert!(refused.headers().get("set-cookie").is_none(), "{reason}");
        let page = refused.text().await.unwrap();
        assert!(page.contains(reason), "{reason}: {page}");
    }
    let oversized = post(
        Some("https://app.example"),
        format!("token={}", "a".repeat(20_000)),
    )
    .await
    .unwrap();
    assert_eq!(oversized.status(), 413);
    assert!(oversized.text().await.unwrap().contains("over 16384 bytes"));

    let options: Value = http
        .get(server.url("/api/sign-in"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(options, json!({"guests": false, "provider": null}));
    for path in ["/auth/oidc/start", "/auth/oidc/callback?code=x&state=y"] {
        let missing = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
    }
    server.stop().await.unwrap();
}
