//! `X-Shopify-Hmac-Sha256` verification: base64 HMAC-SHA256 of the raw body, constant time.
//!
//! Pure functions over bytes, so the rules (decode the header, accept any configured secret,
//! never look at the body's content) are unit-tested without HTTP.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use runtime::Secret;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused; each is a 401 and a labelled metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Shopify-Hmac-Sha256` header.
    #[error("missing X-Shopify-Hmac-Sha256")]
    Missing,
    /// The header is repeated, not base64, or not 32 bytes once decoded.
    #[error("malformed X-Shopify-Hmac-Sha256")]
    Malformed,
    /// Well-formed but no configured secret produced it (wrong app, or a store notification
    /// key, which Shopify uses for webhooks created in the admin).
    #[error("X-Shopify-Hmac-Sha256 does not match")]
    Mismatch,
}

impl SignatureError {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// A decoded signature: the 32 bytes of an HMAC-SHA256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl Signature {
    /// Decodes the header value (standard base64, padded). Surrounding whitespace is
    /// tolerated because some proxies add it; anything else that is not exactly 32 bytes is
    /// malformed.
    pub fn parse(header: &[u8]) -> Result<Self, SignatureError> {
        let trimmed = header.trim_ascii();
        // A 32-byte digest is 44 base64 characters: refuse longer input before decoding.
        if trimmed.len() > 64 {
            return Err(SignatureError::Malformed);
        }
        let decoded = STANDARD
            .decode(trimmed)
            .map_err(|_| SignatureError::Malformed)?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| SignatureError::Malformed)?;
        Ok(Self(bytes))
    }
}

/// Verifies bodies against the configured secrets, current first (rotation).
#[derive(Clone)]
pub struct Verifier {
    // Keyed MACs prepared once; cloning one per request skips re-hashing the key.
    macs: Vec<HmacSha256>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({} secrets)", self.macs.len())
    }
}

impl Verifier {
    /// A verifier accepting a body signed with any of `secrets` (UTF-8 bytes as the key, as
    /// Shopify does).
    pub fn new(secrets: &[Secret]) -> Self {
        let macs = secrets
            .iter()
            .filter_map(|s| HmacSha256::new_from_slice(s.expose().as_bytes()).ok())
            .collect();
        Self { macs }
    }

    /// Number of secrets tried.
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// True when no secret is configured (every body is refused).
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// Checks `signature` over the exact `body` bytes; returns the index of the secret that
    /// matched (0 = current) so rotation can be watched in metrics.
    pub fn verify(&self, signature: &Signature, body: &[u8]) -> Result<usize, SignatureError> {
        for (index, mac) in self.macs.iter().enumerate() {
            let mut mac = mac.clone();
            mac.update(body);
            // verify_slice compares in constant time.
            if mac.verify_slice(&signature.0).is_ok() {
                return Ok(index);
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// Signs `body` with `secret` as Shopify does: base64 of HMAC-SHA256 (fixtures, benchmark).
pub fn sign(secret: &str, body: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC; the fallback is unreachable.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(&secrets.iter().map(|s| Secret::new(*s)).collect::<Vec<_>>())
    }

    #[test]
    fn known_vector_from_rfc4231_style_input() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog"), a widely
        // published vector, in base64.
        let sig = sign("key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(sig, "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=");
        let v = verifier(&["key"]);
        let parsed = Signature::parse(sig.as_bytes()).unwrap();
        assert_eq!(
            v.verify(&parsed, b"The quick brown fox jumps over the lazy dog"),
            Ok(0)
        );
    }

    #[test]
    fn rotation_accepts_current_and_previous_and_reports_which() {
        let v = verifier(&["new-secret", "old-secret"]);
        let body = br#"{"id":820982911946154508,"note":"a\/b \u0026 c"}"#;
        let old = Signature::parse(sign("old-secret", body).as_bytes()).unwrap();
        let new = Signature::parse(sign("new-secret", body).as_bytes()).unwrap();
        assert_eq!(v.verify(&new, body), Ok(0));
        assert_eq!(v.verify(&old, body), Ok(1));
        let other = Signature::parse(sign("store-notification-key", body).as_bytes()).unwrap();
        assert_eq!(v.verify(&other, body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_exact_bytes_are_signed() {
        let v = verifier(&["s"]);
        let body = br#"{"url":"https:\/\/x.test\/?a=1\u0026b=2"}"#;
        let sig = Signature::parse(sign("s", body).as_bytes()).unwrap();
        assert_eq!(v.verify(&sig, body), Ok(0));
        // The same JSON re-serialised without escapes is a different message.
        assert_eq!(
            v.verify(&sig, br#"{"url":"https://x.test/?a=1&b=2"}"#),
            Err(SignatureError::Mismatch)
        );
        // A trailing newline (a proxy "normalising" the body) breaks it too.
        let mut with_newline = body.to_vec();
        with_newline.push(b'\n');
        assert_eq!(v.verify(&sig, &with_newline), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_refused_before_any_hmac() {
        assert_eq!(Signature::parse(b""), Err(SignatureError::Malformed));
        assert_eq!(
            Signature::parse(b"not base64!"),
            Err(SignatureError::Malformed)
        );
        // Valid base64 of 31 and 33 bytes.
        assert_eq!(
            Signature::parse(STANDARD.encode([0u8; 31]).as_bytes()),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            Signature::parse(STANDARD.encode([0u8; 33]).as_bytes()),
            Err(SignatureError::Malformed)
        );
        // Hex (a common mistake) is not base64 of 32 bytes.
        assert_eq!(
            Signature::parse("ab".repeat(32).as_bytes()),
            Err(SignatureError::Malformed)
        );
        assert!(Signature::parse(format!(" {} ", STANDARD.encode([7u8; 32])).as_bytes()).is_ok());
    }

    #[test]
    fn no_secret_refuses_everything() {
        let v = verifier(&[]);
        assert!(v.is_empty());
        let sig = Signature::parse(sign("x", b"{}").as_bytes()).unwrap();
        assert_eq!(v.verify(&sig, b"{}"), Err(SignatureError::Mismatch));
    }
}
