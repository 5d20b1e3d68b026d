use super::*;
use crate::core::sign::SigningKey;
use crate::core::tlog::{leaf_hash, Tree};

struct Log {
    key: SigningKey,
    vk: VerifierKey,
    tree: Tree,
}

impl Log {
    fn new(name: &str, key: Option<SigningKey>) -> Log {
        let key = key.unwrap_or_else(|| SigningKey::generate().unwrap());
        let vk = VerifierKey::new(name, key.public()).unwrap();
        Log {
            key,
            vk,
            tree: Tree::new(),
        }
    }
    fn grow(&mut self, n: u64, tag: &str) {
        for i in 0..n {
            self.tree.append(leaf_hash(format!("{tag}{i}").as_bytes()));
        }
    }
    fn checkpoint(&self, size: u64) -> (Checkpoint, String) {
        let cp = Checkpoint {
            origin: self.vk.name.clone(),
            size,
            root: self.tree.root(size).unwrap(),
        };
        let note = cp.sign(&self.key, &self.vk).unwrap();
        (cp, note)
    }
    fn request(&self, old: u64, size: u64) -> AddCheckpoint {
        AddCheckpoint {
            old_size: old,
            proof: if old == 0 {
                Vec::new()
            } else {
                self.tree.consistency_proof(old, size).unwrap()
            },
            note: self.checkpoint(size).1,
        }
    }
}

#[test]
fn first_contact_then_consistent_growth_is_cosigned() {
    let mut log = Log::new("example.org/log", None);
    log.grow(10, "a");
    let req = log.request(0, 6);
    let cp = decide(&req, Some(&log.vk), None).unwrap();
    assert_eq!(cp.size, 6);
    let next = decide(&log.request(6, 10), Some(&log.vk), Some(&cp)).unwrap();
    assert_eq!(next.size, 10);
    // The same tree again is fine (an idempotent retry).
    decide(&log.request(10, 10), Some(&log.vk), Some(&next)).unwrap();
    // From an empty tree the witness cosigned, anything extends it.
    let empty = log.checkpoint(0).0;
    decide(&log.request(0, 4), Some(&log.vk), Some(&empty)).unwrap();
}

#[test]
fn every_refusal_has_its_status() {
    let mut log = Log::new("example.org/log", None);
    log.grow(12, "a");
    let latest = log.checkpoint(8).0;
    let status =
        |req: &AddCheckpoint, l: Option<&Checkpoint>| decide(req, Some(&log.vk), l).unwrap_err();
    // 404: an origin the witness does not know.
    let unknown = decide(&log.request(8, 12), None, Some(&latest)).unwrap_err();
    assert_eq!(unknown.status(), 404);
    // 403: signed by another key under the same origin.
    let impostor = {
        let mut other = Log::new("example.org/log", None);
        other.grow(12, "a");
        other.request(8, 12)
    };
    assert_eq!(status(&impostor, Some(&latest)).status(), 403);
    // 400: the old size above the checkpoint's; a proof with old size 0.
    let mut above = log.request(8, 12);
    above.old_size = 13;
    assert_eq!(status(&above, Some(&latest)).status(), 400);
    let mut proof_from_zero = log.request(0, 12);
    proof_from_zero.proof = log.tree.consistency_proof(4, 12).unwrap();
    assert_eq!(status(&proof_from_zero, None).status(), 400);
    // 409 with the latest size: the client's old size is not the witness's.
    let stale = status(&log.request(4, 12), Some(&latest));
    assert_eq!(stale.status(), 409);
    assert_eq!(stale.body(), "8\n");
    let first = status(&log.request(0, 12), Some(&latest));
    assert_eq!((first.status(), first.body()), (409, "8\n".to_owned()));
    // 422: a proof that does not verify.
    let mut broken = log.request(8, 12);
    broken.proof[0][0] ^= 1;
    assert_eq!(status(&broken, Some(&latest)).status(), 422);
    // A smaller tree after a larger one: 409 (its old size cannot match), never a cosignature.
    let smaller = status(&log.request(0, 5), Some(&latest));
    assert_eq!(smaller.status(), 409);
}

#[test]
fn a_fork_is_refused_at_the_same_size_and_beyond() {
    let key = SigningKey::generate().unwrap();
    let key2 = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
    let mut a = Log::new("example.org/log", Some(key));
    let mut b = Log::new("example.org/log", Some(key2));
    a.grow(5, "same");
    b.grow(5, "same");
    a.grow(5, "a");
    b.grow(7, "b");
    let seen = decide(&a.request(0, 10), Some(&a.vk), None).unwrap();
    // Same size, other root: 409.
    let same = decide(&b.request(10, 10), Some(&b.vk), Some(&seen)).unwrap_err();
    assert_eq!(same.status(), 409);
    // Larger, with the forked log's own proof from 10: 422.
    let beyond = decide(&b.request(10, 12), Some(&b.vk), Some(&seen)).unwrap_err();
    assert_eq!(beyond.status(), 422, "{}", beyond.reason());
}

#[test]
fn request_bodies_parse_strictly() {
    let mut log = Log::new("example.org/log", None);
    log.grow(9, "a");
    let req = log.request(3, 9);
    assert_eq!(AddCheckpoint::parse(req.encode().as_bytes()).unwrap(), req);
    for bad in [
        "old 03\n\nx\n".to_owned(),
        "old -1\n\nx\n".to_owned(),
        "new 3\n\nx\n".to_owned(),
        "old 3\nnot base64!\n\nx\n".to_owned(),
        "old 3\nAAAA\n\nx\n".to_owned(),
        "old 3".to_owned(),
        "old 3\n".to_owned(),
        format!(
            "old 3\n{}\n",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(64)
        ),
    ] {
        assert_eq!(
            AddCheckpoint::parse(bad.as_bytes()).unwrap_err().status(),
            400,
            "{bad:?}"
        );
    }
    assert!(AddCheckpoint::parse(&vec![b'a'; MAX_REQUEST_LEN + 1]).is_err());
}

/// The example request body of C2SP `tlog-witness` (c2sp.org/tlog-witness, "add-checkpoint"),
/// and its example response body, parsed by this implementation.
#[test]
fn c2sp_tlog_witness_examples_parse() {
    let body = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";
    let req = AddCheckpoint::parse(body.as_bytes()).unwrap();
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.proof.len(), 4);
    assert_eq!(req.encode(), body);
    let note = Note::split(&req.note).unwrap();
    assert_eq!(note.signatures.len(), 2);
    let cp = Checkpoint::parse_text(note.text).unwrap();
    assert_eq!(
        (cp.origin.as_str(), cp.size),
        ("example.com/behind-the-sofa", 20852163)
    );
    // An unknown origin is a 404, whatever else is in the request.
    assert_eq!(decide(&req, None, None).unwrap_err().status(), 404);
    // The example response: three cosignature/v1 lines (4-byte ID, 8-byte time, signature).
    let response = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n\
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n\
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n";
    let joined = format!("{}{response}", req.note);
    let all = Note::split(&joined).unwrap();
    assert_eq!(all.signatures.len(), 5);
    assert!(all.signatures[2..].iter().all(|s| s.blob.len() == 76));
}
