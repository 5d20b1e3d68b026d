//! The read half of the embedded store: a record by key, and a page of the records an
//! `owner\0<id hex>` index lists for one owner, each in one read transaction.

use redb::TableDefinition;

use super::{db_err, dec, pair_key, prefix_range, RedbStore};
use crate::error::Result;
use crate::ids::SpiffeId;

impl RedbStore {
    /// One record by id.
    pub(super) fn record<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        id: &[u8],
    ) -> Result<Option<T>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(table).map_err(db_err)?;
        let v = t.get(id).map_err(db_err)?;
        v.map(|v| dec(v.value())).transpose()
    }

    /// A page of the records an `owner\0<id hex>` index lists for `owner`: ids after `after`,
    /// at most `limit`, in one read transaction.
    pub(super) fn owned_records<T: serde::de::DeserializeOwned>(
        &self,
        index: TableDefinition<&str, ()>,
        records: TableDefinition<&[u8], &[u8]>,
        owner: &SpiffeId,
        after: Option<&[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<T>> {
        use std::ops::Bound;
        let txn = self.begin_read()?;
        let index = txn.open_table(index).map_err(db_err)?;
        let records = txn.open_table(records).map_err(db_err)?;
        let (lo, hi) = prefix_range(owner);
        let start = after.map(|id| pair_key(owner, id));
        let lower = match &start {
            Some(k) => Bound::Excluded(k.as_str()),
            None => Bound::Included(lo.as_str()),
        };
        let mut out = Vec::new();
        for item in index
            .range::<&str>((lower, Bound::Excluded(hi.as_str())))
            .map_err(db_err)?
            .take(limit)
        {
            let (k, _) = item.map_err(db_err)?;
            let Some(hex_id) = k.value().rsplit('\0').next() else {
                continue;
            };
            let id: [u8; 16] = crate::ids::parse_hex(hex_id)?;
            if let Some(r) = records.get(id.as_slice()).map_err(db_err)? {
                out.push(dec(r.value())?);
            }
        }
        Ok(out)
    }
}
