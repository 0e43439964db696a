//! A small in-process OpenID Connect identity provider for the SSO tests: the gateway is the
//! relying party, this is the provider it discovers, sends people to and trades codes with.
//!
//! - `GET /.well-known/openid-configuration`: the discovery document;
//! - `GET /jwks`: the RSA signing key's public half (one key, RS256);
//! - `GET /authorize`: no login page: whoever [`MockOidc::set_user`] named "signs in" at
//!   once and is sent back to `redirect_uri` with a single-use code (PKCE S256 required);
//! - `POST /token`: the code for an access token and an RS256 ID token (client
//!   authentication by HTTP Basic or in the form);
//! - `GET /userinfo`: the user's claims for a Bearer access token.
//!
//! [`MockOidc::set_fault`] breaks the ID tokens in the ways a relying party must notice
//! (wrong nonce, audience or issuer, unsigned, signed by a stranger, expired).
//!
//! The RSA keys are generated once per process, never stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngCore;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long an authorization code may wait before it is traded.
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Someone who can sign in at the mock provider.
#[derive(Clone, Debug)]
pub struct MockUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub groups: Vec<String>,
}

/// How the ID tokens issued from now on are broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A correct token.
    None,
    /// `nonce` is "not-the-nonce".
    WrongNonce,
    /// `aud` is "someone-else".
    WrongAudience,
    /// `iss` is "http://evil.example".
    WrongIssuer,
    /// Header `alg` "none" and an empty signature.
    Unsigned,
    /// Signed by a key that is not in the JWKS (under the published `kid`).
    WrongKey,
    /// Expired ten minutes ago.
    Expired,
}

/// What an authorization code was issued for.
struct Grant {
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    user: MockUser,
    issued: Instant,
    used: bool,
}

struct Inner {
    user: Option<MockUser>,
    fault: Fault,
    token_calls: usize,
    last_authorize_query: Option<Vec<(String, String)>>,
    codes: HashMap<String, Grant>,
    access_tokens: HashMap<String, MockUser>,
}

struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the other tests' provider down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running provider; stops when dropped.
pub struct MockOidc {
    issuer: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockOidc {
    /// Starts on 127.0.0.1 (any port) for one client, serving in a tokio task.
    ///
    /// # Panics
    /// When no local port can be bound (see [`MockOidc::try_start`]).
    pub async fn start(client_id: &str, client_secret: &str) -> MockOidc {
        match Self::try_start(client_id, client_secret).await {
            Ok(m) => m,
            Err(e) => panic!("mock OIDC provider could not start: {e}"),
        }
    }

    /// [`MockOidc::start`], reporting a failure to bind instead of panicking.
    pub async fn try_start(client_id: &str, client_secret: &str) -> std::io::Result<MockOidc> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        // Generate the key now rather than inside the first request.
        let _ = keys();
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            inner: Mutex::new(Inner {
                user: None,
                fault: Fault::None,
                token_calls: 0,
                last_authorize_query: None,
                codes: HashMap::new(),
                access_tokens: HashMap::new(),
            }),
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockOidc {
            issuer,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: the issuer and the discovery base.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The person who "signs in" at the next `/authorize` (and every one after it).
    pub fn set_user(&self, user: MockUser) {
        self.shared.lock().user = Some(user);
    }

    /// Nobody is signed in: `/authorize` answers 400.
    pub fn clear_user(&self) {
        self.shared.lock().user = None;
    }

    /// How the ID tokens issued from now on are broken.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.lock().fault = fault;
    }

    /// How many `/token` requests arrived, good or bad.
    pub fn token_calls(&self) -> usize {
        self.shared.lock().token_calls
    }

    /// The query parameters of the last `/authorize` request (kept even when it was refused).
    pub fn last_authorize_query(&self) -> Option<Vec<(String, String)>> {
        self.shared.lock().last_authorize_query.clone()
    }
}

impl Drop for MockOidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(shared)
}

// ---- keys -----------------------------------------------------------------------------

struct Keys {
    signing: SigningKey<Sha256>,
    kid: String,
    /// The public key as a JWK.
    jwk: Value,
}

fn new_rsa_key() -> rsa::RsaPrivateKey {
    match rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048) {
        Ok(k) => k,
        Err(e) => panic!("mock OIDC provider could not generate an RSA key: {e}"),
    }
}

/// The published signing key, generated on first use.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = new_rsa_key();
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let kid = format!("mock-{}", &hex::encode(Sha256::digest(&n))[..16]);
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": b64url(&n),
            "e": b64url(&e),
        });
        Keys {
            signing: SigningKey::new(key),
            kid,
            jwk,
        }
    })
}

/// A second key whose public half is published nowhere, for [`Fault::WrongKey`].
fn stranger_key() -> &'static SigningKey<Sha256> {
    static KEY: OnceLock<SigningKey<Sha256>> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::new(new_rsa_key()))
}

// ---- handlers -------------------------------------------------------------------------

async fn discovery(State(st): State<Arc<Shared>>) -> Response {
    let iss = &st.issuer;
    axum::Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nonce",
            "email", "email_verified", "name", "groups"
        ],
    }))
    .into_response()
}

async fn jwks() -> Response {
    axum::Json(json!({"keys": [keys().jwk]})).into_response()
}

fn bad_request(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, reason.to_owned()).into_response()
}

async fn authorize(State(st): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut inner = st.lock();
    inner.last_authorize_query = Some(pairs.clone());
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if param("response_type") != Some("code") {
        return bad_request("response_type must be code");
    }
    if param("client_id") != Some(st.client_id.as_str()) {
        return bad_request("unknown client_id");
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return bad_request("redirect_uri is missing");
    };
    let Ok(mut location) = url::Url::parse(redirect_uri) else {
        return bad_request("redirect_uri is not an absolute URL");
    };
    if !param("scope").is_some_and(|s| s.split(' ').any(|s| s == "openid")) {
        return bad_request("scope must contain openid");
    }
    let Some(code_challenge) = param("code_challenge").filter(|c| !c.is_empty()) else {
        return bad_request("code_challenge is missing (PKCE is required)");
    };
    if param("code_challenge_method") != Some("S256") {
        return bad_request("code_challenge_method must be S256");
    }
    let Some(user) = inner.user.clone() else {
        return bad_request("nobody is signed in (MockOidc::set_user)");
    };

    let code = random_token();
    inner.codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: code_challenge.to_owned(),
            nonce: param("nonce").map(str::to_owned),
            user,
            issued: Instant::now(),
            used: false,
        },
    );
    {
        let mut q = location.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = param("state") {
            q.append_pair("state", state);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"mock-oidc\""),
        );
    }
    resp
}

/// The client's credentials: HTTP Basic (each half form-urlencoded, RFC 6749 §2.3.1) or
/// `client_id` and `client_secret` in the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let encoded = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))?;
        let decoded = String::from_utf8(b64_decode(encoded.trim())?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((form_decode(id)?, form_decode(secret)?));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

async fn token(State(st): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut inner = st.lock();
    inner.token_calls += 1;

    let client_ok = client_credentials(&headers, &form).is_some_and(|(id, secret)| {
        id == st.client_id
            && secret == st.client_secret
            && form.get("client_id").is_none_or(|f| *f == st.client_id)
    });
    if !client_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    let invalid_grant = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let Some(grant) = form.get("code").and_then(|c| inner.codes.get_mut(c)) else {
        return invalid_grant("unknown code");
    };
    if grant.used {
        return invalid_grant("code already used");
    }
    grant.used = true;
    if grant.issued.elapsed() > CODE_LIFETIME {
        return invalid_grant("code expired");
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    let Some(verifier) = form.get("code_verifier") else {
        return invalid_grant("code_verifier is missing");
    };
    if b64url(&Sha256::digest(verifier.as_bytes())) != grant.code_challenge {
        return invalid_grant("code_verifier does not match code_challenge");
    }
    let user = grant.user.clone();
    let nonce = grant.nonce.clone();

    let id_token = id_token(&st, inner.fault, &user, nonce.as_deref());
    let access_token = random_token();
    inner.access_tokens.insert(access_token.clone(), user);
    // Forget codes nobody can use any more.
    inner
        .codes
        .retain(|_, g| g.issued.elapsed() <= CODE_LIFETIME * 2);

    let mut resp = axum::Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": id_token,
        "scope": "openid email profile",
    }))
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

async fn userinfo(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = token.and_then(|t| st.lock().access_tokens.get(t).cloned());
    match user {
        Some(u) => axum::Json(user_claims(&u)).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response(),
    }
}

// ---- tokens ---------------------------------------------------------------------------

fn user_claims(u: &MockUser) -> Value {
    json!({
        "sub": u.sub,
        "email": u.email,
        "email_verified": u.email_verified,
        "name": u.name,
        "groups": u.groups,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The ID token for `user`, broken as `fault` says.
fn id_token(st: &Shared, fault: Fault, user: &MockUser, nonce: Option<&str>) -> String {
    let keys = keys();
    let now = unix_now();
    let (iat, exp) = if fault == Fault::Expired {
        (now - 900, now - 600)
    } else {
        (now, now + 300)
    };
    let mut claims = user_claims(user);
    claims["iss"] = json!(if fault == Fault::WrongIssuer {
        "http://evil.example"
    } else {
        st.issuer.as_str()
    });
    claims["aud"] = json!(if fault == Fault::WrongAudience {
        "someone-else"
    } else {
        st.client_id.as_str()
    });
    claims["iat"] = json!(iat);
    claims["exp"] = json!(exp);
    if fault == Fault::WrongNonce {
        claims["nonce"] = json!("not-the-nonce");
    } else if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }

    let alg = if fault == Fault::Unsigned {
        "none"
    } else {
        "RS256"
    };
    let header = json!({"alg": alg, "typ": "JWT", "kid": keys.kid});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = match fault {
        Fault::Unsigned => String::new(),
        Fault::WrongKey => b64url(&stranger_key().sign(signing_input.as_bytes()).to_vec()),
        _ => b64url(&keys.signing.sign(signing_input.as_bytes()).to_vec()),
    };
    format!("{signing_input}.{signature}")
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

// ---- encodings ------------------------------------------------------------------------

const B64_STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Base64url without padding (JWS, JWK, PKCE).
fn b64url(data: &[u8]) -> String {
    b64_encode(data, B64_URL, false)
}

/// Decodes standard base64 (padding optional), as in HTTP Basic credentials.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64_STANDARD.iter().position(|&a| a == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Undoes `application/x-www-form-urlencoded` for one value (`+` is a space).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use openidconnect::core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
        CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
        CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
        CoreTokenIntrospectionResponse, CoreTokenType,
    };
    use openidconnect::{
        AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, Client,
        ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
        EndpointSet, IdToken, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse,
        PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
        SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
        UserInfoClaims,
    };
    use serde::{Deserialize, Serialize};

    use super::*;

    // ---- the relying party's types: what the gateway needs, `groups` included ----

    /// The non-standard `groups` claim, absent meaning none.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct GroupsClaim {
        #[serde(default)]
        groups: Vec<String>,
    }
    impl AdditionalClaims for GroupsClaim {}

    type GroupsIdToken = IdToken<
        GroupsClaim,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >;
    type GroupsIdTokenFields = IdTokenFields<
        GroupsClaim,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >;
    type GroupsTokenResponse = StandardTokenResponse<GroupsIdTokenFields, CoreTokenType>;
    /// `CoreClient` with [`GroupsClaim`], in the state `from_provider_metadata` leaves it:
    /// auth URL set, token and userinfo URLs "maybe set".
    type SsoClient = Client<
        GroupsClaim,
        CoreAuthDisplay,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJsonWebKey,
        CoreAuthPrompt,
        StandardErrorResponse<CoreErrorResponseType>,
        GroupsTokenResponse,
        CoreTokenIntrospectionResponse,
        CoreRevocableToken,
        CoreRevocationErrorResponse,
        EndpointSet,
        EndpointNotSet,
        EndpointNotSet,
        EndpointNotSet,
        EndpointMaybeSet,
        EndpointMaybeSet,
    >;

    const CLIENT_ID: &str = "gateway";
    /// Characters that must be form-encoded inside HTTP Basic.
    const CLIENT_SECRET: &str = "s3cr3t:+/ &%x";
    const REDIRECT: &str = "http://127.0.0.1:9/sso/callback";

    fn alice() -> MockUser {
        MockUser {
            sub: "alice-1".into(),
            email: "alice@example.com".into(),
            email_verified: true,
            name: "Alice Example".into(),
            groups: vec!["admins".into(), "staff".into()],
        }
    }

    /// Never follows redirects: the relying party reads `Location` itself.
    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn provider() -> MockOidc {
        let mock = MockOidc::start(CLIENT_ID, CLIENT_SECRET).await;
        mock.set_user(alice());
        mock
    }

    async fn rp_client(mock: &MockOidc, http: &reqwest::Client) -> SsoClient {
        let meta = CoreProviderMetadata::discover_async(
            IssuerUrl::new(mock.issuer().to_owned()).unwrap(),
            http,
        )
        .await
        .unwrap();
        SsoClient::from_provider_metadata(
            meta,
            ClientId::new(CLIENT_ID.into()),
            Some(ClientSecret::new(CLIENT_SECRET.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
    }

    /// The browser's part: to `/authorize` and back; the code, the PKCE verifier and nonce.
    async fn sign_in(
        client: &SsoClient,
        http: &reqwest::Client,
    ) -> (AuthorizationCode, PkceCodeVerifier, Nonce) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let resp = http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = resp.headers()[header::LOCATION].to_str().unwrap();
        let back = url::Url::parse(location).unwrap();
        assert!(back.as_str().starts_with(REDIRECT), "{back}");
        let q: HashMap<String, String> = back.query_pairs().into_owned().collect();
        assert_eq!(q.get("state"), Some(csrf.secret()));
        (AuthorizationCode::new(q["code"].clone()), verifier, nonce)
    }

    fn error_of<T: std::fmt::Debug, RE: std::error::Error + 'static>(
        result: Result<T, RequestTokenError<RE, StandardErrorResponse<CoreErrorResponseType>>>,
    ) -> CoreErrorResponseType {
        match result {
            Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
            other => panic!("expected an OAuth error response, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn relying_party_signs_in_with_openidconnect() {
        let mock = provider().await;
        let http = http();
        let client = rp_client(&mock, &http).await;

        let (code, verifier, nonce) = sign_in(&client, &http).await;
        let query: HashMap<_, _> = mock.last_authorize_query().unwrap().into_iter().collect();
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["nonce"], *nonce.secret());
        assert!(query["scope"].split(' ').any(|s| s == "openid"));

        let token = client
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .unwrap();
        assert_eq!(mock.token_calls(), 1);
        let claims = token
            .id_token()
            .unwrap()
            .claims(&client.id_token_verifier(), &nonce)
            .unwrap();
        assert_eq!(claims.subject().as_str(), "alice-1");
        assert_eq!(
            claims.email().map(|e| e.as_str()),
            Some("alice@example.com")
        );
        assert_eq!(claims.email_verified(), Some(true));
        assert_eq!(
            claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
            Some("Alice Example")
        );
        assert_eq!(claims.additional_claims().groups, ["admins", "staff"]);

        let info: UserInfoClaims<GroupsClaim, CoreGenderClaim> = client
            .user_info(token.access_token().clone(), None)
            .unwrap()
            .request_async(&http)
            .await
            .unwrap();
        assert_eq!(info.subject().as_str(), "alice-1");
        assert_eq!(info.additional_claims().groups, ["admins", "staff"]);
    }

    #[tokio::test]
    async fn hand_driven_code_flow() {
        let mock = provider().await;
        let http = http();
        let iss = mock.issuer().to_owned();

        let doc: Value = http
            .get(format!("{iss}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], iss.as_str());
        assert_eq!(doc["token_endpoint"], format!("{iss}/token"));
        let jwks: Value = http
            .get(format!("{iss}/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(
            (&jwk["kty"], &jwk["use"], &jwk["alg"], &jwk["e"]),
            (
                &json!("RSA"),
                &json!("sig"),
                &json!("RS256"),
                &json!("AQAB")
            )
        );

        let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
        let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
        let redirect = "http://127.0.0.1:9/cb?keep=1";
        let authorize = |redirect_uri: &str, challenge: &str| {
            let mut u = url::Url::parse(&format!("{iss}/authorize")).unwrap();
            u.query_pairs_mut()
                .append_pair("response_type", "code")
                .append_pair("client_id", CLIENT_ID)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", "openid email")
                .append_pair("state", "st&te")
                .append_pair("nonce", "n-1")
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            http.get(u).send()
        };
        let resp = authorize(redirect, &challenge).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let back = url::Url::parse(resp.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let q: HashMap<String, String> = back.query_pairs().into_owned().collect();
        assert_eq!(q["keep"], "1");
        assert_eq!(q["state"], "st&te");
        let code = q["code"].clone();

        // client_secret_post
        let exchange = |code: &str, redirect_uri: &str, verifier: &str| {
            http.post(format!("{iss}/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                ])
                .send()
        };
        let resp = exchange(&code, redirect, verifier).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "openid email profile");
        let raw = body["id_token"].as_str().unwrap();
        let header: Value =
            serde_json::from_slice(&b64_decode_url(raw.split('.').next().unwrap())).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], jwk["kid"]);

        // The same token as a relying party sees it.
        let client = rp_client(&mock, &http).await;
        let id_token: GroupsIdToken = raw.parse().unwrap();
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new("n-1".into()))
            .unwrap();
        assert_eq!(claims.additional_claims().groups, ["admins", "staff"]);

        // Replayed code.
        let resp = exchange(&code, redirect, verifier).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );

        // Another redirect_uri at /token than at /authorize.
        let resp = authorize(redirect, &challenge).await.unwrap();
        let back = url::Url::parse(resp.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let resp = exchange(&code, "http://127.0.0.1:9/elsewhere", verifier)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
        assert_eq!(mock.token_calls(), 3);
    }

    /// Standard base64url back to bytes (test only).
    fn b64_decode_url(s: &str) -> Vec<u8> {
        b64_decode(&s.replace('-', "+").replace('_', "/")).unwrap()
    }

    #[tokio::test]
    async fn every_fault_fails_verification() {
        let mock = provider().await;
        let http = http();
        let client = rp_client(&mock, &http).await;
        for fault in [
            Fault::None,
            Fault::WrongNonce,
            Fault::WrongAudience,
            Fault::WrongIssuer,
            Fault::Unsigned,
            Fault::WrongKey,
            Fault::Expired,
        ] {
            mock.set_fault(fault);
            let (code, verifier, nonce) = sign_in(&client, &http).await;
            let token = client
                .exchange_code(code)
                .unwrap()
                .set_pkce_verifier(verifier)
                .request_async(&http)
                .await
                .unwrap();
            let verified = token
                .id_token()
                .unwrap()
                .claims(&client.id_token_verifier(), &nonce)
                .map(|c| c.email().map(|e| e.to_string()));
            let Err(error) = verified else {
                assert_eq!(fault, Fault::None, "{fault:?} passed verification");
                assert_eq!(verified.unwrap().as_deref(), Some("alice@example.com"));
                continue;
            };
            use ClaimsVerificationError as E;
            use SignatureVerificationError as S;
            let expected = match fault {
                Fault::None => false,
                Fault::WrongNonce => matches!(error, E::InvalidNonce(_)),
                Fault::WrongAudience => matches!(error, E::InvalidAudience(_)),
                Fault::WrongIssuer => matches!(error, E::InvalidIssuer(_)),
                Fault::Unsigned => matches!(error, E::SignatureVerification(S::NoSignature)),
                Fault::WrongKey => matches!(error, E::SignatureVerification(S::CryptoError(_))),
                Fault::Expired => matches!(error, E::Expired(_)),
            };
            assert!(expected, "{fault:?} failed for another reason: {error:?}");
        }
    }

    #[tokio::test]
    async fn token_endpoint_refusals() {
        let mock = provider().await;
        let http = http();
        let client = rp_client(&mock, &http).await;

        // A wrong PKCE verifier; the code is spent by the attempt.
        let (code, _verifier, _) = sign_in(&client, &http).await;
        let wrong = client
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(PkceCodeVerifier::new(
                "not-the-verifier-not-the-verifier-not-the-verifier".into(),
            ))
            .request_async(&http)
            .await;
        assert_eq!(error_of(wrong), CoreErrorResponseType::InvalidGrant);

        // A replayed code.
        let (code, verifier, _) = sign_in(&client, &http).await;
        let verifier2 = PkceCodeVerifier::new(verifier.secret().clone());
        let first = client
            .exchange_code(code.clone())
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await;
        assert!(first.is_ok());
        let replay = client
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(verifier2)
            .request_async(&http)
            .await;
        assert_eq!(error_of(replay), CoreErrorResponseType::InvalidGrant);

        // A client with the wrong secret.
        let (code, verifier, _) = sign_in(&client, &http).await;
        let meta = CoreProviderMetadata::discover_async(
            IssuerUrl::new(mock.issuer().to_owned()).unwrap(),
            &http,
        )
        .await
        .unwrap();
        let impostor = SsoClient::from_provider_metadata(
            meta,
            ClientId::new(CLIENT_ID.into()),
            Some(ClientSecret::new("guess".into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        let refused = impostor
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await;
        assert_eq!(error_of(refused), CoreErrorResponseType::InvalidClient);
        assert_eq!(mock.token_calls(), 4);
    }

    #[tokio::test]
    async fn authorize_refusals() {
        let mock = MockOidc::start(CLIENT_ID, CLIENT_SECRET).await;
        let http = http();
        let iss = mock.issuer().to_owned();
        let base = [
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            (
                "code_challenge",
                "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
            ),
            ("code_challenge_method", "S256"),
        ];
        let call = |skip: &'static str, replace: Option<(&'static str, &'static str)>| {
            let mut u = url::Url::parse(&format!("{iss}/authorize")).unwrap();
            for (k, v) in base {
                if k == skip {
                    continue;
                }
                let v = replace.filter(|(rk, _)| *rk == k).map_or(v, |(_, rv)| rv);
                u.query_pairs_mut().append_pair(k, v);
            }
            http.get(u).send()
        };

        // Nobody signed in yet.
        let resp = call("", None).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(mock.last_authorize_query().unwrap().len(), base.len());

        mock.set_user(alice());
        for (skip, replace) in [
            ("code_challenge", None),
            ("code_challenge_method", None),
            ("redirect_uri", None),
            ("", Some(("code_challenge_method", "plain"))),
            ("", Some(("client_id", "stranger"))),
            ("", Some(("scope", "email profile"))),
            ("", Some(("response_type", "token"))),
        ] {
            let resp = call(skip, replace).await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{skip} {replace:?}");
            assert!(!resp.text().await.unwrap().is_empty());
        }
        let resp = call("", None).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(mock.token_calls(), 0);
    }

    #[test]
    fn base64_matches_rfc4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(b64_encode(plain.as_bytes(), B64_STANDARD, true), encoded);
            assert_eq!(b64url(plain.as_bytes()), encoded.trim_end_matches('='));
            assert_eq!(b64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        // An S256 challenge: base64url(SHA-256("abc")), as Python's hashlib and base64 give it.
        assert_eq!(
            b64url(&Sha256::digest(b"abc")),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
    }
}
