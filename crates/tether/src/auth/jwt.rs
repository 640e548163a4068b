//! Bearer tokens: JWTs signed with HS256 (a shared secret) or RS256 (an RSA key pair,
//! the server holding only the public key).
//!
//! The token's `alg` header picks the key, and only the algorithms a key was configured
//! for are accepted, so `none` or an HS256 token "signed" with the RSA public key as
//! its secret (the classic algorithm-confusion attack) never verifies. `exp` is
//! required: a token that never expires cannot be revoked.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::fmt;
use tether_core::{Data, Error, ErrorCode, Result};
use tether_engine::Identity;

/// Longest token accepted; real ones are well under 2 KiB, and this bounds the work a
/// hostile header can cause before the signature check fails.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verifies tokens against the configured keys.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl fmt::Debug for Verifier {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// What the configuration says about tokens.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The HS256 secret.
    pub secret: Option<String>,
    /// The RS256 public key, PEM.
    pub public_key_pem: Option<Vec<u8>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: Option<u64>,
}

/// Secrets shorter than this are refused: an HS256 secret is a password that anyone
/// holding one token can brute-force offline.
const MIN_SECRET_BYTES: usize = 32;

/// Default clock skew allowed on `exp`/`nbf`.
const DEFAULT_LEEWAY_SECONDS: u64 = 30;

impl Verifier {
    /// `None` when no key is configured.
    pub fn new(keys: &Keys) -> std::result::Result<Option<Verifier>, String> {
        let hs256 = match &keys.secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(format!(
                    "the JWT secret is {} bytes; use at least {MIN_SECRET_BYTES} random bytes",
                    s.len()
                ))
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let rs256 =
            match &keys.public_key_pem {
                Some(pem) => Some(DecodingKey::from_rsa_pem(pem).map_err(|e| {
                    format!("the JWT public key is not an RSA public key in PEM: {e}")
                })?),
                None => None,
            };
        if hs256.is_none() && rs256.is_none() {
            return Ok(None);
        }
        Ok(Some(Verifier {
            hs256,
            rs256,
            issuer: keys.issuer.clone(),
            audience: keys.audience.clone(),
            leeway: keys.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
        }))
    }

    /// The identity a token proves, or `unauthorized` saying why not (expired, bad
    /// signature, ...). The reason is safe to show: it says nothing about the key.
    pub fn verify(&self, token: &str) -> Result<Identity> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("the token is not a JWT"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            unauthorized(format!(
                "tokens signed with {:?} are not accepted here",
                header.alg
            ))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience an `aud` claim cannot be checked; the
            // library would refuse every token that has one.
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Data>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            unauthorized(match e.kind() {
                K::ExpiredSignature => "the token has expired".to_owned(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                K::InvalidSignature => "the token's signature does not verify".to_owned(),
                K::InvalidIssuer => "the token's issuer (iss) is not accepted".to_owned(),
                K::InvalidAudience => "the token's audience (aud) is not accepted".to_owned(),
                K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
                K::InvalidClaimFormat(c) => format!("the token's {c:?} claim is malformed"),
                _ => "the token is not valid".to_owned(),
            })
        })?;
        Ok(Identity::from_claims(data.claims))
    }
}

pub fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unauthorized, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(&Keys {
            secret: Some(SECRET.into()),
            ..Keys::default()
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn hs256_valid_expired_and_forged() {
        let v = verifier();
        let ok = v
            .verify(&hs(json!({"sub": "ann", "exp": now() + 60}), SECRET))
            .unwrap();
        assert_eq!(ok.subject.as_deref(), Some("ann"));
        let code = |t: &str| v.verify(t).unwrap_err();
        let expired = code(&hs(json!({"sub": "ann", "exp": now() - 3600}), SECRET));
        assert_eq!(expired.code, ErrorCode::Unauthorized);
        assert!(expired.message.contains("expired"), "{expired}");
        let forged = code(&hs(
            json!({"sub": "ann", "exp": now() + 60}),
            "another secret of thirty-two bytes!",
        ));
        assert!(forged.message.contains("signature"), "{forged}");
        assert!(code(&hs(json!({"sub": "ann"}), SECRET))
            .message
            .contains("exp"));
        // A string `exp` must not count as "no exp" (GHSA-h395-gr6q-cpjc).
        let odd = code(&hs(json!({"sub": "ann", "exp": "never"}), SECRET));
        assert_eq!(odd.code, ErrorCode::Unauthorized);
        let later = code(&hs(
            json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 3600}),
            SECRET,
        ));
        assert!(later.message.contains("nbf"), "{later}");
        for junk in ["", "a.b.c", "not a token", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert_eq!(code(junk).code, ErrorCode::Unauthorized);
        }
        // alg "none" is never accepted.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDB9.";
        assert_eq!(code(none).code, ErrorCode::Unauthorized);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = Verifier::new(&Keys {
            secret: Some(SECRET.into()),
            issuer: Some("https://id.example".into()),
            audience: Some("tether".into()),
            ..Keys::default()
        })
        .unwrap()
        .unwrap();
        let exp = now() + 60;
        assert!(v
            .verify(&hs(
                json!({"exp": exp, "iss": "https://id.example", "aud": "tether"}),
                SECRET
            ))
            .is_ok());
        assert!(v
            .verify(&hs(
                json!({"exp": exp, "iss": "https://evil", "aud": "tether"}),
                SECRET
            ))
            .is_err());
        assert!(v
            .verify(&hs(
                json!({"exp": exp, "iss": "https://id.example", "aud": "x"}),
                SECRET
            ))
            .is_err());
    }

    #[test]
    fn short_secrets_and_bad_keys_are_refused() {
        assert!(Verifier::new(&Keys {
            secret: Some("short".into()),
            ..Keys::default()
        })
        .is_err());
        assert!(Verifier::new(&Keys {
            public_key_pem: Some(b"not a key".to_vec()),
            ..Keys::default()
        })
        .is_err());
        assert!(Verifier::new(&Keys::default()).unwrap().is_none());
    }
}
