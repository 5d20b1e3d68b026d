use super::*;
use crate::core::tlog::{leaf_hash, Tree};

fn setup() -> (
    tempfile::TempDir,
    SigningKey,
    VerifierKey,
    Tree,
    SigningKey,
    CosignerKey,
) {
    let dir = tempfile::tempdir().unwrap();
    let log_key = SigningKey::generate().unwrap();
    let vk = VerifierKey::new("example.org/log", log_key.public()).unwrap();
    let mut tree = Tree::new();
    for i in 0..64u32 {
        tree.append(leaf_hash(&i.to_be_bytes()));
    }
    let wkey = SigningKey::generate().unwrap();
    let me = CosignerKey::new("witness.example/w1", wkey.public()).unwrap();
    (dir, log_key, vk, tree, wkey, me)
}

fn body(log_key: &SigningKey, vk: &VerifierKey, tree: &Tree, old: u64, size: u64) -> String {
    let cp = Checkpoint {
        origin: vk.name.clone(),
        size,
        root: tree.root(size).unwrap(),
    };
    AddCheckpoint {
        old_size: old,
        proof: if old == 0 {
            Vec::new()
        } else {
            tree.consistency_proof(old, size).unwrap()
        },
        note: cp.sign(log_key, vk).unwrap(),
    }
    .encode()
}

#[tokio::test]
async fn state_survives_reopen_and_a_second_process_is_kept_out() {
    let (dir, log_key, vk, tree, wkey, me) = setup();
    let wkey2 = SigningKey::from_pkcs8(wkey.pkcs8()).unwrap();
    let w = Witness::open(wkey, me.clone(), vec![vk.clone()], dir.path()).unwrap();
    let line = w
        .add_checkpoint(body(&log_key, &vk, &tree, 0, 10).as_bytes(), 100)
        .await
        .unwrap();
    let cp = Checkpoint {
        origin: vk.name.clone(),
        size: 10,
        root: tree.root(10).unwrap(),
    };
    let note = format!("{}{line}", cp.sign(&log_key, &vk).unwrap());
    assert_eq!(cosignature::verify(&note, &me).unwrap(), Some(100));
    // A second witness on the same state directory is refused while the first runs.
    let err = Witness::open(wkey2, me.clone(), vec![vk.clone()], dir.path())
        .err()
        .unwrap();
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    drop(w);
    let again = SigningKey::generate().unwrap();
    let me2 = CosignerKey::new("witness.example/w1", again.public()).unwrap();
    let w = Witness::open(again, me2, vec![vk.clone()], dir.path()).unwrap();
    // After a restart the witness remembers 10: a request from 0 is a 409 naming it.
    match w
        .add_checkpoint(body(&log_key, &vk, &tree, 0, 20).as_bytes(), 101)
        .await
    {
        Err(Failure::Refused(r)) => assert_eq!((r.status(), r.body()), (409, "10\n".into())),
        other => panic!("expected a 409, got {other:?}"),
    }
    w.add_checkpoint(body(&log_key, &vk, &tree, 10, 20).as_bytes(), 102)
        .await
        .unwrap();
    // A corrupted state file stops the witness rather than letting it forget.
    drop(w);
    let path = state_path(dir.path(), &vk.name);
    std::fs::write(&path, "example.org/log\n2x\n").unwrap();
    let k = SigningKey::generate().unwrap();
    let m = CosignerKey::new("w", k.public()).unwrap();
    assert!(Witness::open(k, m, vec![vk], dir.path()).is_err());
}

/// Helper-found: a client that went away while the witness wrote its new state dropped the
/// request's handler at that point: the write went on, but the state kept in memory did not
/// move, so a second request for the same size with another root was cosigned too, and the disk
/// held whichever write landed last (after a restart, a cosigned fork). The handler now runs the
/// request as a task of its own.
#[tokio::test]
async fn a_request_dropped_while_its_state_is_written_still_moves_the_state() {
    let (dir, log_key, vk, tree, wkey, me) = setup();
    let w = Arc::new(Witness::open(wkey, me, vec![vk.clone()], dir.path()).unwrap());
    let first = body(&log_key, &vk, &tree, 0, 10);
    let handler = add_checkpoint(
        axum::extract::State(w.clone()),
        axum::body::Body::from(first),
    );
    // Polled once (into the state write), then dropped: the client went away.
    let _ = tokio::time::timeout(std::time::Duration::ZERO, handler).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Another history of the same size: refused, the state is the first request's.
    let mut other = Tree::new();
    for i in 0..64u32 {
        other.append(leaf_hash(&(i + 1000).to_be_bytes()));
    }
    match w
        .add_checkpoint(body(&log_key, &vk, &other, 0, 10).as_bytes(), 101)
        .await
    {
        Err(Failure::Refused(r)) => assert_eq!(r.status(), 409, "{}", r.body()),
        other => panic!("another history of the same size was cosigned: {other:?}"),
    }
    let on_disk = std::fs::read_to_string(state_path(dir.path(), &vk.name)).unwrap();
    let first_cp = Checkpoint {
        origin: vk.name.clone(),
        size: 10,
        root: tree.root(10).unwrap(),
    };
    assert_eq!(on_disk, first_cp.note_text());
}

#[tokio::test]
async fn concurrent_requests_never_move_the_state_backwards() {
    let (dir, log_key, vk, tree, wkey, me) = setup();
    let w = Arc::new(Witness::open(wkey, me, vec![vk.clone()], dir.path()).unwrap());
    // Everyone believes the witness is at 8 (after a first cosignature), then races.
    w.add_checkpoint(body(&log_key, &vk, &tree, 0, 8).as_bytes(), 1)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for size in 9..=40u64 {
        let b = body(&log_key, &vk, &tree, 8, size);
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.add_checkpoint(b.as_bytes(), 2).await.ok().map(|_| size)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            won.push(s);
        }
    }
    // Exactly one request extended 8; the others were told the new size.
    assert_eq!(won.len(), 1, "{won:?}");
    let state = load_state(&state_path(dir.path(), &vk.name), &vk.name)
        .unwrap()
        .unwrap();
    assert_eq!(state.size, won[0]);
}

#[test]
fn keygen_writes_a_private_key_and_its_verifier_key_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.key");
    let me = keygen("witness.example/w1", &out).unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (key, loaded) = load_key(&out).unwrap();
    assert_eq!(loaded, me);
    assert_eq!(key.public(), me.key);
    assert_eq!(read_cosigner_key(&pub_path(&out)).unwrap(), me);
    let err = keygen("witness.example/w1", &out).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    assert_eq!(load_key(&out).unwrap().1, me, "nothing replaced");
    assert!(keygen("bad name", &dir.path().join("x")).is_err());
}
