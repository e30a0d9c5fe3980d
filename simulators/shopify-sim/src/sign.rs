//! Shopify webhook signatures: base64 (standard, padded) HMAC-SHA256 of the raw body bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Value of `X-Shopify-Hmac-Sha256` for `body` signed with the app secret `secret`.
///
/// The body must be the exact bytes that go on the wire: Shopify signs its own
/// serialisation (with `\/` and `\u0026` escapes), so re-serialised JSON will not verify.
pub fn sign(body: &[u8], secret: &[u8]) -> String {
    // HMAC accepts keys of any length, so construction cannot fail; the fallback keeps
    // this function total without an unwrap.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Constant-time check of a `X-Shopify-Hmac-Sha256` header value against `body`.
///
/// Decodes the header (rejecting bad base64 or a digest that is not 32 bytes) and uses
/// `verify_slice`, as a receiver should; never compares strings with `==`.
pub fn verify(body: &[u8], secret: &[u8], header_value: &str) -> bool {
    let Ok(tag) = STANDARD.decode(header_value.trim()) else {
        return false;
    };
    if tag.len() != 32 {
        return false;
    }
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}
