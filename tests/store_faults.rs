//! Faults below the store (threats 37 and 38): a redb storage backend that keeps the image
//! last made durable by `sync_data` beside the live one, and fails writes or syncs on command.
//! A power cut keeps only the durable image (plus a seeded random part of the unsynced
//! writes, as a disk might): every acked envelope must be in it. An fsync or I/O error refuses
//! the batch with no ack; the relay reopens the store and writes resume.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sealrelay::client::{AgentClient, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::identity::Identity;
use sealrelay::core::store::Store;
use sealrelay::local::provision::{agent, provision, user};
use sealrelay::store::redb::RedbStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Every `write` fails with EIO after this many more succeed.
    WriteEio(u32),
    /// Every `write` and growing `set_len` fails with ENOSPC (a real full disk, with reads
    /// going on, is `tests/full_disk.rs`).
    NoSpace,
    /// Every `sync_data` fails with EIO.
    SyncEio,
}

#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    /// The image as of the last successful `sync_data`.
    durable: Vec<u8>,
    /// Writes since then: (offset, bytes), or a length change.
    unsynced: Vec<(u64, Option<Vec<u8>>)>,
    fault: Option<Fault>,
}

impl Disk {
    /// A disk that holds `image`, all of it durable (what a restart after a cut finds).
    fn from_image(image: Vec<u8>) -> Arc<Mutex<Disk>> {
        Arc::new(Mutex::new(Disk {
            live: image.clone(),
            durable: image,
            ..Default::default()
        }))
    }

    /// What a power cut leaves: the durable image and, for each unsynced write in order, a
    /// coin toss whether it reached the platter.
    fn crash_image(&self, rng: &mut harness::Rng) -> Vec<u8> {
        let mut img = self.durable.clone();
        for (offset, data) in &self.unsynced {
            if !rng.chance(0.5) {
                continue;
            }
            match data {
                Some(bytes) => {
                    let end = *offset as usize + bytes.len();
                    if img.len() < end {
                        img.resize(end, 0);
                    }
                    img[*offset as usize..end].copy_from_slice(bytes);
                }
                None => img.resize(*offset as usize, 0),
            }
        }
        img
    }
}

#[derive(Debug, Clone)]
struct FaultBackend(Arc<Mutex<Disk>>);

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl redb::StorageBackend for FaultBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let d = self.0.lock().unwrap();
        let end = offset as usize + out.len();
        if end > d.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&d.live[offset as usize..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        if d.fault == Some(Fault::NoSpace) && len > d.live.len() as u64 {
            return Err(io::Error::from_raw_os_error(28));
        }
        d.live.resize(len as usize, 0);
        d.unsynced.push((len, None));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        if d.fault == Some(Fault::SyncEio) {
            return Err(eio());
        }
        d.durable = d.live.clone();
        d.unsynced.clear();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        match d.fault {
            Some(Fault::NoSpace) => return Err(io::Error::from_raw_os_error(28)),
            Some(Fault::WriteEio(0)) => return Err(eio()),
            Some(Fault::WriteEio(n)) => d.fault = Some(Fault::WriteEio(n - 1)),
            _ => {}
        }
        let end = offset as usize + data.len();
        if d.live.len() < end {
            d.live.resize(end, 0);
        }
        d.live[offset as usize..end].copy_from_slice(data);
        d.unsynced.push((offset, Some(data.to_vec())));
        Ok(())
    }
}

fn store_on(disk: &Arc<Mutex<Disk>>) -> Arc<dyn Store> {
    let disk = disk.clone();
    Arc::new(RedbStore::on_backend(move || FaultBackend(disk.clone())).unwrap())
}

/// `n` grants from the user to research-bot (`tickets/0`, `tickets/1`, …).
async fn grant_tickets(u: &UserClient<'_>, n: usize) {
    for i in 0..n {
        u.grant(&common::grant_request(&format!("tickets/{i}")))
            .await
            .unwrap();
    }
}

async fn relay_on(base: &Path, store: Arc<dyn Store>) -> sealrelay::server::RunningRelay {
    let config = sealrelay::server::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: base.join("data"),
        dir: base.join("keys"),
        metrics_listen: "off".into(),
        ..Default::default()
    };
    let deps = sealrelay::server::Dependencies {
        store: Some(store),
        clock: Arc::new(sealrelay::clock::SystemClock),
    };
    sealrelay::server::start_with(config, deps).await.unwrap()
}

fn world(base: &Path) -> Vec<Identity> {
    provision(
        &base.join("keys"),
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        sealrelay::clock::now(),
    )
    .unwrap()
    .0
}

/// Copies the data directory (blob files and the relay's checkpoint record live there, beside
/// the store): the rest of what a power cut leaves.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            // A blob being written may vanish under us: what was not there was not on disk.
            let _ = std::fs::copy(&p, &dest);
        }
    }
}

fn body(i: usize) -> Vec<u8> {
    // Every third one over the inline threshold: a blob file fsynced before the commit.
    let len = if i.is_multiple_of(3) {
        100_000 + i
    } else {
        500 + i * 101
    };
    common::pattern(len, i as u8)
}

/// Threat 37: power is cut while 40 submissions are in flight at once; the relay restarts from
/// what the disk kept (the store's durable image plus a seeded random part of its unsynced
/// writes, and the data directory's files as they were). Every submission acked before the
/// cut is there and opens byte-exact; the start-up check of the log against its tree passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_37_a_power_cut_loses_no_acked_submission() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let ids = world(base);
    let (alice, bot) = (&ids[0], &ids[1]);
    let seed = harness::Rng::seed_from_env("threat 37 crash image");
    let mut rng = harness::Rng::new(seed);
    let disk = Arc::new(Mutex::new(Disk::default()));
    let relay = relay_on(base, store_on(&disk)).await;
    let addr = relay.local_addr.to_string();

    let u = UserClient::connect(alice, &addr).await.unwrap();
    grant_tickets(&u, 40).await;
    let a = AgentClient::connect(bot, &addr).await.unwrap();
    let grants = a.grants().await.unwrap();
    let cut = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let sends: Vec<_> = grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (a, cut, acked) = (&a, &cut, &acked);
            async move {
                let body = body(i);
                if let Ok(id) = a.send(g, &mut body.as_slice(), base).await {
                    // An ack seen before the cut was made durable before the cut.
                    if !cut.load(Ordering::SeqCst) {
                        acked.lock().unwrap().push((id, body));
                    }
                }
            }
        })
        .collect();
    // The cut comes once a seeded number of acks are in, with the rest in flight.
    let cut_at = 2 + rng.below(14) as usize;
    let enough = async {
        while acked.lock().unwrap().len() < cut_at {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    let kept = base.join("data-at-cut");
    // The sends stop being polled when the cut comes: no ack is seen after it.
    tokio::select! {
        _ = harness::join_all(sends) => {},
        _ = enough => {},
    };
    cut.store(true, Ordering::SeqCst);
    let image = disk.lock().unwrap().crash_image(&mut rng);
    copy_dir(&base.join("data"), &kept);
    let acked = acked.into_inner().unwrap();
    relay.shutdown().await;
    assert!(
        !acked.is_empty(),
        "nothing was acked before the cut: the test checked nothing (seed {seed})"
    );

    std::fs::remove_dir_all(base.join("data")).unwrap();
    std::fs::rename(&kept, base.join("data")).unwrap();
    let after = Disk::from_image(image);
    let relay = relay_on(base, store_on(&after)).await;
    let addr = relay.local_addr.to_string();
    let u = UserClient::connect(alice, &addr).await.unwrap();
    let listed: Vec<_> = u
        .inbox()
        .await
        .unwrap()
        .iter()
        .map(|e| e.envelope_id)
        .collect();
    eprintln!(
        "seed {seed}: cut after {cut_at} acks, {} acked before the cut, {} listed after",
        acked.len(),
        listed.len()
    );
    for (id, body) in &acked {
        assert!(
            listed.contains(id),
            "an acked envelope was lost in the power cut (seed {seed})"
        );
        let mut out = Vec::new();
        let f = u.fetch(*id, base, &mut out).await.unwrap();
        assert_eq!(f.status, DeliveryStatus::Delivered);
        assert_eq!(&out, body);
    }
    relay.shutdown().await;
}

async fn checkpoint_size(c: &sealrelay::client::Connection, who: &Identity) -> u64 {
    let (note, _) = c.checkpoint(None).await.unwrap();
    sealrelay::core::tlog::checkpoint::Checkpoint::verify(&note, who.log_key.as_ref().unwrap())
        .unwrap()
        .size
}

/// Threat 38 below the store: an fsync error, ENOSPC and an EIO in the middle of a commit each
/// refuse the submission with no ack; the store is reopened and writes resume (the refused
/// submission, sent again, is stored once, its blob kept for it); a fresh open of the storage passes the integrity check and every acked envelope
/// opens byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_38_fsync_enospc_and_eio_refuse_the_write_and_writes_resume() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let ids = world(base);
    let (alice, bot) = (&ids[0], &ids[1]);
    let disk = Arc::new(Mutex::new(Disk::default()));
    let relay = relay_on(base, store_on(&disk)).await;
    let addr = relay.local_addr.to_string();
    let u = UserClient::connect(alice, &addr).await.unwrap();
    grant_tickets(&u, 16).await;
    let a = AgentClient::connect(bot, &addr).await.unwrap();
    let mut grants = a.grants().await.unwrap().into_iter();
    let mut acked = Vec::new();
    for (k, fault) in [
        Fault::SyncEio,
        Fault::NoSpace,
        Fault::WriteEio(0),
        Fault::WriteEio(1),
        Fault::WriteEio(3),
    ]
    .into_iter()
    .enumerate()
    {
        let size_before = checkpoint_size(&u.conn, alice).await;
        disk.lock().unwrap().fault = Some(fault);
        let g = grants.next().unwrap();
        // Over the inline threshold: the body is a blob file.
        let first = common::pattern(100_000 + k, k as u8);
        let mut sealed = a.seal(&g, &mut first.as_slice(), base).unwrap();
        let err = a
            .submit_sealed(&mut sealed)
            .await
            .expect_err("a submission was acked through a failing disk");
        let msg = err.to_string();
        assert_eq!(
            err.kind(),
            sealrelay::ErrorKind::Unavailable,
            "{fault:?}: {msg}"
        );
        if fault == Fault::NoSpace {
            assert!(msg.contains("storage full"), "{fault:?}: {msg}");
        }
        // With the disk still failing, the log the relay signs has not grown by the refused
        // submission's leaf.
        assert_eq!(
            checkpoint_size(&u.conn, alice).await,
            size_before,
            "{fault:?}: a checkpoint was signed over a leaf that was not stored"
        );
        disk.lock().unwrap().fault = None;
        // Writes resume on the same relay. The refused submission's fate is not known to the
        // agent (after a failed fsync the bytes may still be read back, as on Linux), so it
        // sends the same submission again: stored once, whichever it was.
        let id = a
            .submit_sealed(&mut sealed)
            .await
            .unwrap_or_else(|e| panic!("the retry after {fault:?}: {e}"));
        acked.push((id, first));
        let g = grants.next().unwrap();
        let second = common::pattern(900, 2);
        let id = a
            .send(&g, &mut second.as_slice(), base)
            .await
            .unwrap_or_else(|e| panic!("after {fault:?}: {e}"));
        acked.push((id, second));
        assert_eq!(
            u.inbox().await.unwrap().len(),
            acked.len(),
            "after {fault:?}"
        );
    }
    relay.shutdown().await;
    // What the disk holds opens cleanly (the start-up integrity check) with exactly those, and
    // each opens byte-exact.
    let durable = disk.lock().unwrap().durable.clone();
    let again = Disk::from_image(durable);
    let relay = relay_on(base, store_on(&again)).await;
    let u = UserClient::connect(alice, &relay.local_addr.to_string())
        .await
        .unwrap();
    let listed: Vec<_> = u
        .inbox()
        .await
        .unwrap()
        .iter()
        .map(|e| e.envelope_id)
        .collect();
    assert_eq!(listed.len(), acked.len());
    for (id, body) in &acked {
        assert!(listed.contains(id));
        let mut out = Vec::new();
        let f = u.fetch(*id, base, &mut out).await.unwrap();
        assert_eq!(f.status, DeliveryStatus::Delivered);
        assert_eq!(&out, body, "an acked envelope's body");
    }
    relay.shutdown().await;
}

/// Threat 38, the reserve: with less free space than `min_free_bytes`, new grants and
/// submissions are refused as "storage full", while what revokes or reads goes on: a nearly
/// full disk never blocks a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_38_the_free_space_reserve_refuses_new_data_but_not_revocations() {
    let t = common::test_relay(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        // More than any disk has: the reserve is always eaten into.
        |c| c.min_free_bytes = u64::MAX,
    )
    .await;
    let (alice, bot) = (&t.ids[0], &t.ids[1]);
    let u = UserClient::connect(alice, &t.addr).await.unwrap();
    let err = u
        .grant(&common::grant_request("tickets/1"))
        .await
        .expect_err("a grant was stored inside the reserve");
    assert!(err.to_string().contains("storage full"), "{err}");
    assert!(u.inbox().await.unwrap().is_empty(), "reads go on");
    // A revocation still takes effect.
    harness::revoke_and_push(
        &t.dir.join("keys"),
        &t.admin,
        &t.addr,
        bot.id.as_ref().unwrap(),
        "key stolen",
        sealrelay::clock::now(),
    )
    .await;
    let a = AgentClient::connect(bot, &t.addr).await.unwrap();
    let err = a.grants().await.expect_err("a revoked agent was served");
    assert!(err.message().contains("revoked"), "{err}");
}

/// Helper-found defect: a blob whose submission the reserve refused at its commit (the upload's
/// own bytes took the disk under `min_free_bytes`) stayed on disk until a restart, since every
/// "storage full" answer was treated as an I/O failure whose record might yet be read back.
/// Every retry left one more. The reserve now holds the write back before its transaction, as a
/// refusal that wrote nothing, and the blob goes; the grant stays open for a later try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_38_a_blob_refused_by_the_reserve_at_its_commit_is_not_left_on_disk() {
    let store = Arc::new(common::hooked::Hooked::in_memory());
    let full = store.full_at_commit.clone();
    let t = common::test_relay_with(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        |_| {},
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    let u = UserClient::connect(&t.ids[0], &t.addr).await.unwrap();
    let a = AgentClient::connect(&t.ids[1], &t.addr).await.unwrap();
    let mut request = common::grant_request("tickets/1");
    request.max_bytes = 4 << 20;
    u.grant(&request).await.unwrap();
    let g = a.grants().await.unwrap().remove(0);
    let blobs = t.dir.join("data/blobs");
    let count = || std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    let plaintext = common::pattern(1 << 20, 3);
    full.store(true, Ordering::SeqCst);
    for attempt in 0..3 {
        let err = a
            .send(&g, &mut plaintext.as_slice(), &t.dir)
            .await
            .expect_err("a submission was stored inside the reserve");
        assert!(err.to_string().contains("storage full"), "{err}");
        assert_eq!(count(), 0, "attempt {attempt}: a refused blob was left");
    }
    // Space again: the same grant takes the envelope, and its blob is kept.
    full.store(false, Ordering::SeqCst);
    a.send(&g, &mut plaintext.as_slice(), &t.dir).await.unwrap();
    assert_eq!(count(), 1);
    t.relay.shutdown().await;
}

/// Helper-found defect: each upload's room was checked against the free space alone, so
/// uploads begun together each found room for themselves and together ate into the reserve
/// (kept for revocations). What the uploads receiving now will still write counts now: with
/// room for one envelope and a quarter, a second upload is refused while the first is half
/// sent, and taken once the first is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_38_uploads_begun_together_cannot_together_eat_into_the_reserve() {
    use sealrelay::core::wire::{self, Reply, Response};
    let store = Arc::new(common::hooked::Hooked::in_memory());
    let room = store.room.clone();
    let t = common::test_relay_with(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        |_| {},
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let u = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let a = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut request = common::grant_request("tickets/1");
    request.max_bytes = 4 << 20;
    let first = u.grant(&request).await.unwrap();
    request.resource = "tickets/2".into();
    u.grant(&request).await.unwrap();
    let second = a
        .grants()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.grant.grant_id != first)
        .unwrap();
    // The first envelope, sealed and signed here, goes up by hand: half of it, then a wait.
    let (body, statement) =
        common::sealed_for(alice_id, bot_id, first, &common::pattern(1 << 20, 5));
    let len = body.len() as u64;
    room.store(len + len / 4, Ordering::SeqCst);
    let raw =
        harness::pki::RawClient::new(Some((bot_id, bot_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(t.relay.local_addr).await;
    let (mut send, mut recv) = common::raw_submit(&conn, first, &statement, len).await;
    let half = body.len() / 2;
    send.write_all(&body[..half]).await.unwrap();
    // The first upload has begun once its blob is being written.
    let tmp = t.dir.join("data/blobs.tmp");
    for _ in 0..500 {
        if std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(std::fs::read_dir(&tmp).unwrap().count() > 0, "never began");
    let another = common::pattern(1 << 20, 6);
    let err = a
        .send(&second, &mut another.as_slice(), &t.dir)
        .await
        .expect_err("two uploads together took more than the room");
    assert!(err.to_string().contains("storage full"), "{err}");
    // The first goes on and is stored; then the second fits.
    send.write_all(&body[half..]).await.unwrap();
    send.finish().unwrap();
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let mut head = vec![0u8; wire::frame_len(prefix).unwrap()];
    recv.read_exact(&mut head).await.unwrap();
    let answer: Response = wire::decode_frame(&head).unwrap();
    assert!(
        matches!(answer, Response::Ok(Reply::Submitted { .. })),
        "{answer:?}"
    );
    a.send(&second, &mut another.as_slice(), &t.dir)
        .await
        .unwrap();
    t.relay.shutdown().await;
}
