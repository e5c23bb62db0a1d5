//! Who may do what: verifies JSON Web Tokens and the server's API key, and answers the questions
//! the transport asks (may this caller join or read this room, publish, and as whom).
//!
//! With `LIVECHAT_AUTH=off` (the default, the original service's behaviour) everyone may do everything and a
//! client may name itself. With `required`, every WebSocket and API request needs a token signed
//! with `LIVECHAT_JWT_SECRET` (HS256) or the key in `LIVECHAT_JWT_PUBLIC_KEY` (RS256, ES256,
//! EdDSA), or the server key `LIVECHAT_API_KEY`. The identity on a stored message always comes
//! from here, never from what the client wrote in it.

mod token;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub use token::{TokenRequest, issue};

use crate::message::Author;
use crate::room::RoomName;

/// Clock skew tolerated on `exp` (and `nbf`), in seconds.
pub const LEEWAY_SECONDS: u64 = 5;
/// Longest display name, in characters, for a token's `name` or a chosen `?name=`.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone may connect, read and publish; clients may choose a name.
    Off,
    /// A valid token (or the API key, for HTTP) is needed.
    Required,
}

/// What the server needs to verify callers, read from the settings.
pub struct AuthSettings<'a> {
    pub mode: AuthMode,
    pub secret: Option<&'a str>,
    pub public_key_pem: Option<Vec<u8>>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub api_key: Option<&'a str>,
}

/// Who may use a read that exposes what others said (`LIVECHAT_HISTORY_READS`,
/// `LIVECHAT_ROOM_LIST`), on top of the rooms a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Access {
    /// Anyone the auth rules let in (with auth off: anyone).
    Open,
    /// Only the server key (`LIVECHAT_API_KEY`).
    ApiKey,
    /// Nobody.
    Off,
}

impl Access {
    /// Whether `identity` may use `what` (named in the refusal, with the setting to change).
    pub fn check(self, identity: &Identity, what: Guarded) -> Result<(), AuthError> {
        match self {
            Access::Open => Ok(()),
            Access::ApiKey if identity.is_server => Ok(()),
            Access::ApiKey => Err(AuthError::ServerKeyOnly(what)),
            Access::Off => Err(AuthError::TurnedOff(what)),
        }
    }
}

/// A read `Access` guards, as refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    History,
    RoomList,
}

impl Guarded {
    fn what(self) -> &'static str {
        match self {
            Guarded::History => "reading history (and resuming with ?since=)",
            Guarded::RoomList => "the room list",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Guarded::History => "LIVECHAT_HISTORY_READS",
            Guarded::RoomList => "LIVECHAT_ROOM_LIST",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: pass a token as ?token= or Authorization: Bearer")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("this token does not allow room {0}")]
    RoomNotAllowed(RoomName),
    #[error("room {0} is a direct-message room of two other users")]
    NotYourDirect(RoomName),
    #[error(
        "direct messages need a signed-in user (a token, or the app's connect hook): \
         a chosen name is not one"
    )]
    DirectNeedsUser,
    #[error("this token may not publish (read-only)")]
    ReadOnly,
    #[error("a refreshed token must be for the same user")]
    OtherUser,
    #[error("invalid name: {0}")]
    BadName(&'static str),
    #[error(
        "{0} need a name: ?name= on the request or the connection (or a token when auth is on)"
    )]
    Unnamed(&'static str),
    #[error("{} is kept to the server key on this server ({}=api-key): pass it as Authorization: Bearer", .0.what(), .0.setting())]
    ServerKeyOnly(Guarded),
    #[error("{} is turned off on this server ({}=off)", .0.what(), .0.setting())]
    TurnedOff(Guarded),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("LIVECHAT_AUTH=required needs LIVECHAT_JWT_SECRET or LIVECHAT_JWT_PUBLIC_KEY")]
    NoKey,
    #[error("LIVECHAT_JWT_PUBLIC_KEY is not an RSA, EC (P-256) or Ed25519 public key in PEM")]
    BadPublicKey,
}

/// The claims livechat reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    /// A string, or an integer (Django's user ids) taken as its decimal string.
    #[serde(default, deserialize_with = "subject")]
    sub: Option<String>,
    /// Required (`Validation` refuses a token without it); optional here so that its absence
    /// is reported as such rather than as a shape error.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<bool>,
    /// May moderate: change and delete any message, ban and mute.
    #[serde(default)]
    moderate: Option<bool>,
}

/// A verified caller, or an anonymous one when auth is off.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Who the caller's messages are from: `None` for an anonymous client.
    pub user: Option<Arc<Author>>,
    /// Rooms it may join and read: `None` is every room.
    rooms: Option<Arc<[String]>>,
    pub can_publish: bool,
    /// When its credential expires (seconds since the Unix epoch): a token's `exp`, or the end of
    /// the connect hook's `expires_in`; `None`: never.
    pub expires: Option<u64>,
    /// How long past `expires` a connection may stay: the clock skew a token was accepted
    /// under (0 for the connect hook's answers, which are this server's own clock).
    grace: u64,
    /// The server's API key: any room, and may publish on a user's behalf.
    pub is_server: bool,
    /// May change and delete any message, ban and mute (a token's `moderate` claim, the
    /// connect hook's `moderate`, or the server key).
    pub moderator: bool,
}

pub struct Auth {
    mode: AuthMode,
    secret: Option<(DecodingKey, Validation)>,
    public_key: Option<(DecodingKey, Validation)>,
    api_key: Option<String>,
    /// What tokens must say, for error messages.
    expected: Expected,
}

/// The configured issuer and audience, named in the errors of tokens that do not match them.
#[derive(Debug, Default)]
struct Expected {
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    pub fn new(settings: AuthSettings<'_>) -> Result<Self, AuthSetupError> {
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = LEEWAY_SECONDS;
            // `sub` is read by `Claims` (a number is taken as its decimal string). A configured
            // issuer or audience must be present, not only right when present: a token minted
            // for another service with the same key carries neither.
            let mut required = vec!["exp"];
            if let Some(issuer) = settings.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            match settings.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        let secret = settings.secret.map(|secret| {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256),
            )
        });
        let public_key = match settings.public_key_pem {
            Some(pem) => {
                Some(public_key(&pem).map(|(key, algorithm)| (key, validation(algorithm)))?)
            }
            None => None,
        };
        if settings.mode == AuthMode::Required && secret.is_none() && public_key.is_none() {
            return Err(AuthSetupError::NoKey);
        }
        Ok(Self {
            mode: settings.mode,
            secret,
            public_key,
            api_key: settings.api_key.map(str::to_owned),
            expected: Expected {
                issuer: settings.issuer.map(str::to_owned),
                audience: settings.audience.map(str::to_owned),
            },
        })
    }

    /// Auth off, for tests and tools.
    pub fn off() -> Self {
        Self {
            mode: AuthMode::Off,
            secret: None,
            public_key: None,
            api_key: None,
            expected: Expected::default(),
        }
    }

    pub fn is_required(&self) -> bool {
        self.mode == AuthMode::Required
    }

    /// The caller of a WebSocket handshake or HTTP request, from its token (or the API key, or
    /// with auth off its chosen name). `name` is ignored when auth is on.
    pub fn identify(&self, token: Option<&str>, name: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|token| !token.is_empty());
        // The server key is the server key with auth off too: it opens what is kept to it
        // (`LIVECHAT_HISTORY_READS=api-key`, the room list).
        if token.is_some_and(|token| self.is_server_key(token)) {
            return Ok(Identity {
                user: None,
                rooms: None,
                can_publish: true,
                expires: None,
                grace: 0,
                is_server: true,
                moderator: true,
            });
        }
        if self.mode == AuthMode::Off {
            let user = name.map(chosen_name).transpose()?;
            return Ok(Identity {
                user: user.map(Arc::new),
                rooms: None,
                can_publish: true,
                expires: None,
                grace: 0,
                is_server: false,
                moderator: false,
            });
        }
        self.verify(token.ok_or(AuthError::Missing)?)
    }

    /// Whether `token` is for this server to check itself (the server key, or any token when
    /// auth is required), rather than a caller for the connect hook to name.
    pub fn checks_locally(&self, token: Option<&str>) -> bool {
        token
            .filter(|token| !token.is_empty())
            .is_some_and(|token| self.mode == AuthMode::Required || self.is_server_key(token))
    }

    fn is_server_key(&self, token: &str) -> bool {
        self.api_key
            .as_ref()
            .is_some_and(|key| constant_time_eq(key.as_bytes(), token.as_bytes()))
    }

    /// A token sent on an open connection to extend it: valid, and for the same user.
    pub fn refresh(&self, current: Option<&Author>, token: &str) -> Result<Identity, AuthError> {
        let fresh = self.verify(token)?;
        let id = |user: Option<&Author>| user.and_then(|user| user.id.clone());
        if id(fresh.user.as_deref()) != id(current) {
            return Err(AuthError::OtherUser);
        }
        Ok(fresh)
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Invalid(explain(&error, &self.expected)))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            _ => self.public_key.as_ref(),
        }
        .ok_or_else(|| {
            let accepted = match (&self.secret, &self.public_key) {
                (Some(_), None) => "HS256 (LIVECHAT_JWT_SECRET)".to_owned(),
                (_, Some((_, validation))) => format!(
                    "{:?} (LIVECHAT_JWT_PUBLIC_KEY){}",
                    validation.algorithms[0],
                    if self.secret.is_some() {
                        " and HS256"
                    } else {
                        ""
                    }
                ),
                (None, None) => "none".to_owned(),
            };
            AuthError::Invalid(format!(
                "the token is signed with {:?}, and this server accepts {accepted}",
                header.alg
            ))
        })?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|error| AuthError::Invalid(explain(&error, &self.expected)))?
            .claims;
        let sub = claims.sub.filter(|sub| !sub.is_empty()).ok_or_else(|| {
            AuthError::Invalid("the token has no `sub` claim (the user's id) or it is empty".into())
        })?;
        let name = claims.name.map(|name| truncate(&name, MAX_NAME_CHARS));
        Ok(Identity {
            user: Some(Arc::new(Author {
                id: Some(sub),
                name,
            })),
            rooms: claims.rooms.map(Arc::from),
            can_publish: claims.publish.unwrap_or(true),
            expires: claims.exp,
            grace: LEEWAY_SECONDS,
            is_server: false,
            moderator: claims.moderate.unwrap_or(false),
        })
    }
}

impl Identity {
    /// Whether it may join and read `room`: a `rooms` entry names it, or ends in `*` and is a
    /// prefix of it; a direct-message room, whatever the claim says, only its two users (and
    /// the server key).
    pub fn may_enter(&self, room: &RoomName) -> bool {
        self.check_room(room).is_ok()
    }

    pub fn check_room(&self, room: &RoomName) -> Result<(), AuthError> {
        if let Some((a, b)) = room.direct_users() {
            if self.is_server {
                return Ok(());
            }
            return match self.user.as_deref().and_then(|user| user.id.as_deref()) {
                Some(id) if id == a || id == b => Ok(()),
                Some(_) => Err(AuthError::NotYourDirect(room.clone())),
                None => Err(AuthError::DirectNeedsUser),
            };
        }
        let Some(rooms) = &self.rooms else {
            return Ok(());
        };
        let allowed = rooms.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => room.as_str().starts_with(prefix),
            None => allowed == room.as_str(),
        });
        match allowed {
            true => Ok(()),
            false => Err(AuthError::RoomNotAllowed(room.clone())),
        }
    }

    /// When a connection made with it must close: its expiry, plus the clock skew a token was
    /// accepted under (a token accepted 3 s past its `exp` keeps its connection 2 s more, not
    /// none).
    pub fn closes_at(&self) -> Option<u64> {
        self.expires.map(|exp| exp.saturating_add(self.grace))
    }

    /// Someone the app vouched for (the connect hook): the same claims a token carries.
    pub fn admitted(
        user: Option<Author>,
        rooms: Option<Vec<String>>,
        can_publish: bool,
        moderator: bool,
        expires: Option<u64>,
    ) -> Self {
        Self {
            user: user.map(Arc::new),
            rooms: rooms.map(Arc::from),
            can_publish,
            expires,
            grace: 0,
            is_server: false,
            moderator,
        }
    }

    pub fn check_publish(&self) -> Result<(), AuthError> {
        if self.can_publish {
            Ok(())
        } else {
            Err(AuthError::ReadOnly)
        }
    }
}

/// Why a token was refused, in words a person can act on (not the library's variant names).
fn explain(error: &jsonwebtoken::errors::Error, expected: &Expected) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "not a JSON Web Token (three base64url parts joined by dots), nor the server key: \
             check that it was copied whole"
                .into()
        }
        ErrorKind::InvalidSignature => "its signature does not match: it was not signed with \
             this server's key (LIVECHAT_JWT_SECRET or LIVECHAT_JWT_PUBLIC_KEY)"
            .into(),
        ErrorKind::ExpiredSignature => format!(
            "it has expired (its `exp` is past, beyond {LEEWAY_SECONDS} s of clock skew): \
             get a new one"
        ),
        ErrorKind::ImmatureSignature => "it is not valid yet (its `nbf` is in the future)".into(),
        ErrorKind::InvalidIssuer => format!(
            "its issuer (`iss`) is not {:?}, the one this server expects",
            expected.issuer.as_deref().unwrap_or_default()
        ),
        ErrorKind::InvalidAudience => match &expected.audience {
            Some(audience) => {
                format!("its audience (`aud`) does not name {audience:?}, this server's")
            }
            None => "it names an audience (`aud`), and this server expects none".into(),
        },
        ErrorKind::MissingRequiredClaim(claim) => {
            let wanted = match claim.as_str() {
                "iss" => format!(
                    ": this server expects {:?}",
                    expected.issuer.as_deref().unwrap_or_default()
                ),
                "aud" => format!(
                    ": this server expects {:?}",
                    expected.audience.as_deref().unwrap_or_default()
                ),
                "exp" => ": every token must expire".to_owned(),
                _ => String::new(),
            };
            format!("it has no `{claim}` claim{wanted}")
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("its `{claim}` claim is not a number of seconds since 1970")
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "it is signed with an algorithm its key does not allow".into()
        }
        ErrorKind::Json(error) => format!(
            "its claims are not as expected ({error}): `sub` is a string or an integer, \
             `exp` a number, `name` a string, `rooms` a list of strings, `publish` true or false"
        ),
        _ => format!("it cannot be verified ({error})"),
    }
}

/// `sub` as a string, or an integer taken as its decimal string.
pub(crate) fn subject<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Subject {
        Text(String),
        Number(i64),
        Big(u64),
    }
    Ok(match Option::<Subject>::deserialize(deserializer)? {
        Some(Subject::Text(text)) => Some(text),
        Some(Subject::Number(number)) => Some(number.to_string()),
        Some(Subject::Big(number)) => Some(number.to_string()),
        None => None,
    })
}

/// A name a client chose for itself (auth off): 1-64 characters, no control characters.
pub fn chosen_name(name: &str) -> Result<Author, AuthError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AuthError::BadName("empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AuthError::BadName("longer than 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::BadName("control characters"));
    }
    Ok(Author {
        id: None,
        name: Some(name.to_owned()),
    })
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(chars)
        .collect()
}

/// Reads a PEM public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), AuthSetupError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    Err(AuthSetupError::BadPublicKey)
}

/// Compares secrets without telling, by timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret";

    fn auth() -> Auth {
        Auth::new(AuthSettings {
            mode: AuthMode::Required,
            secret: Some(SECRET),
            public_key_pem: None,
            issuer: None,
            audience: None,
            api_key: Some("server-key"),
        })
        .unwrap()
    }

    fn token(sub: &str, rooms: Option<&str>, ttl_seconds: i64) -> String {
        issue(
            SECRET,
            &TokenRequest {
                sub: sub.into(),
                name: Some("Alice".into()),
                rooms: rooms.map(|rooms| rooms.split(',').map(str::to_owned).collect()),
                publish: true,
                moderate: false,
                ttl_seconds,
                issuer: None,
                audience: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn verifies_tokens_and_rooms() {
        let auth = auth();
        let identity = auth
            .identify(Some(&token("u1", Some("lobby,dev-*"), 60)), None)
            .unwrap();
        let user = identity.user.as_deref().unwrap();
        assert_eq!(user.id.as_deref(), Some("u1"));
        assert_eq!(user.name.as_deref(), Some("Alice"));
        assert!(identity.may_enter(&RoomName::parse("lobby").unwrap()));
        assert!(identity.may_enter(&RoomName::parse("dev-1").unwrap()));
        assert!(!identity.may_enter(&RoomName::parse("ops").unwrap()));
        assert!(matches!(auth.identify(None, None), Err(AuthError::Missing)));
        assert!(matches!(
            auth.identify(Some("nope"), None),
            Err(AuthError::Invalid(_))
        ));
        // Expired beyond the leeway.
        let expired = token("u1", None, -(LEEWAY_SECONDS as i64) - 10);
        assert!(matches!(
            auth.identify(Some(&expired), None),
            Err(AuthError::Invalid(_))
        ));
        let forged = issue("other-secret", &TokenRequest::for_user("u1")).unwrap();
        assert!(matches!(
            auth.identify(Some(&forged), None),
            Err(AuthError::Invalid(_))
        ));
        assert!(auth.identify(Some("server-key"), None).unwrap().is_server);
    }

    fn signed(claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    fn refusal(auth: &Auth, token: &str) -> String {
        match auth.identify(Some(token), None) {
            Err(AuthError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_numeric_sub_is_its_decimal_string_and_the_leeway_is_kept() {
        let auth = auth();
        let exp = crate::store::now_ms() / 1000 - 2;
        let identity = auth
            .identify(
                Some(&signed(serde_json::json!({"sub": 42, "exp": exp}))),
                None,
            )
            .unwrap();
        assert_eq!(identity.user.as_ref().unwrap().id.as_deref(), Some("42"));
        assert_eq!(identity.expires, Some(exp));
        assert_eq!(identity.closes_at(), Some(exp + LEEWAY_SECONDS));
        assert!(
            refusal(&auth, &signed(serde_json::json!({"sub": 1.5, "exp": exp})))
                .contains("`sub` is a string or an integer")
        );
    }

    #[test]
    fn refusals_are_in_words() {
        let strict = Auth::new(AuthSettings {
            mode: AuthMode::Required,
            secret: Some(SECRET),
            public_key_pem: None,
            issuer: Some("https://auth.example"),
            audience: Some("chat"),
            api_key: Some("server-key"),
        })
        .unwrap();
        let exp = crate::store::now_ms() / 1000 + 60;
        let cases = [
            ("server-kez".to_owned(), "not a JSON Web Token"),
            (
                signed(serde_json::json!({"sub": "u", "exp": exp, "iss": "https://auth.example"})),
                "no `aud` claim: this server expects \"chat\"",
            ),
            (
                signed(serde_json::json!({"sub": "u", "exp": exp, "aud": "chat"})),
                "no `iss` claim: this server expects \"https://auth.example\"",
            ),
            (
                signed(serde_json::json!({"sub": "u", "exp": exp, "iss": "x", "aud": "chat"})),
                "issuer (`iss`) is not \"https://auth.example\"",
            ),
            (
                signed(
                    serde_json::json!({"sub": "u", "exp": exp - 3600, "iss": "https://auth.example", "aud": "chat"}),
                ),
                "has expired",
            ),
            (
                signed(
                    serde_json::json!({"sub": "u", "exp": "soon", "iss": "https://auth.example", "aud": "chat"}),
                ),
                "`exp` a number",
            ),
        ];
        for (token, expected) in cases {
            let reason = refusal(&strict, &token);
            assert!(reason.contains(expected), "{reason}");
        }
        // The right one passes; HS256 against a public-key-only server is explained.
        let good = signed(
            serde_json::json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": "chat"}),
        );
        assert!(strict.identify(Some(&good), None).is_ok());
    }

    #[test]
    fn refresh_keeps_the_user() {
        let auth = auth();
        let current = auth.identify(Some(&token("u1", None, 60)), None).unwrap();
        let current = current.user.as_deref();
        assert!(auth.refresh(current, &token("u1", None, 120)).is_ok());
        assert!(matches!(
            auth.refresh(current, &token("u2", None, 120)),
            Err(AuthError::OtherUser)
        ));
    }

    /// Tokens signed with a private key, verified with its public key in PEM.
    #[test]
    fn verifies_es256_and_eddsa_with_a_public_key() {
        for (algorithm, rcgen_algorithm) in [
            (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
            (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
        ] {
            let pair = rcgen::KeyPair::generate_for(rcgen_algorithm).unwrap();
            let auth = Auth::new(AuthSettings {
                mode: AuthMode::Required,
                secret: None,
                public_key_pem: Some(pair.public_key_pem().into_bytes()),
                issuer: Some("issuer"),
                audience: Some("chat"),
                api_key: None,
            })
            .unwrap();
            let private = pair.serialize_pem();
            let key = match algorithm {
                Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()),
                _ => jsonwebtoken::EncodingKey::from_ed_pem(private.as_bytes()),
            }
            .unwrap();
            let sign = |claims: serde_json::Value| {
                jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, &key).unwrap()
            };
            let exp = crate::store::now_ms() / 1000 + 60;
            let good =
                sign(serde_json::json!({"sub": "u", "exp": exp, "iss": "issuer", "aud": "chat"}));
            assert!(auth.identify(Some(&good), None).is_ok(), "{algorithm:?}");
            let wrong_audience =
                sign(serde_json::json!({"sub": "u", "exp": exp, "iss": "issuer", "aud": "other"}));
            assert!(auth.identify(Some(&wrong_audience), None).is_err());
            let no_sub = sign(serde_json::json!({"exp": exp, "iss": "issuer", "aud": "chat"}));
            assert!(auth.identify(Some(&no_sub), None).is_err());
            // An HS256 token is refused: no secret is configured.
            let hs = issue("secret", &TokenRequest::for_user("u")).unwrap();
            assert!(auth.identify(Some(&hs), None).is_err());
        }
    }

    #[test]
    fn off_takes_a_chosen_name() {
        let auth = Auth::off();
        let identity = auth.identify(None, Some("Bob")).unwrap();
        assert_eq!(identity.user.as_deref().unwrap().id, None);
        assert!(auth.identify(None, Some("")).is_err());
        assert!(auth.identify(None, Some(&"x".repeat(65))).is_err());
        assert!(auth.identify(None, None).unwrap().user.is_none());
    }
}
