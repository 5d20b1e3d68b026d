//! Open connections by identity, so the relay can close every connection of a party at once
//! (a quarantine now; revocation later) with a typed [`CloseCode`].

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::wire::CloseCode;
use crate::ids::SpiffeId;

/// The registry. Each connection task registers itself and is removed when its guard drops.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<SpiffeId, Vec<quinn::Connection>>>,
}

/// Keeps a connection registered while it lives.
pub struct Registration<'a> {
    registry: &'a Connections,
    id: SpiffeId,
    stable_id: usize,
}

impl Connections {
    /// Registers `conn` for `id`, unless `id` already holds `cap` connections.
    pub fn register(
        &self,
        id: &SpiffeId,
        conn: &quinn::Connection,
        cap: usize,
    ) -> Option<Registration<'_>> {
        let mut open = self.open.lock().ok()?;
        let list = open.entry(id.clone()).or_default();
        if list.len() >= cap {
            return None;
        }
        list.push(conn.clone());
        Some(Registration {
            registry: self,
            id: id.clone(),
            stable_id: conn.stable_id(),
        })
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open
            .lock()
            .map(|open| open.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Closes every open connection of `id`; returns how many.
    pub fn close_all(&self, id: &SpiffeId, code: CloseCode) -> usize {
        let conns = self
            .open
            .lock()
            .ok()
            .and_then(|mut open| open.remove(id))
            .unwrap_or_default();
        for c in &conns {
            c.close(code.code().into(), code.reason());
        }
        conns.len()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.open.lock() {
            if let Some(list) = open.get_mut(&self.id) {
                list.retain(|c| c.stable_id() != self.stable_id);
                if list.is_empty() {
                    open.remove(&self.id);
                }
            }
        }
    }
}
