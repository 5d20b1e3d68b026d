//! `keys rotate` (new keys the current key signs) and `keys watch` (alerts for keys the person
//! did not make), docs/keys.md.

use std::path::Path;

use sealrelay::client::keywatch::{self, LogSource, WatchReport};
use sealrelay::client::Connection;
use sealrelay::clock;
use sealrelay::core::directory::sha256;
use sealrelay::core::identity::Identity;
use sealrelay::core::keylog::KeyRotation;
use sealrelay::error::{Error, Result};
use sealrelay::local::fs::{exists, write_atomic, PUBLIC_MODE};
use sealrelay::local::identity_file;
use sealrelay::local::keywatch_state::{path_for, WatchState};

use super::request_path;

/// FILE.rotation beside a new identity FILE.
pub fn rotation_path(out: &Path) -> std::path::PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".rotation");
    std::path::PathBuf::from(s)
}

pub fn rotate(current: &Path, out: &Path, x25519: bool) -> Result<()> {
    let old = identity_file::load(current, None)?;
    let entry = old.own_entry().map_err(|e| e.context(current.display()))?;
    let (req_path, rot_path) = (request_path(out), rotation_path(out));
    for p in [out, req_path.as_path(), rot_path.as_path()] {
        if exists(p) {
            return Err(Error::conflict(format!(
                "{} already exists: choose another --out",
                p.display()
            )));
        }
    }
    let now = clock::now();
    let mut new = Identity::generate_with(old.kind, &old.name, x25519)?;
    // What the old identity pinned stays pinned: the waiting period (a new bundle can only
    // lengthen it), and below, the serial pins and the newest directory checkpoint seen.
    new.reset_wait = old.reset_wait;
    let request = new.enrollment_request(now)?;
    let consent = KeyRotation {
        id: entry.id.clone(),
        from_serial: entry.serial,
        signing_key: new.signing_key.public(),
        tls_spki_sha256: sha256(&new.tls_key.spki_der()?),
        age_recipient: new.age_identity.as_ref().map(|a| a.to_public().to_string()),
        created: now,
    }
    .sign(&old.signing_key);
    identity_file::save(out, &new, false)?;
    let written = write_atomic(&req_path, request.to_json().as_bytes(), PUBLIC_MODE, false)
        .and_then(|()| write_atomic(&rot_path, consent.to_json().as_bytes(), PUBLIC_MODE, false));
    if let Err(e) = written {
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(&req_path);
        return Err(e);
    }
    for (from, to) in [
        (
            sealrelay::local::pins::path_for(current),
            sealrelay::local::pins::path_for(out),
        ),
        (
            sealrelay::local::directory_seen::state_path(current),
            sealrelay::local::directory_seen::state_path(out),
        ),
    ] {
        if from.exists() {
            let bytes = sealrelay::local::fs::read_capped(&from, 4 << 20)?;
            write_atomic(&to, &bytes, sealrelay::local::fs::PRIVATE_MODE, false)?;
        }
    }
    // The new identity keeps reading the directory log from where the old one stopped, and
    // counts the old key as its own (its rotation is not an alert).
    if let Some(mut state) = WatchState::load(&path_for(current))? {
        state.watcher.add_own(
            &new.signing_key.public(),
            sealrelay::client::keywatch::own_material(&new)?,
        );
        state.save(&path_for(out))?;
    }
    println!(
        "wrote {} (private, mode 0600), {} and {} (public)",
        out.display(),
        req_path.display(),
        rot_path.display()
    );
    println!(
        "  {} serial {} signed the new keys (a rotation: in force as soon as it is enrolled, no alert)",
        entry.id, entry.serial
    );
    println!(
        "next: the admin runs `sealrelay {} add --rotate {}` and gives you the bundle; then `sealrelay keys import --identity {} <BUNDLE>`",
        old.kind,
        req_path.display(),
        out.display()
    );
    println!(
        "  keep {}: what was sealed to its key opens only with it",
        current.display()
    );
    Ok(())
}

pub fn watch(
    identity_file: &Path,
    relay: Option<String>,
    log_url: Option<String>,
    acknowledge: bool,
    json: bool,
    witnesses: Option<sealrelay::core::tlog::cosignature::WitnessPolicy>,
) -> Result<()> {
    let identity = identity_file::load(identity_file, None)?;
    let policy = witnesses.as_ref();
    let report = super::super::relay::runtime()?.block_on(async {
        match &log_url {
            Some(url) => {
                keywatch::watch_with(
                    &identity,
                    identity_file,
                    LogSource::Http(url.clone()),
                    acknowledge,
                    policy,
                )
                .await
            }
            None => {
                let addr = crate::cli::relay::RelayArg {
                    relay: relay.clone(),
                }
                .address(&identity);
                let conn = Connection::connect(&identity, &addr).await?;
                let r = keywatch::watch_with(
                    &identity,
                    identity_file,
                    LogSource::Relay(&conn),
                    acknowledge,
                    policy,
                )
                .await;
                conn.close().await;
                r
            }
        }
    })?;
    print_report(&report, json)?;
    match report.as_error(identity_file) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_report(r: &WatchReport, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "size": r.size,
            "current_key_is_yours": r.current_is_own,
            "new_alerts": r.new_alerts,
            "open_alerts": r.open_alerts,
            "history": r.history,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "directory log read to {} leaves: {} new alert(s), {} open, {} in the history",
        r.size,
        r.new_alerts.len(),
        r.open_alerts.len(),
        r.history.len()
    );
    for a in &r.history {
        let state = if r.open_alerts.contains(a) {
            ""
        } else {
            " (acknowledged)"
        };
        println!("{}{state}", keywatch::describe(a));
    }
    if !r.current_is_own {
        println!("the newest key under your name is not one of yours");
    }
    Ok(())
}
