//! Which page of a listing a request asks for, and how large a page may be.

use serde::{Deserialize, Serialize};

/// Most items in one page of a listing; the relay also keeps every reply under [`PAGE_BYTES`].
pub const MAX_PAGE: u32 = 100;
/// The encoded size a page of a listing stays under (well below [`MAX_FRAME`](super::MAX_FRAME)).
pub const PAGE_BYTES: usize = 192 * 1024;

/// Which page of a listing: after the cursor the previous page returned (`None`: from the
/// start), at most `limit` items (capped at [`MAX_PAGE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub after: Option<[u8; 16]>,
    pub limit: u32,
}

impl Page {
    pub fn first() -> Self {
        Page {
            after: None,
            limit: MAX_PAGE,
        }
    }
    /// The page after `next` (a reply's cursor).
    pub fn after(next: [u8; 16]) -> Self {
        Page {
            after: Some(next),
            limit: MAX_PAGE,
        }
    }
    /// The limit the relay applies: 1 to [`MAX_PAGE`].
    pub fn capped_limit(&self) -> usize {
        usize::try_from(self.limit.clamp(1, MAX_PAGE)).unwrap_or(1)
    }
}
