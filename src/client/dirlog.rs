//! Reading the directory log (docs/keys.md): its checkpoint and its leaves, from the relay
//! over an identity's connection or over plain HTTP from the relay's admin listener (C2SP
//! tlog-tiles paths). What is read is checked by its reader (`keywatch`, `dirmirror`) against
//! the checkpoint's root.

use std::time::Duration;

use crate::core::wire::{Reply, Request};
use crate::error::{Error, ErrorKind, Result};

use super::connection::Connection;
use super::unexpected;

/// Where the directory log is read from.
pub enum LogSource<'a> {
    Relay(&'a Connection),
    /// The relay's admin listener, e.g. `http://relay.example:9464`.
    Http(String),
}

/// Most bytes read from one HTTP answer (a full entry bundle: 256 leaves of at most 64 KiB).
const MAX_HTTP_ANSWER: u64 = 256 * (65_535 + 2);
/// Leaves asked for per request to the relay.
const LEAVES_PER_REQUEST: u32 = 256;

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("sealrelay-keys-watch")
        .build()
        .into()
}

fn http_get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut response = agent.get(url).call().map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot read {url}: {e}; check --log-url (the relay's metrics_listen address)"),
        )
    })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{url} answered {status}: is --log-url the relay's admin listener?"),
        ));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_HTTP_ANSWER)
        .read_to_vec()
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot read {url}: {e}")))
}

/// The C2SP tlog-tiles path of entry bundle `n`: `x001/x234/067`.
pub fn tile_path(n: u64) -> String {
    let mut groups: Vec<String> = Vec::new();
    let mut rest = n;
    loop {
        groups.push(format!("{:03}", rest % 1000));
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    groups.reverse();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { g.clone() })
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits an entry bundle into leaves.
fn split_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| Error::verification("a truncated entry bundle"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(Error::verification("a truncated entry bundle"));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

pub(crate) async fn read_checkpoint(source: &LogSource<'_>) -> Result<String> {
    match source {
        LogSource::Relay(conn) => match conn
            .simple(Request::DirectoryCheckpoint { old_size: None })
            .await?
        {
            Reply::Checkpoint { checkpoint, .. } => Ok(checkpoint),
            other => Err(unexpected(&other)),
        },
        LogSource::Http(base) => {
            let url = format!("{}/directory/checkpoint", base.trim_end_matches('/'));
            let bytes = tokio::task::spawn_blocking(move || http_get(&http_agent(), &url))
                .await
                .map_err(|_| Error::internal("the HTTP read failed"))??;
            String::from_utf8(bytes)
                .map_err(|_| Error::verification("the directory checkpoint is not text"))
        }
    }
}

/// How many times one read of leaves waits out the relay's rate limit before it gives up.
const RATE_LIMITED_TRIES: u32 = 30;

/// Leaves `from..to`.
pub(crate) async fn read_leaves(
    source: &LogSource<'_>,
    from: u64,
    to: u64,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    match source {
        LogSource::Relay(conn) => {
            while from + (out.len() as u64) < to {
                let at = from + out.len() as u64;
                let limit = u32::try_from(to - at)
                    .unwrap_or(u32::MAX)
                    .min(LEAVES_PER_REQUEST);
                // A long read (an agent's first) may run into the relay's rate limit: it waits
                // as long as the relay says, a bounded number of times.
                let mut tries = 0;
                let reply = loop {
                    match conn
                        .simple(Request::DirectoryLeaves { from: at, limit })
                        .await
                    {
                        Err(e) if tries < RATE_LIMITED_TRIES => match e.retry_after() {
                            Some(wait) => {
                                tries += 1;
                                tokio::time::sleep(wait).await;
                            }
                            None => return Err(e),
                        },
                        other => break other?,
                    }
                };
                match reply {
                    Reply::Leaves { leaves } if !leaves.is_empty() => out.extend(leaves),
                    Reply::Leaves { .. } => {
                        return Err(Error::verification(format!(
                            "the relay's checkpoint counts {to} directory leaves but it serves only {at}"
                        )))
                    }
                    other => return Err(unexpected(&other)),
                }
            }
        }
        LogSource::Http(base) => {
            let base = base.trim_end_matches('/').to_owned();
            let (first, last) = (from / 256, (to - 1) / 256);
            let got = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>> {
                let agent = http_agent();
                let mut all = Vec::new();
                for n in first..=last {
                    let width = (to - n * 256).min(256);
                    let mut url = format!("{base}/directory/tile/entries/{}", tile_path(n));
                    if width < 256 {
                        url.push_str(&format!(".p/{width}"));
                    }
                    let leaves = split_bundle(&http_get(&agent, &url)?)?;
                    if leaves.len() as u64 != width {
                        return Err(Error::verification(format!(
                            "{url} holds {} leaves, not {width}",
                            leaves.len()
                        )));
                    }
                    let skip = from.saturating_sub(n * 256);
                    all.extend(leaves.into_iter().skip(usize::try_from(skip).unwrap_or(0)));
                }
                Ok(all)
            })
            .await
            .map_err(|_| Error::internal("the HTTP read failed"))??;
            out = got;
        }
    }
    out.truncate(usize::try_from(to - from).unwrap_or(usize::MAX));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_and_bundles() {
        assert_eq!(tile_path(0), "000");
        assert_eq!(tile_path(5), "005");
        assert_eq!(tile_path(1000), "x001/000");
        assert_eq!(tile_path(1_234_067), "x001/x234/067");
        assert_eq!(
            split_bundle(&[0, 1, 7, 0, 0]).unwrap(),
            vec![vec![7], vec![]]
        );
        assert!(split_bundle(&[0, 2, 7]).is_err());
        assert!(split_bundle(&[0]).is_err());
    }
}
