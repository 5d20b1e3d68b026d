//! Bearer secrets of the local listeners (the MCP endpoint's token, the web client's token and
//! path prefix): drawn at random, and compared in constant time. ring's `constant_time` module
//! is deprecated (and hidden) in ring 0.17, hence a comparison of our own.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A fresh random token (32 bytes, hex).
pub fn random_token() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
        .map_err(|_| Error::internal("no randomness for the token"))?;
    Ok(Zeroizing::new(crate::ids::hex(*bytes)))
}

pub use crate::core::sign::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
