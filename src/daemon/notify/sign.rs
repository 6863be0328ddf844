//! The generic webhook's signature: `X-Canaryd-Signature: sha256=<hex>`,
//! the HMAC-SHA256, keyed with the receiver's secret, of the timestamp
//! header's value, a `.`, and the raw body (`{timestamp}.{body}`). Putting
//! the timestamp (`X-Canaryd-Timestamp`, Unix seconds, set per attempt)
//! under the signature lets a receiver refuse a replayed delivery: it
//! recomputes the signature, compares in constant time, and refuses a
//! timestamp too far from its own clock (docs/notifications.md has a
//! verifier; five minutes is the usual tolerance).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-canaryd-signature";
pub const TIMESTAMP_HEADER: &str = "x-canaryd-timestamp";

/// `sha256=<hex>` over `{timestamp}.{body}`.
pub fn signature(secret: &[u8], timestamp_secs: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac_sha256() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn the_timestamp_is_signed() {
        assert_ne!(signature(b"k", 1, b"{}"), signature(b"k", 2, b"{}"));
    }
}
