//! The relay's envelope validator: what it must refuse and accept (one post-quantum hybrid
//! stanza by default, parsed strictly; one X25519 stanza only where the relay allows it; never a
//! mixture), plus property tests of the header codec (parse → serialize → identical) and of the
//! validator (never panics; whatever it accepts has a parseable header and a valid STREAM
//! length).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::str::FromStr;

use base64::Engine as _;
use proptest::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use sealrelay::core::envelope::header::{Header, Stanza};
use sealrelay::core::envelope::stream::sealed_len;
use sealrelay::core::envelope::validate::{
    validate_reader, validate_reader_with, EnvelopeValidator,
};

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    SystemRandom::new().fill(&mut v).unwrap();
    v
}

fn x25519_stanza() -> Stanza {
    Stanza {
        tag: "X25519".into(),
        args: vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(random(32))],
        body: random(32),
    }
}

/// A hybrid stanza of the right shape: a 1120-byte enc, a 32-byte body.
fn hybrid_stanza() -> Stanza {
    Stanza {
        tag: "mlkem768x25519".into(),
        args: vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(random(1120))],
        body: random(32),
    }
}

fn grease(body: usize) -> Stanza {
    Stanza {
        tag: "ab-grease".into(),
        args: vec!["x".into(), "y".into()],
        body: random(body),
    }
}

/// A header with these stanzas and a random payload of a valid STREAM length.
fn forge(stanzas: Vec<Stanza>, plaintext_len: u64) -> Vec<u8> {
    let mut out = Header {
        stanzas,
        mac: [3u8; 32],
    }
    .to_bytes();
    out.extend(random(16 + sealed_len(plaintext_len) as usize));
    out
}

fn validate(bytes: &[u8]) -> Result<(), String> {
    validate_reader(&mut &bytes[..])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// As a relay with `require_post_quantum = false` validates.
fn validate_allowing_x25519(bytes: &[u8]) -> Result<(), String> {
    validate_reader_with(&mut &bytes[..], true)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[track_caller]
fn refused(bytes: &[u8], needle: &str) {
    let err = validate(bytes).expect_err("validator accepted it");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn refuses_what_is_not_a_single_recipient_envelope() {
    // Two hybrid stanzas do not even fit the header cap; two X25519 stanzas are two recipients.
    refused(
        &forge(vec![hybrid_stanza(), hybrid_stanza()], 100),
        "longer than",
    );
    let two = forge(vec![x25519_stanza(), x25519_stanza()], 100);
    assert!(validate_allowing_x25519(&two)
        .unwrap_err()
        .contains("more than one recipient stanza"));
    // X25519: refused while post-quantum is required, in one line that says what to do; taken
    // where the relay allows it; never mixed with a hybrid stanza.
    let classic = forge(vec![x25519_stanza()], 100);
    refused(&classic, "requires post-quantum recipients");
    assert!(!validate(&classic).unwrap_err().contains('\n'));
    validate_allowing_x25519(&classic).unwrap();
    let mixed = forge(vec![hybrid_stanza(), x25519_stanza()], 100);
    refused(&mixed, "mixes a post-quantum and an X25519 recipient");
    assert!(validate_allowing_x25519(&mixed).is_err());
    // A hybrid stanza is parsed strictly (the CCTV header failures).
    let mut extra = hybrid_stanza();
    extra.args.push("x".into());
    refused(&forge(vec![extra], 100), "exactly two arguments");
    let mut short = hybrid_stanza();
    short.args = vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(random(1119))];
    refused(&forge(vec![short], 100), "not 1120");
    let mut body_len = hybrid_stanza();
    body_len.body = random(33);
    refused(&forge(vec![body_len], 100), "body is 33 bytes");
    let mut not_canonical = hybrid_stanza();
    not_canonical.args[0].pop();
    not_canonical.args[0].push('B');
    let last = not_canonical.args[0].clone();
    if base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&last)
        .is_ok()
    {
        refused(&forge(vec![not_canonical], 100), "not canonical base64");
    }
    let scrypt = Stanza {
        tag: "scrypt".into(),
        args: vec!["c2FsdHNhbHRzYWx0c2FsdA".into(), "18".into()],
        body: random(32),
    };
    refused(
        &forge(vec![scrypt], 100),
        "\"scrypt\" stanza is not allowed",
    );
    let plugin = Stanza {
        tag: "piv-p256".into(),
        args: vec!["abc".into(), "def".into()],
        body: random(32),
    };
    refused(
        &forge(vec![hybrid_stanza(), plugin], 100),
        "\"piv-p256\" stanza is not allowed",
    );
    refused(
        &forge(vec![hybrid_stanza(), grease(10), grease(20)], 100),
        "more than one grease",
    );
    refused(
        &forge(vec![hybrid_stanza(), grease(200)], 100),
        "larger than the age crate",
    );
    refused(&forge(vec![grease(10)], 100), "no recipient stanza");
    // Plaintext behind a forged header, short and long.
    let mut forged = Header {
        stanzas: vec![hybrid_stanza()],
        mac: [3u8; 32],
    }
    .to_bytes();
    let text = b"Q3 revenue by customer: ACME 1.2M, Initech 0.8M, Globex 2.1M. Do not share.\n"
        .repeat(3000);
    let len = 16 + sealed_len(text.len() as u64 - 16 - 16 * 4) as usize; // a valid STREAM length
    forged.extend_from_slice(&text[..len.min(text.len())]);
    refused(&forged, "not ciphertext");
    let mut short = Header {
        stanzas: vec![hybrid_stanza()],
        mac: [3u8; 32],
    }
    .to_bytes();
    short
        .extend_from_slice(b"0123456789abcdef{\"ssn\":\"123-45-6789\",\"name\":\"Alice Example\"}");
    refused(&short, "not ciphertext");
    // Lengths that cannot be a STREAM.
    let mut bad = forge(vec![hybrid_stanza()], 65_536 + 100);
    bad.truncate(bad.len() - 108); // 1 full chunk, then an 8-byte "final chunk" (shorter than a tag)
    refused(&bad, "cannot be an age STREAM");
    let mut bad = forge(vec![hybrid_stanza()], 65_536 + 100);
    bad.truncate(bad.len() - 116 + 16); // 1 full chunk, then an empty final chunk
    refused(&bad, "cannot be an age STREAM");
    refused(&bad, "cannot be an age STREAM");
    let mut no_nonce = Header {
        stanzas: vec![hybrid_stanza()],
        mac: [3u8; 32],
    }
    .to_bytes();
    no_nonce.extend(random(10));
    refused(&no_nonce, "shorter than its 16-byte nonce");
    refused(b"hello, world\n", "not an age v1 file");
    refused(&[b'a'; 5000], "longer than");
    refused(
        b"age-encryption.org/v1\n-> X25519\n",
        "ends before the age header",
    );
}

#[test]
fn accepts_ours_and_the_age_crates_output() {
    let id = age::x25519::Identity::generate();
    let recipient = age::x25519::Recipient::from_str(&id.to_public().to_string()).unwrap();
    for size in [0usize, 1, 100, 65_536, 65_537, 300_000] {
        let pt = common::pattern(size, 3);
        let mut ours = Vec::new();
        sealrelay::core::envelope::seal(&recipient, &mut pt.as_slice(), &mut ours, 2).unwrap();
        validate_allowing_x25519(&ours).unwrap();
        assert!(
            validate(&ours).is_err(),
            "X25519 taken while post-quantum is required"
        );
        // The hybrid recipient (the default for users).
        let pq = sealrelay::core::envelope::keys::AgeIdentity::generate(false).unwrap();
        let mut hybrid = Vec::new();
        sealrelay::core::envelope::seal(&pq.to_public(), &mut pt.as_slice(), &mut hybrid, 2)
            .unwrap();
        validate(&hybrid).unwrap();
        // The age crate adds a random grease stanza: try it several times.
        for _ in 0..8 {
            let enc =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let mut theirs = Vec::new();
            let mut w = enc.wrap_output(&mut theirs).unwrap();
            w.write_all(&pt).unwrap();
            w.finish().unwrap();
            validate_allowing_x25519(&theirs).unwrap();
        }
    }
}

#[test]
fn validator_gives_the_same_answer_whatever_the_split() {
    let env = forge(vec![hybrid_stanza(), grease(50)], 200_000);
    for split in [1usize, 7, 100, 4096, 65_536] {
        let mut v = EnvelopeValidator::new();
        for piece in env.chunks(split) {
            v.update(piece).unwrap();
        }
        let shape = v.finish().unwrap();
        assert_eq!(shape.header_len + shape.payload_len, env.len() as u64);
    }
}

fn arb_stanza() -> impl Strategy<Value = Stanza> {
    let word = || proptest::string::string_regex("[!-~]{1,12}").unwrap();
    (
        word(),
        proptest::collection::vec(word(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(tag, args, body)| Stanza { tag, args, body })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn header_serialize_parse_serialize_is_identical(stanzas in proptest::collection::vec(arb_stanza(), 0..5), mac in any::<[u8; 32]>()) {
        let h = Header { stanzas, mac };
        let bytes = h.to_bytes();
        let (parsed, n) = Header::parse(&mut bytes.as_slice()).unwrap();
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(&parsed, &h);
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn parse_never_panics_and_what_it_accepts_round_trips(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = Header { stanzas: vec![x25519_stanza(), grease(40)], mac: [9u8; 32] }.to_bytes();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        if let Ok((h, n)) = Header::parse(&mut bytes.as_slice()) {
            prop_assert_eq!(h.to_bytes(), bytes[..n].to_vec());
        }
    }

    #[test]
    fn validator_never_panics_and_accepts_only_valid_shapes(data in proptest::collection::vec(any::<u8>(), 0..3000), prefix in any::<bool>()) {
        let mut input = if prefix { Header { stanzas: vec![hybrid_stanza()], mac: [1u8; 32] }.to_bytes() } else { Vec::new() };
        input.extend(data);
        if let Ok(shape) = validate_reader(&mut input.as_slice()) {
            let (h, n) = Header::parse(&mut input.as_slice()).unwrap();
            prop_assert_eq!(n as u64, shape.header_len);
            prop_assert!(!h.stanzas.is_empty());
            prop_assert!(sealrelay::core::envelope::stream::is_valid_stream_len(shape.payload_len - 16));
        }
    }
}
