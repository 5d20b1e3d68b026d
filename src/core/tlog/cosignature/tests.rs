use super::*;
use crate::core::sign::VerifierKey;
use crate::core::tlog::checkpoint::Checkpoint;

fn log() -> (SigningKey, VerifierKey, String, String) {
    let key = SigningKey::generate().unwrap();
    let vk = VerifierKey::new("example.org/sealrelay/log", key.public()).unwrap();
    let cp = Checkpoint {
        origin: vk.name.clone(),
        size: 9,
        root: [3u8; 32],
    };
    let note = cp.sign(&key, &vk).unwrap();
    (key, vk, cp.note_text(), note)
}

fn witness(name: &str) -> (SigningKey, CosignerKey) {
    let key = SigningKey::generate().unwrap();
    let ck = CosignerKey::new(name, key.public()).unwrap();
    (key, ck)
}

#[test]
fn cosign_verify_and_every_byte_flip_is_caught() {
    let (_, vk, text, note) = log();
    let (wkey, w) = witness("witness.example/w1");
    let line = cosign(&text, 1_700_000_000, &wkey, &w).unwrap();
    let cosigned = format!("{note}{line}");
    assert_eq!(verify(&cosigned, &w).unwrap(), Some(1_700_000_000));
    // The log's signature still verifies with the cosignature beside it.
    Checkpoint::verify(&cosigned, &vk).unwrap();
    // Without the line there is no cosignature; another witness's key finds none.
    assert_eq!(verify(&note, &w).unwrap(), None);
    let (_, other) = witness("witness.example/w2");
    assert_eq!(verify(&cosigned, &other).unwrap(), None);
    // Each flipped bit of the cosigned region is caught: an error or no valid cosignature.
    let start = note.len();
    let bytes = cosigned.as_bytes();
    for i in (0..text.len()).chain(start..bytes.len() - 1) {
        let mut t = bytes.to_vec();
        t[i] ^= 0x01;
        let Ok(s) = std::str::from_utf8(&t) else {
            continue;
        };
        assert!(
            !matches!(verify(s, &w), Ok(Some(_))),
            "byte {i} flipped still verifies"
        );
    }
}

#[test]
fn key_ids_and_vkeys_use_the_cosignature_algorithm_byte() {
    let (_, w) = witness("witness.example/w1");
    let text = w.encode();
    assert_eq!(CosignerKey::parse(&text).unwrap(), w);
    // The same key as a note (0x01) key has another ID and is not a cosigner key.
    let as_log = VerifierKey::new(&w.name, w.key).unwrap();
    assert_ne!(as_log.key_id(), w.key_id());
    assert!(CosignerKey::parse(&as_log.encode()).is_err());
    assert!(VerifierKey::parse(&text).is_err());
    // A cosignature by that key under the 0x01 key ID is not a cosignature.
    let mut tampered = text.clone().into_bytes();
    let i = w.name.len() + 1;
    tampered[i] = if tampered[i] == b'0' { b'1' } else { b'0' };
    assert!(CosignerKey::parse(std::str::from_utf8(&tampered).unwrap()).is_err());
}

#[test]
fn a_bad_signature_under_a_known_key_rejects_the_note() {
    let (_, _, text, note) = log();
    let (wkey, w) = witness("witness.example/w1");
    let line = cosign(&text, 6, &wkey, &w).unwrap();
    // Same name and key ID, the timestamp changed under the signature: the note is refused,
    // not skipped.
    let b64 = line.trim_end().rsplit(' ').next().unwrap();
    let mut blob = B64.decode(b64).unwrap();
    blob[4..12].copy_from_slice(&5u64.to_be_bytes());
    let forged = line.replace(b64, &B64.encode(&blob));
    let err = verify(&format!("{note}{forged}"), &w).unwrap_err();
    assert!(err.message().contains("witness.example/w1"), "{err}");
    assert!(WitnessPolicy::new(vec![w], None)
        .unwrap()
        .check(&format!("{note}{forged}"))
        .is_err());
}

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

#[test]
fn policy_counts_distinct_witnesses_and_says_who_is_missing() {
    let (_, _, text, note) = log();
    let (k1, w1) = witness("w1.example");
    let (k2, w2) = witness("w2.example");
    let (_, w3) = witness("w3.example");
    let policy = WitnessPolicy::new(vec![w1.clone(), w2.clone(), w3.clone()], Some(2)).unwrap();
    let one = format!("{note}{}", cosign(&text, 1, &k1, &w1).unwrap());
    let err = policy.check(&one).unwrap_err();
    assert_eq!(
        err.message(),
        "not witnessed: 1 of the 2 required witness cosignatures (missing: w2.example, w3.example)"
    );
    // The same witness twice is still one.
    let twice = format!("{one}{}", cosign(&text, 2, &k1, &w1).unwrap());
    assert!(policy.check(&twice).is_err());
    let two = format!("{one}{}", cosign(&text, 3, &k2, &w2).unwrap());
    let ok = policy.check(&two).unwrap();
    assert_eq!(ok.by.len(), 2);
    // Policies: 1..=n, names and keys distinct; the file form.
    assert!(WitnessPolicy::new(vec![w1.clone()], Some(2)).is_err());
    assert!(WitnessPolicy::new(vec![w1.clone()], Some(0)).is_err());
    assert!(WitnessPolicy::new(vec![w1.clone(), w1.clone()], None).is_err());
    // The same key under another name is still one witness.
    let alias = CosignerKey::new("w1-alias.example", w1.key).unwrap();
    assert!(WitnessPolicy::new(vec![w1.clone(), alias], Some(2)).is_err());
    // Only the verified line of a witness's answer is kept: junk under its name is dropped.
    let good = cosign(&text, 9, &k1, &w1).unwrap();
    let junk = format!("\u{2014} {} AAAAAAAAAAAAAAAA\n", w1.name);
    assert_eq!(
        verified_line(&note, &format!("{junk}{good}"), &w1),
        Some(good.clone())
    );
    assert_eq!(verified_line(&note, &junk, &w1), None);
    assert!(WitnessPolicy::new(Vec::new(), None).is_err());
    let file = format!(
        "quorum = 1\nwitnesses = [\"{}\", \"{}\"]\n",
        w1.encode(),
        w2.encode()
    );
    let p = WitnessPolicy::parse_file(&file).unwrap();
    assert_eq!(p.quorum, 1);
    assert_eq!(p.witnesses, vec![w1.clone(), w2.clone()]);
    let all = WitnessPolicy::parse_file(&format!("witnesses = [\"{}\"]\n", w1.encode())).unwrap();
    assert_eq!(all.quorum, 1);
    assert!(WitnessPolicy::parse_file("quorum = 1\nwitnesses = []\nextra = 1\n").is_err());
    assert_eq!(lines_of(&two, std::slice::from_ref(&w2)).len(), 1);
    assert_eq!(lines_of(&two, &[w1, w2]).len(), 2);
}

/// The examples of C2SP `tlog-cosignature` (c2sp.org/tlog-cosignature, "Ed25519 signed
/// message" and the cosigned checkpoint at the top). The spec gives no witness public key, so
/// the signature itself cannot be checked; its layout and the signed message can.
#[test]
fn c2sp_tlog_cosignature_examples() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        message(text, 1679315147),
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
    let note = format!(
        "{text}\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    );
    let parsed = Note::split(&note).unwrap();
    assert_eq!(parsed.text, text);
    assert_eq!(parsed.signatures.len(), 2);
    let cosig = &parsed.signatures[1];
    assert_eq!(cosig.name, "witness.example.com/w1");
    assert_eq!(cosig.blob.len(), 4 + 8 + 64);
    // The timestamp in the signature is the one of the spec's signed-message example.
    assert_eq!(
        u64::from_be_bytes(cosig.blob[4..12].try_into().unwrap()),
        1679315147
    );
    let cp = Checkpoint::parse_text(parsed.text).unwrap();
    assert_eq!(cp.size, 20852163);
    // A key that is not the example's (it is not published) finds a mismatched key ID, so no
    // cosignature, rather than a failed one.
    let (_, stranger) = witness("witness.example.com/w1");
    assert_eq!(verify(&note, &stranger).unwrap(), None);
}
