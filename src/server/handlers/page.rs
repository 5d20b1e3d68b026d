//! Pages of a listing, built only from what the caller may see.

use crate::core::wire::PAGE_BYTES;

use crate::server::services::refusal::Refusal;

/// Most records one page may examine (visible or not) before it is answered with what it has.
pub const SCAN_MAX: usize = 10_000;
/// Records read from the store at a time while a page is built.
pub const SCAN_BATCH: usize = 256;

/// One page of a listing, built only from records the caller may see (threat 52): records are
/// read from the store `limit` at a time after `after` (`fetch(after, limit)`, in cursor
/// order), each turned into a view or skipped (`None`: expired, or not the caller's to see),
/// until the page holds `limit` views, its views would pass [`PAGE_BYTES`], or the store has
/// no more. The cursor is always the id of the last record *on the page*, so neither a page
/// nor its cursor says anything of the records skipped (their ids, how many, when they come
/// and go). `next` is `None` when the store had no more after the page.
///
/// A page examines at most [`SCAN_MAX`] records: past that it is answered with the views it
/// has (and their cursor), or, when it has none, as the end of the listing, so a caller whose
/// records lie beyond more than [`SCAN_MAX`] records hidden from them does not see them.
pub fn paginate<R, V: serde::Serialize>(
    after: Option<[u8; 16]>,
    limit: usize,
    mut fetch: impl FnMut(Option<[u8; 16]>, usize) -> Result<Vec<R>, Refusal>,
    id: impl Fn(&R) -> [u8; 16],
    mut view: impl FnMut(R) -> Result<Option<V>, Refusal>,
) -> Result<(Vec<V>, Option<[u8; 16]>), Refusal> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last_shown = None;
    let mut position = after;
    let mut scanned = 0usize;
    // The store is read in batches of at least SCAN_BATCH, whatever the page's limit: a page of
    // one behind many hidden records costs a few reads, not one per record.
    let batch_size = limit.max(SCAN_BATCH);
    loop {
        let batch = fetch(position, batch_size)?;
        let exhausted = batch.len() < batch_size;
        for r in batch {
            let rid = id(&r);
            position = Some(rid);
            scanned += 1;
            if let Some(v) = view(r)? {
                let size = postcard::to_stdvec(&v)
                    .map_err(|_| Refusal::internal())?
                    .len();
                if bytes + size > PAGE_BYTES && !out.is_empty() {
                    return Ok((out, last_shown));
                }
                bytes += size;
                out.push(v);
                last_shown = Some(rid);
                if out.len() >= limit {
                    return Ok((out, last_shown));
                }
            }
        }
        if exhausted {
            return Ok((out, None));
        }
        if scanned >= SCAN_MAX {
            return Ok((out, last_shown));
        }
    }
}
