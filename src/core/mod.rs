//! The I/O-free core: bytes and an explicit `now` in, values out. Nothing here imports tokio,
//! quinn, `std::net` or `std::fs`, or reads the clock (a test in `tests/architecture.rs`
//! checks the rule).

pub mod audit_format;
pub mod bundle;
pub mod codec;
pub mod directory;
pub mod dispatch;
pub mod envelope;
pub mod grant;
pub mod grant_state;
pub mod identity;
pub mod keylog;
pub mod pki;
pub mod policy;
pub mod receipt_file;
pub mod resource;
pub mod safety;
pub mod sign;
pub mod source_policy;
pub mod store;
pub mod tlog;
pub mod vectors;
pub mod wire;
