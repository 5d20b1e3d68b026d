//! The relay's configuration: a TOML file (`docs/config.md` lists every field and its default);
//! command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::Limits;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where state (`state.redb`) and ciphertext blobs live.
    pub data: PathBuf,
    /// The state in PostgreSQL instead of `data/state.redb`: `postgres://USER@HOST:PORT/DB`
    /// (docs/operations.md). Ciphertext too large to store inline stays in `data`.
    pub store: Option<String>,
    /// Connections to PostgreSQL (with `store`).
    pub store_connections: usize,
    /// The trust-root directory: relay.crt, relay.key, ca.crt, authority.pub, log.key, log.pub,
    /// root.json, and optionally directory/ (loaded at start).
    pub dir: PathBuf,
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: u64,
    /// Longest a grant may stay open, in seconds.
    pub max_grant_ttl_secs: u64,
    /// A grant that needs a second person's approval and has none this many seconds after it
    /// was made lapses (it closes, and stops counting against its user's and agent's quotas).
    pub approval_ttl_secs: u64,
    /// How long an undelivered envelope is kept, in seconds.
    pub envelope_ttl_secs: u64,
    /// After a party's key is rotated (not revoked), how long its previous identity may still
    /// list, fetch and file receipts for what was sealed to its key, in seconds.
    pub rotation_grace_secs: u64,
    /// Delete an envelope's ciphertext once its receipt is recorded.
    pub delete_after_delivery: bool,
    /// Accept only envelopes sealed to a post-quantum hybrid (mlkem768x25519) recipient; off,
    /// one X25519 recipient is accepted too (never a mixture).
    pub require_post_quantum: bool,
    /// How often expired envelopes are swept, in seconds.
    pub sweep_interval_secs: u64,
    /// An upload that breaks off is kept (its whole pieces, and its claim on the grant and the
    /// sender's upload quotas) this many seconds for its sender to resume, at most an hour; 0:
    /// not kept.
    pub upload_resume_secs: u64,
    /// On shutdown, how long requests in flight may take to finish before the relay closes.
    pub shutdown_grace_secs: u64,
    /// A request's frame must arrive within this many seconds, and its body may start slowly
    /// for as long; after that the body must keep up `min_body_bytes_per_sec` on average, or
    /// the request fails.
    pub body_grace_secs: u64,
    pub min_body_bytes_per_sec: u64,
    /// Denials logged one by one per caller per minute; the rest become one summary event.
    pub max_denial_events_per_minute: u64,
    /// Free space kept in the data directory's file system, in bytes: writes that would eat
    /// into it are refused as "storage full" (reads go on) until space is freed.
    pub min_free_bytes: u64,
    /// `text` or `json` log lines (on stderr).
    pub log_format: String,
    /// A Cedar policy file (default: the shipped docs/policy/default.cedar).
    pub policy_file: Option<PathBuf>,
    /// A resource catalog (default: the shipped docs/policy/catalog.toml).
    pub catalog_file: Option<PathBuf>,
    /// Properties the policy must have beside the shipped docs/policy/properties.toml
    /// (docs/policy.md): proved at start and on each reload of a policy other than the shipped
    /// one; a policy that breaks a required property is refused.
    pub properties_file: Option<PathBuf>,
    /// Required properties the operator accepts a policy breaking (the decision is logged at
    /// every load), or `"*"`: any, and a policy that could not be proved (no solver) too.
    pub accept_broken_properties: Vec<String>,
    /// Requests per second each identity may make (token bucket), and the burst it may save up.
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub limits: Limits,
    pub monitor: super::misbehaviour::MonitorConfig,
    /// What one party may hold at once (`[quotas]`).
    pub quotas: QuotaConfig,
    /// Witnesses that cosign the log's checkpoints (`[[witness]]`, docs/witness.md).
    pub witness: Vec<WitnessEndpoint>,
    /// How many of the witnesses must cosign a checkpoint (default: all of them).
    pub witness_quorum: Option<usize>,
    /// How long a receipt waits for a witnessed checkpoint before it is answered with a
    /// checkpoint not yet witnessed, in milliseconds.
    pub witness_receipt_wait_ms: u64,
    /// One request to a witness, in milliseconds (connect, send, answer).
    pub witness_timeout_ms: u64,
    /// The admin listener (HTTP: `/metrics`, `/livez`, `/readyz`; docs/operations.md), or
    /// `off`. Loopback by default: nothing on it is secret, but it is not for the world.
    pub metrics_listen: String,
}

/// One witness: where to send checkpoints and the key its cosignatures verify with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WitnessEndpoint {
    /// The witness's submission prefix, e.g. `http://witness.example:7380` (`/add-checkpoint`
    /// is appended).
    pub url: String,
    /// Its verifier key `<name>+<hash>+<base64>` (from `witness keygen`'s `.pub`).
    pub key: String,
}

/// An environment variable that overrides a config field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    /// e.g. `SEALRELAY_LIMITS__MAX_CONNECTIONS`.
    pub name: String,
    /// The field's key path, e.g. `["limits", "max_connections"]`.
    pub path: Vec<String>,
    /// A text field: the value is taken as it is (otherwise it is read as TOML).
    pub text: bool,
}

fn collect_env_vars(table: &toml::Table, path: &[String], out: &mut Vec<EnvVar>) {
    for (key, value) in table {
        let mut path = path.to_vec();
        path.push(key.clone());
        match value {
            toml::Value::Table(t) => collect_env_vars(t, &path, out),
            v => out.push(EnvVar {
                name: format!("{ENV_PREFIX}{}", path.join("__").to_uppercase()),
                path,
                text: v.is_str(),
            }),
        }
    }
}

/// Quotas per party (docs/config.md). Each refusal names the field that set it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Open grants a user may have created and not yet seen used or expired.
    pub max_open_grants_per_user: u64,
    /// Open grants addressed to one agent.
    pub max_open_grants_per_agent: u64,
    /// Open grants one user may hold against one agent (so a few users cannot take up an
    /// agent's whole `max_open_grants_per_agent` for everyone).
    pub max_open_grants_per_user_per_agent: u64,
    /// Envelopes waiting for one user, and their bytes.
    pub max_pending_envelopes_per_user: u64,
    pub max_pending_bytes_per_user: u64,
    /// Uploads one agent may have in progress at once, and their declared bytes.
    pub max_uploads_per_agent: u64,
    pub max_upload_bytes_per_agent: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_open_grants_per_user: 1_000,
            max_open_grants_per_agent: 10_000,
            max_open_grants_per_user_per_agent: 100,
            max_pending_envelopes_per_user: 10_000,
            max_pending_bytes_per_user: 16 * 1024 * 1024 * 1024,
            max_uploads_per_agent: 16,
            max_upload_bytes_per_agent: 8 * 1024 * 1024 * 1024,
        }
    }
}

impl QuotaConfig {
    /// The limits the store checks inside its transactions.
    pub fn store_quotas(&self) -> crate::core::store::Quotas {
        crate::core::store::Quotas {
            open_grants_per_user: self.max_open_grants_per_user,
            open_grants_per_agent: self.max_open_grants_per_agent,
            open_grants_per_user_per_agent: self.max_open_grants_per_user_per_agent,
            pending_envelopes_per_user: self.max_pending_envelopes_per_user,
            pending_bytes_per_user: self.max_pending_bytes_per_user,
        }
    }
}

/// Where the admin listener is unless the config says otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The prefix of the environment variables that override config fields.
pub const ENV_PREFIX: &str = "SEALRELAY_";

/// The longest a broken upload may be kept for its sender (`upload_resume_secs`).
pub const MAX_UPLOAD_RESUME_SECS: u64 = 3600;

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data: PathBuf::from("data"),
            store: None,
            store_connections: 8,
            dir: PathBuf::from("keys"),
            max_envelope_bytes: 4 * 1024 * 1024 * 1024,
            max_grant_ttl_secs: 30 * 86_400,
            approval_ttl_secs: 3 * 86_400,
            envelope_ttl_secs: 7 * 86_400,
            rotation_grace_secs: 7 * 86_400,
            delete_after_delivery: true,
            require_post_quantum: true,
            sweep_interval_secs: 60,
            upload_resume_secs: 600,
            shutdown_grace_secs: 5,
            body_grace_secs: 10,
            min_body_bytes_per_sec: 32 * 1024,
            max_denial_events_per_minute: 60,
            min_free_bytes: 64 * 1024 * 1024,
            log_format: "text".into(),
            policy_file: None,
            properties_file: None,
            accept_broken_properties: Vec::new(),
            catalog_file: None,
            requests_per_second: 500,
            request_burst: 1000,
            limits: Limits::default(),
            monitor: super::misbehaviour::MonitorConfig::default(),
            quotas: QuotaConfig::default(),
            witness: Vec::new(),
            witness_quorum: None,
            witness_receipt_wait_ms: 2_000,
            witness_timeout_ms: 5_000,
            metrics_listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

impl RelayConfig {
    /// Reads a TOML config file; unknown fields are errors. The values are checked by
    /// [`RelayConfig::validate`] once the environment and the flags have had their say (a
    /// variable may complete what the file leaves out, e.g. `[[witness]]` for its quorum).
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::local::fs::read_capped(path, 64 * 1024)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
        let config: RelayConfig = toml::from_str(text)
            .map_err(|e| Error::bad_input(format!("{}: {}", path.display(), e.message())))?;
        Ok(config)
    }

    /// The config `serve` runs with before its flags: the file if one is given (else the
    /// defaults), then the process's `SEALRELAY_*` variables (those that are not UTF-8 are no
    /// config). `policy prove` builds what it proves the same way.
    pub fn from_file_and_env(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(p) => RelayConfig::load(p)?,
            None => RelayConfig::default(),
        };
        config.apply_env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::bad_input("log_format must be \"text\" or \"json\""));
        }
        if self.max_envelope_bytes == 0
            || self.max_grant_ttl_secs == 0
            || self.envelope_ttl_secs == 0
            || self.approval_ttl_secs == 0
            || self.quotas.max_open_grants_per_user_per_agent == 0
        {
            return Err(Error::bad_input(
                "sizes and durations in the config must be above zero",
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_streams_per_connection == 0 {
            return Err(Error::bad_input("limits must be above zero"));
        }
        if self
            .limits
            .send_window
            .is_some_and(|w| w < crate::net::MIN_SEND_WINDOW)
        {
            return Err(Error::bad_input(format!(
                "limits.send_window must be at least {} bytes (leave it out to follow connection_window)",
                crate::net::MIN_SEND_WINDOW
            )));
        }
        self.witness_policy()?;
        if self.witness_timeout_ms == 0 {
            return Err(Error::bad_input("witness_timeout_ms must be above zero"));
        }
        self.metrics_addr()?;
        if let Some(url) = &self.store {
            if !crate::store::postgres::is_postgres_url(url) {
                return Err(Error::bad_input(
                    "store must be a postgres:// URL (or left out for the embedded store in data/)",
                ));
            }
        }
        if self.store_connections == 0 {
            return Err(Error::bad_input("store_connections must be above zero"));
        }
        // A database's pieces untouched for an hour are swept as a crash's leftovers: a broken
        // upload kept longer would lose them.
        if self.upload_resume_secs > MAX_UPLOAD_RESUME_SECS {
            return Err(Error::bad_input(format!(
                "upload_resume_secs must be at most {MAX_UPLOAD_RESUME_SECS} (one hour; 0 keeps nothing)"
            )));
        }
        Ok(())
    }

    /// The admin listener's address (`None`: `metrics_listen = "off"`).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        if self.metrics_listen == "off" {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|_| {
            Error::bad_input(format!(
                "metrics_listen {:?} is not an address like 127.0.0.1:9464 (or \"off\")",
                self.metrics_listen
            ))
        })
    }

    /// Every environment variable that can override a field: `SEALRELAY_<FIELD>`, and for a
    /// field of a table, `SEALRELAY_<TABLE>__<FIELD>` (upper case).
    pub fn env_vars() -> Vec<EnvVar> {
        // A config with every optional field set, so that each appears once serialized.
        let full = RelayConfig {
            policy_file: Some(PathBuf::new()),
            catalog_file: Some(PathBuf::new()),
            properties_file: Some(PathBuf::new()),
            store: Some(String::new()),
            witness_quorum: Some(1),
            monitor: super::misbehaviour::MonitorConfig {
                alert_command: Some(String::new()),
                ..Default::default()
            },
            limits: crate::net::Limits {
                send_window: Some(crate::net::MIN_SEND_WINDOW),
                ..Default::default()
            },
            ..RelayConfig::default()
        };
        let mut out = Vec::new();
        if let Ok(toml::Value::Table(table)) = toml::Value::try_from(&full) {
            collect_env_vars(&table, &[], &mut out);
        }
        out
    }

    /// Applies the `SEALRELAY_*` overrides found in `vars` (the process environment, in
    /// `serve`), one at a time so that an error names its variable. A value is read as the
    /// field's type: text as it is; numbers, booleans and lists (`[[witness]]` as
    /// `[{url = "...", key = "..."}]`) as TOML; an empty value restores the default. Other
    /// `SEALRELAY_*` variables (the clients' own) are left alone, but a `SEALRELAY_A__B` that
    /// names no field is an error (a misspelt table field would otherwise be ignored).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let known = Self::env_vars();
        let mut value = toml::Value::try_from(&*self)
            .map_err(|e| Error::internal(format!("cannot encode the config: {e}")))?;
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let Some(var) = known.iter().find(|v| v.name == name) else {
                if name.contains("__") {
                    return Err(Error::bad_input(format!(
                        "{name} names no config field (docs/config.md lists every SEALRELAY_* variable)"
                    )));
                }
                continue;
            };
            let bad = |why: &str| {
                Error::bad_input(format!(
                    "{name}: {why} (the config field {}, docs/config.md)",
                    var.path.join(".")
                ))
            };
            let (last, parents) = var
                .path
                .split_last()
                .ok_or_else(|| Error::internal("a config field with no name"))?;
            let mut table = value
                .as_table_mut()
                .ok_or_else(|| Error::internal("the config is not a table"))?;
            for p in parents {
                table = table
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .ok_or_else(|| Error::internal("a config table is not a table"))?;
            }
            if raw.is_empty() {
                table.remove(last);
            } else if var.text {
                table.insert(last.clone(), toml::Value::String(raw.clone()));
            } else {
                let parsed: toml::Table = toml::from_str(&format!("v = {raw}"))
                    .map_err(|_| bad(&format!("{raw:?} is not a valid value")))?;
                let v = parsed.get("v").cloned().ok_or_else(|| bad("no value"))?;
                table.insert(last.clone(), v);
            }
            // Checked now, so that the error names this variable.
            value
                .clone()
                .try_into::<RelayConfig>()
                .map_err(|e| bad(e.message()))?;
        }
        *self = value
            .try_into()
            .map_err(|e: toml::de::Error| Error::bad_input(e.message().to_owned()))?;
        Ok(())
    }

    /// The witnesses and quorum as a policy (`None` without witnesses).
    pub fn witness_policy(&self) -> Result<Option<crate::core::tlog::cosignature::WitnessPolicy>> {
        use crate::core::tlog::cosignature::{CosignerKey, WitnessPolicy};
        if self.witness.is_empty() {
            if self.witness_quorum.is_some() {
                return Err(Error::bad_input(
                    "witness_quorum is set but no [[witness]] is listed",
                ));
            }
            return Ok(None);
        }
        for w in &self.witness {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(Error::bad_input(format!(
                    "witness url {:?} must start with http:// or https://",
                    w.url
                )));
            }
        }
        let keys = self
            .witness
            .iter()
            .map(|w| CosignerKey::parse(&w.key).map_err(|e| e.context("[[witness]] key")))
            .collect::<Result<Vec<_>>>()?;
        WitnessPolicy::new(keys, self.witness_quorum).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_fields_fail() {
        let text = toml::to_string(&RelayConfig::default()).unwrap();
        let back: RelayConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, RelayConfig::default());
        assert!(toml::from_str::<RelayConfig>("listen = \"127.0.0.1:1\"\ncolour = 1\n").is_err());
        let partial: RelayConfig =
            toml::from_str("delete_after_delivery = false\n[limits]\nmax_connections = 5\n")
                .unwrap();
        assert!(!partial.delete_after_delivery);
        assert_eq!(partial.limits.max_connections, 5);
        assert_eq!(
            partial.limits.idle_timeout_secs,
            Limits::default().idle_timeout_secs
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_field_has_an_environment_variable_and_they_override_the_file() {
        let names: Vec<String> = RelayConfig::env_vars()
            .into_iter()
            .map(|v| v.name)
            .collect();
        for n in [
            "SEALRELAY_LISTEN",
            "SEALRELAY_METRICS_LISTEN",
            "SEALRELAY_POLICY_FILE",
            "SEALRELAY_WITNESS",
            "SEALRELAY_WITNESS_QUORUM",
            "SEALRELAY_LIMITS__MAX_CONNECTIONS",
            "SEALRELAY_MONITOR__ALERT_COMMAND",
            "SEALRELAY_QUOTAS__MAX_UPLOADS_PER_AGENT",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
        let mut c: RelayConfig =
            toml::from_str("delete_after_delivery = false\n[limits]\nmax_connections = 5\n")
                .unwrap();
        c.apply_env(env(&[
            ("SEALRELAY_LISTEN", "0.0.0.0:7000"),
            ("SEALRELAY_DATA", "/var/lib/sealrelay"),
            ("SEALRELAY_DELETE_AFTER_DELIVERY", "true"),
            ("SEALRELAY_LIMITS__MAX_CONNECTIONS", "9"),
            ("SEALRELAY_POLICY_FILE", "/etc/sealrelay/policy.cedar"),
            ("SEALRELAY_MONITOR__ALERT_COMMAND", "logger -t x"),
            (
                "SEALRELAY_WITNESS",
                r#"[{url = "http://w:7380", key = "k"}]"#,
            ),
            // The clients' own variables are not config fields and stay untouched.
            ("SEALRELAY_RELAY", "relay.example:4433"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.data, PathBuf::from("/var/lib/sealrelay"));
        assert!(c.delete_after_delivery);
        assert_eq!(c.limits.max_connections, 9);
        assert_eq!(
            c.limits.idle_timeout_secs,
            Limits::default().idle_timeout_secs
        );
        assert_eq!(
            c.policy_file.as_deref(),
            Some(std::path::Path::new("/etc/sealrelay/policy.cedar"))
        );
        assert_eq!(c.monitor.alert_command.as_deref(), Some("logger -t x"));
        assert_eq!(c.witness.len(), 1);
        // Empty: back to the default.
        c.apply_env(env(&[("SEALRELAY_LIMITS__MAX_CONNECTIONS", "")]))
            .unwrap();
        assert_eq!(c.limits.max_connections, Limits::default().max_connections);
    }

    #[test]
    fn a_bad_environment_value_is_refused_naming_its_variable() {
        for (name, value, needle) in [
            (
                "SEALRELAY_LIMITS__MAX_CONNECTIONS",
                "many",
                "SEALRELAY_LIMITS__MAX_CONNECTIONS",
            ),
            ("SEALRELAY_LISTEN", "nowhere", "SEALRELAY_LISTEN"),
            (
                "SEALRELAY_DELETE_AFTER_DELIVERY",
                "yes",
                "SEALRELAY_DELETE_AFTER_DELIVERY",
            ),
            (
                "SEALRELAY_LIMITS__MAX_CONECTIONS",
                "5",
                "names no config field",
            ),
        ] {
            let mut c = RelayConfig::default();
            let e = c.apply_env(env(&[(name, value)])).unwrap_err().to_string();
            assert!(e.contains(needle), "{name}={value}: {e}");
            assert!(!e.contains('\n'), "{e}");
            assert_eq!(c, RelayConfig::default(), "nothing changed on {name}");
        }
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let mut c = RelayConfig::default();
        assert_eq!(
            c.metrics_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        c.metrics_listen = "off".into();
        assert_eq!(c.metrics_addr().unwrap(), None);
        c.metrics_listen = "localhost".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("metrics_listen"));
    }

    #[test]
    fn the_send_window_follows_the_connection_window_unless_set_and_is_at_least_a_chunk() {
        let mut c = RelayConfig::default();
        assert_eq!(c.limits.send_window, None);
        c.apply_env(env(&[("SEALRELAY_LIMITS__SEND_WINDOW", "4194304")]))
            .unwrap();
        assert_eq!(c.limits.send_window, Some(4 << 20));
        c.validate().unwrap();
        c.apply_env(env(&[("SEALRELAY_LIMITS__SEND_WINDOW", "100")]))
            .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("send_window"));
    }
}
