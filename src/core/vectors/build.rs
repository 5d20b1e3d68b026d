//! Builds the vectors from fixed test seeds. The seeds are public test values: nothing signed
//! with them is trusted anywhere.

use serde_json::{json, Value};

use super::{field_json, pretty, FILES};
use crate::core::codec::traced;
use crate::core::directory::{Attributes, DirectoryEntry, Revocation};
use crate::core::dispatch::Dispatch;
use crate::core::envelope::submission::Submission;
use crate::core::grant::{Approval, DeliveryStatus, Denial, Grant, Receipt};
use crate::core::keylog::KeyRotation;
use crate::core::receipt_file::ReceiptFile;
use crate::core::sign::{Signed, SigningKey, VerifierKey};
use crate::core::store::{statement_digest, Event};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::cosignature::{cosign, CosignerKey};
use crate::core::tlog::{leaf_hash, Tree};
use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId, GrantId, PartyKind, SpiffeId};

/// The vectors' clock: 2026-05-28T00:26:40Z.
const NOW: u64 = 1_780_000_000;
const DAY: u64 = 86_400;
const DOMAIN: &str = "example.org";
const LOG_ORIGIN: &str = "example.org/log";

struct Parties {
    authority: SigningKey,
    alice: SigningKey,
    bob: SigningKey,
    bot: SigningKey,
    log: SigningKey,
    witness: SigningKey,
}

fn key(n: u8) -> Result<SigningKey> {
    SigningKey::from_seed(&[n; 32])
}

fn id(kind: PartyKind, name: &str) -> Result<SpiffeId> {
    SpiffeId::new(DOMAIN, kind, name)
}

/// The X25519 age recipient of a fixed test secret.
fn recipient(n: u8) -> Result<String> {
    use bech32::{Bech32, Hrp};
    let hrp = Hrp::parse("age-secret-key-").map_err(|e| Error::internal(e.to_string()))?;
    let secret = bech32::encode::<Bech32>(hrp, &[n; 32])
        .map_err(|e| Error::internal(e.to_string()))?
        .to_uppercase();
    let identity: age::x25519::Identity = secret
        .parse()
        .map_err(|e: &str| Error::internal(e.to_owned()))?;
    Ok(identity.to_public().to_string())
}

fn statement(
    name: &str,
    signed: &Signed,
    signer: &SigningKey,
    encode: impl FnOnce() -> Vec<u8>,
) -> Result<Value> {
    let (bytes, fields) = traced(encode);
    if bytes != signed.statement {
        return Err(Error::internal(format!(
            "vector {name}: encoding is not stable"
        )));
    }
    Ok(json!({
        "name": name,
        "type": signed.ty.tag(),
        "signer": hex(signer.public().0),
        "statement": hex(&signed.statement),
        "signature": hex(signed.signature),
        "fields": fields.iter().map(field_json).collect::<Vec<_>>(),
        "valid": true,
    }))
}

fn user_entry(p: &Parties) -> Result<DirectoryEntry> {
    Ok(DirectoryEntry {
        id: id(PartyKind::User, "alice")?,
        age_recipient: Some(recipient(2)?),
        signing_key: p.alice.public(),
        tls_spki_sha256: [0xa1; 32],
        attributes: Attributes {
            clearance: 3,
            roles: vec!["finance".into()],
            scopes: vec![],
        },
        serial: 1,
        not_before: NOW - DAY,
        not_after: NOW + 365 * DAY,
        enrolled_by: "root".into(),
        rotation: None,
    })
}

fn grant(p: &Parties) -> Result<Grant> {
    let _ = p;
    Ok(Grant {
        grant_id: GrantId([0x11; 16]),
        user: id(PartyKind::User, "alice")?,
        agent: id(PartyKind::Agent, "research-bot")?,
        resource: "tickets/4711".into(),
        purpose: "summarise the open ticket for the weekly review".into(),
        created: NOW,
        expires: NOW + 3600,
        max_bytes: 1 << 20,
    })
}

fn receipt() -> Result<Receipt> {
    Ok(Receipt {
        envelope_id: EnvelopeId([0x22; 16]),
        grant_id: GrantId([0x11; 16]),
        user: id(PartyKind::User, "alice")?,
        agent: id(PartyKind::Agent, "research-bot")?,
        ciphertext_root: [0x33; 32],
        status: DeliveryStatus::Delivered,
        time: NOW + 60,
    })
}

fn statements(p: &Parties) -> Result<Value> {
    let mut out = Vec::new();
    let entry = user_entry(p)?;
    out.push(statement(
        "directory-entry-user",
        &entry.sign(&p.authority)?,
        &p.authority,
        || entry.encode(),
    )?);
    let agent = DirectoryEntry {
        id: id(PartyKind::Agent, "research-bot")?,
        age_recipient: None,
        signing_key: p.bot.public(),
        tls_spki_sha256: [0xb0; 32],
        attributes: Attributes {
            clearance: 0,
            roles: vec![],
            scopes: vec!["tickets/*".into()],
        },
        serial: 2,
        not_before: NOW - DAY,
        not_after: NOW + 90 * DAY,
        enrolled_by: "root".into(),
        rotation: None,
    };
    out.push(statement(
        "directory-entry-agent",
        &agent.sign(&p.authority)?,
        &p.authority,
        || agent.encode(),
    )?);
    let rotation = KeyRotation {
        id: entry.id.clone(),
        from_serial: 1,
        signing_key: p.bob.public(),
        tls_spki_sha256: [0xa2; 32],
        age_recipient: Some(recipient(4)?),
        created: NOW + DAY,
    };
    let signed_rotation = rotation.sign(&p.alice);
    out.push(statement(
        "key-rotation",
        &signed_rotation,
        &p.alice,
        || rotation.encode(),
    )?);
    let rotated = DirectoryEntry {
        signing_key: p.bob.public(),
        tls_spki_sha256: [0xa2; 32],
        age_recipient: rotation.age_recipient.clone(),
        serial: 2,
        not_before: NOW + DAY,
        rotation: Some(signed_rotation),
        ..entry.clone()
    };
    out.push(statement(
        "directory-entry-rotated",
        &rotated.sign(&p.authority)?,
        &p.authority,
        || rotated.encode(),
    )?);
    let revocation = Revocation {
        id: agent.id.clone(),
        serial: 2,
        revoked_at: NOW + 2 * DAY,
        reason: "laptop lost".into(),
    };
    out.push(statement(
        "revocation",
        &revocation.sign(&p.authority)?,
        &p.authority,
        || revocation.encode(),
    )?);
    let g = grant(p)?;
    let signed_grant = g.sign(&p.alice)?;
    out.push(statement("grant", &signed_grant, &p.alice, || g.encode())?);
    let approval = Approval {
        grant_id: g.grant_id,
        grant_sha256: g.digest(),
        approver: id(PartyKind::User, "bob")?,
        time: NOW + 30,
    };
    out.push(statement(
        "approval",
        &approval.sign(&p.bob),
        &p.bob,
        || approval.encode(),
    )?);
    let denial = Denial {
        grant_id: g.grant_id,
        grant_sha256: g.digest(),
        approver: id(PartyKind::User, "bob")?,
        reason: "not for this quarter".into(),
        time: NOW + 30,
    };
    out.push(statement("denial", &denial.sign(&p.bob), &p.bob, || {
        denial.encode()
    })?);
    let dispatch = Dispatch {
        grant_id: g.grant_id,
        grant_digest: statement_digest(&signed_grant),
        user: g.user.clone(),
        agent: g.agent.clone(),
        source: id(PartyKind::Source, "warehouse")?,
        resource: g.resource.clone(),
        time: NOW + 40,
    };
    out.push(statement(
        "dispatch",
        &dispatch.sign(&p.bot),
        &p.bot,
        || dispatch.encode(),
    )?);
    let submission = Submission {
        grant_id: g.grant_id,
        user: g.user.clone(),
        agent: g.agent.clone(),
        ciphertext_root: [0x33; 32],
        ciphertext_len: 4242,
    };
    out.push(statement(
        "submission",
        &submission.sign(&p.bot),
        &p.bot,
        || submission.encode(),
    )?);
    let r = receipt()?;
    let signed_receipt = r.sign(&p.alice);
    out.push(statement("receipt", &signed_receipt, &p.alice, || {
        r.encode()
    })?);

    // Must fail: the same signature with S + L (strict Ed25519 refuses a non-canonical S), a
    // grant's bytes and signature read as an approval, a grant signed by another key.
    let mut malleable = signed_grant.signature;
    add_group_order(&mut malleable);
    out.push(json!({
        "name": "grant-non-canonical-signature", "type": "grant",
        "signer": hex(p.alice.public().0), "statement": hex(&signed_grant.statement),
        "signature": hex(malleable), "valid": false,
        "why": "the signature's S is not below the group order (RFC 8032 strict verification)",
    }));
    out.push(json!({
        "name": "grant-read-as-approval", "type": "approval",
        "signer": hex(p.alice.public().0), "statement": hex(&signed_grant.statement),
        "signature": hex(signed_grant.signature), "valid": false,
        "why": "the type tag is part of the signed bytes",
    }));
    out.push(json!({
        "name": "grant-wrong-signer", "type": "grant",
        "signer": hex(p.bob.public().0), "statement": hex(&signed_grant.statement),
        "signature": hex(signed_grant.signature), "valid": false,
        "why": "signed by alice, checked against bob's key",
    }));
    Ok(file("statements", "Signed statements (docs/formats.md): `statement` is the exact signed bytes, `fields` how they are built after the prefix `sealrelay-statement-v1` 0x00 type-tag 0x00; `signer` the Ed25519 public key that must verify `signature` under RFC 8032 strict rules.", out))
}

/// Adds the Ed25519 group order L to the S half of a signature (little-endian).
fn add_group_order(sig: &mut [u8; 64]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
}

fn file(format: &str, about: &str, vectors: Vec<Value>) -> Value {
    json!({ "sealrelay_vectors": 1, "format": format, "about": about, "vectors": vectors })
}

fn wire(p: &Parties) -> Result<Value> {
    let out = super::wire::wire(&grant(p)?, &receipt()?, &p.alice, &p.bot)?;
    Ok(file("wire", "Protocol frames (docs/protocol.md): `frame` is u32 big-endian length || postcard(message); `message` is the decoded request or response as serde's JSON, for reading only (the bytes are the format).", out))
}

/// The log of the receipt vectors: four events, the receipt's at index 3, then one more.
fn log(p: &Parties) -> Result<(Tree, Vec<u8>, Signed)> {
    let signed_receipt = receipt()?.sign(&p.alice);
    let r = receipt()?;
    let event = |time, kind: &str, subject: String, digest: Vec<u8>| Event {
        time,
        kind: kind.into(),
        actor: r.user.to_string(),
        subject,
        decision: "allow".into(),
        detail: String::new(),
        digest,
    };
    let leaves = [
        event(NOW, "grant.created", r.grant_id.to_hex(), vec![]).leaf_bytes(),
        event(
            NOW + 10,
            "envelope.submitted",
            r.envelope_id.to_hex(),
            vec![],
        )
        .leaf_bytes(),
        event(NOW + 20, "envelope.fetched", r.envelope_id.to_hex(), vec![]).leaf_bytes(),
        Event {
            decision: "delivered".into(),
            ..event(
                NOW + 60,
                "receipt.recorded",
                r.envelope_id.to_hex(),
                statement_digest(&signed_receipt).to_vec(),
            )
        }
        .leaf_bytes(),
        event(NOW + 70, "grant.created", hex([0x44; 16]), vec![]).leaf_bytes(),
    ];
    let tree = Tree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    Ok((tree, leaves[3].clone(), signed_receipt))
}

fn signed_checkpoint(
    p: &Parties,
    tree: &Tree,
) -> Result<(Checkpoint, String, VerifierKey, CosignerKey)> {
    let log_vk = VerifierKey::new(LOG_ORIGIN, p.log.public())?;
    let witness = CosignerKey::new("witness.example.net", p.witness.public())?;
    let cp = Checkpoint {
        origin: LOG_ORIGIN.into(),
        size: tree.size(),
        root: tree
            .root(tree.size())
            .map_err(|e| Error::internal(e.to_string()))?,
    };
    let note = cp.sign(&p.log, &log_vk)?;
    let line = cosign(&cp.note_text(), NOW + 90, &p.witness, &witness)?;
    Ok((cp, format!("{note}{line}"), log_vk, witness))
}

fn signed_checkpoint_plain(p: &Parties, tree: &Tree) -> Result<String> {
    let (cp, _, log_vk, _) = signed_checkpoint(p, tree)?;
    cp.sign(&p.log, &log_vk)
}

fn checkpoints(p: &Parties) -> Result<Value> {
    let (tree, _, _) = log(p)?;
    let (cp, cosigned, log_vk, witness) = signed_checkpoint(p, &tree)?;
    let plain = cp.sign(&p.log, &log_vk)?;
    let root = base64_root(&cp);
    let altered = cosigned.replacen("\n5\n", "\n6\n", 1);
    let out = vec![
        json!({"name": "signed", "log_key": log_vk.encode(), "note": plain, "origin": cp.origin, "size": cp.size, "root": root, "witnesses": [], "valid": true}),
        json!({"name": "cosigned", "log_key": log_vk.encode(), "note": cosigned, "origin": cp.origin, "size": cp.size, "root": root,
               "witnesses": [{"key": witness.encode(), "time": NOW + 90}], "valid": true}),
        json!({"name": "size-altered", "log_key": log_vk.encode(), "note": altered, "valid": false,
               "why": "the tree size was changed after signing"}),
    ];
    Ok(file("checkpoints", "Checkpoints as C2SP signed notes (tlog-checkpoint), with witness cosignatures (tlog-cosignature/v1): `log_key` and each witness `key` are verifier keys in the note format.", out))
}

fn base64_root(cp: &Checkpoint) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(cp.root)
}

fn receipts(p: &Parties) -> Result<Value> {
    let (tree, leaf, signed_receipt) = log(p)?;
    let (_, cosigned, log_vk, witness) = signed_checkpoint(p, &tree)?;
    let entry = user_entry(p)?;
    let file_ = ReceiptFile {
        receipt: signed_receipt,
        user_entry: entry.sign(&p.authority)?,
        leaf_index: 3,
        leaf,
        tree_size: tree.size(),
        proof: tree
            .inclusion_proof(3, tree.size())
            .map_err(|e| Error::internal(e.to_string()))?,
        checkpoint: cosigned,
    };
    let authority = VerifierKey::new(DOMAIN, p.authority.public())?;
    let r = receipt()?;
    let expected = |witnessed_by: Vec<&str>| {
        json!({
            "envelope_id": r.envelope_id.to_hex(),
            "grant_id": r.grant_id.to_hex(),
            "status": "delivered",
            "user": r.user.to_string(),
            "agent": r.agent.to_string(),
            "time": r.time,
            "leaf_index": 3,
            "checkpoint_size": tree.size(),
            "checkpoint_origin": LOG_ORIGIN,
            "witnessed_by": witnessed_by,
        })
    };
    let unwitnessed = ReceiptFile {
        checkpoint: signed_checkpoint_plain(p, &tree)?,
        ..file_.clone()
    };
    let out = vec![
        json!({
            "name": "delivered-witnessed",
            "authority": authority.encode(),
            "log_key": log_vk.encode(),
            "witnesses": [witness.encode()],
            "quorum": 1,
            "receipt_file": file_.to_json(),
            "expected": expected(vec![&witness.name]),
        }),
        json!({
            "name": "delivered-no-witness-policy",
            "authority": authority.encode(),
            "log_key": log_vk.encode(),
            "witnesses": [],
            "receipt_file": unwitnessed.to_json(),
            "expected": expected(vec![]),
        }),
        json!({
            "name": "witness-required-but-absent",
            "authority": authority.encode(),
            "log_key": log_vk.encode(),
            "witnesses": [witness.encode()],
            "quorum": 1,
            "receipt_file": unwitnessed.to_json(),
            "valid": false,
            "why": "the verifier requires a cosignature the checkpoint does not carry",
        }),
        json!({
            "name": "another-authority",
            "authority": VerifierKey::new(DOMAIN, p.bob.public())?.encode(),
            "log_key": log_vk.encode(),
            "witnesses": [],
            "receipt_file": unwitnessed.to_json(),
            "valid": false,
            "why": "the user's directory entry is not signed by this authority",
        }),
    ];
    Ok(file("receipts", "Receipt files (docs/formats.md) as `sealrelay verify` reads them, with the authority and log verifier keys and the witnesses a verifier requires; `expected` is what a verified receipt says.", out))
}

/// Every vector file: (file name, its text).
pub fn generate() -> Result<Vec<(&'static str, String)>> {
    let p = Parties {
        authority: key(1)?,
        alice: key(2)?,
        bob: key(3)?,
        bot: key(4)?,
        log: key(5)?,
        witness: key(6)?,
    };
    let files = [statements(&p)?, wire(&p)?, checkpoints(&p)?, receipts(&p)?];
    Ok(FILES
        .iter()
        .copied()
        .zip(files.iter().map(pretty))
        .collect())
}
