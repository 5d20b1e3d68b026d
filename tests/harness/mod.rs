//! The adversarial harness of `../shared/THREATS.md`, shared by the test crates that attack the
//! relay: a PKI that mints bad certificates and a raw QUIC client that presents them
//! ([`pki`]), a chaos UDP proxy ([`chaos`]), and the oracles ([`oracles`]: the canary scanner,
//! the acked ledger and the log auditor).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod oracles;
pub mod pki;

/// A small seeded generator (SplitMix64): the fault schedule of a run is a function of its
/// seed, which a failing test prints so that the run can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The seed from `SEALRELAY_CHAOS_SEED`, or a fresh one; printed either way.
    pub fn seed_from_env(what: &str) -> u64 {
        let seed = std::env::var("SEALRELAY_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (replay with SEALRELAY_CHAOS_SEED={seed})");
        seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Runs futures concurrently on the calling task and waits for all of them.
pub async fn join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The admin of the trust root in `keys` revokes `who` and pushes the revocation to the relay
/// at `relay` (as `sealrelay agent revoke --relay` does).
pub async fn revoke_and_push(
    keys: &std::path::Path,
    admin: &sealrelay::core::identity::Identity,
    relay: &str,
    who: &sealrelay::ids::SpiffeId,
    reason: &str,
    now: u64,
) {
    let root = sealrelay::local::trust_root::TrustRoot::load(keys).unwrap();
    let (directory, _) =
        sealrelay::local::dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let (_, signed, _) =
        sealrelay::local::dirstore::revoke(&root, &directory, who, reason, now).unwrap();
    let admin = sealrelay::client::AdminClient::connect(admin, relay)
        .await
        .unwrap();
    admin.push(&[], &[signed]).await.unwrap();
}
