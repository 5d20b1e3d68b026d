//! A witness's verifier key file (`w.pub`, from `witness keygen`), read for the witness itself,
//! `receipt verify --witness` and the bindings' `verify_receipt`.

use std::path::Path;

use crate::core::tlog::cosignature::CosignerKey;
use crate::error::{Error, Result};
use crate::local::fs::read_capped;

/// Reads a witness verifier key file.
pub fn read_cosigner_key(path: &Path) -> Result<CosignerKey> {
    let text = read_capped(path, 4096)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| Error::bad_input(format!("{} is not text", path.display())))?;
    CosignerKey::parse(text.trim_end()).map_err(|e| e.context(path.display()))
}
