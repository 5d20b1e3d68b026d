//! `sealrelay agent run`: the agent worker. For each new grant it runs a command (never through
//! a shell's parsing of the name: the resource and purpose are arguments), seals the command's
//! output to the grant's user and sends it; it outlives relay restarts.
//!
//! The command is run by the connectors' runner (`connect::command`), as
//! `["sh", "-c", CMD, "sealrelay-agent", RESOURCE, PURPOSE]`: `--exec` is documented
//! (docs/cli.md, DESIGN.md §6) as a command run by `sh -c` that gets the resource and purpose as
//! `$1` and `$2`, so CMD is the operator's own shell text and is kept whole (splitting it would
//! break its pipes, quotes and `$1`); the shell parses only CMD, and the resource and purpose
//! reach it as positional arguments, never as shell text. Unlike a connector's command under a
//! model, it sees the worker's whole environment and its stderr reaches the worker's, as before;
//! it has no deadline (`agent run` has no flag for one), and its output goes to a scratch file
//! (the grant's `max_bytes` is checked when it is sealed). Unlike a connector's command it stays
//! in the worker's process group (`own_group: false`), as it always did: Ctrl-C and a
//! terminal's prompts reach it, and what it starts in the background is left alone.
//! Grants come over one subscription (`Subscribe`): those waiting first, then each new one as
//! the relay pushes it. Sending goes through `client::deliver`, one try per grant: a grant whose
//! send found the relay gone is tried again (the command run again) when the worker has
//! reconnected and the relay lists it again.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use std::collections::HashSet;

use sealrelay::client::{
    command_env, deliver, Courier, FeedEvent, Followed, ForGrant, OpenGrant, Plaintext, Retry,
};
use sealrelay::clock;
use sealrelay::connect::command::{run_to_end, Program, RunError};
use sealrelay::core::wire::WireSigned;
use sealrelay::error::{Error, Result};
use sealrelay::ids::{hex, GrantId, PartyKind};
use sealrelay::local::identity_file;

use super::relay::{runtime, scratch_dir, RelayArg};

#[derive(Args)]
pub struct RunArgs {
    /// The agent's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// Command run (by `sh -c`) for each new grant; its stdout is sealed and sent. It gets the
    /// resource and purpose as $SEALRELAY_RESOURCE / $SEALRELAY_PURPOSE and as arguments $1 $2.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Ignored: grants are pushed by the relay as they become ready (kept so that scripts
    /// written for earlier versions still run).
    #[arg(long, value_name = "SECS", hide = true)]
    poll: Option<u64>,
    /// Handle the grants open now, then exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run_agent(args: RunArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let relay = args.relay.address(&identity);
    let pins = Arc::new(sealrelay::client::SerialPins::for_identity(
        &args.identity,
        &sealrelay::client::authority(&identity)?,
    )?);
    let courier = Courier {
        identity: Arc::new(identity),
        relay,
        pins,
        scratch: scratch_dir(),
    };
    runtime()?.block_on(async {
        let mut agent = courier.connect().await?;
        let mut failed: HashSet<GrantId> = HashSet::new();
        let mut followed = Followed::default();
        let mut delay = std::time::Duration::from_millis(500);
        'subscribe: loop {
            // Subscribed again every RESUBSCRIBE: the catch-up brings what waits for a second
            // try (a grant that did not verify yet, or whose send found the relay gone) and
            // anything that became ready without being pushed.
            let until = tokio::time::Instant::now() + RESUBSCRIBE;
            let ended = match agent.subscribe(&mut followed).await {
                Ok(mut feed) => {
                    let mut grants = Subscribed {
                        agent: &agent,
                        feed: &mut feed,
                    };
                    let ended = follow(&mut grants, args.once, until, async |g: &OpenGrant| {
                        handle(&args, &courier, &agent, g, &mut failed).await
                    })
                    .await;
                    followed = feed.into_followed();
                    ended
                }
                Err(e) => Err(e),
            };
            match ended {
                Ok(Ended::Done) => break 'subscribe,
                Ok(Ended::Resubscribe) => {
                    delay = std::time::Duration::from_millis(500);
                    continue 'subscribe;
                }
                Err(e) => match again_after(&e, args.once, delay) {
                    // A worker outlives relay restarts, rate limits and a quota full for the
                    // moment: subscribe again after a while (reconnecting when the relay was
                    // gone), and say so.
                    Some(wait) => {
                        eprintln!(
                            "the subscription to the relay ended ({}); again in {:.1} s",
                            e.message(),
                            wait.as_secs_f64()
                        );
                        tokio::time::sleep(wait).await;
                        delay = (delay * 2).min(MAX_BACKOFF);
                        if e.kind() == sealrelay::ErrorKind::Unavailable {
                            if let Ok(again) = courier.connect().await {
                                agent = again;
                            }
                        }
                    }
                    None => return Err(e),
                },
            }
        }
        agent.conn.close().await;
        Ok(())
    })
}

/// The longest the worker waits before subscribing again.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// After a subscription ended with `e`: how long to wait before subscribing again (`delay`
/// grows with each try), or `None` to stop. A relay gone (or unavailable for now), a rate
/// limit (at least the wait the relay named) and a quota full for the moment are waited out;
/// any other refusal stops the worker, and so does anything under `--once`.
fn again_after(e: &Error, once: bool, delay: std::time::Duration) -> Option<std::time::Duration> {
    if once {
        return None;
    }
    if let Some(wait) = e.retry_after() {
        return Some(wait.max(delay).min(MAX_BACKOFF));
    }
    (e.kind() == sealrelay::ErrorKind::Unavailable).then_some(delay)
}

/// How often the worker subscribes again (see `run_agent`).
const RESUBSCRIBE: std::time::Duration = std::time::Duration::from_secs(60);

/// How a subscription ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// `--once`: everything that waited was handled.
    Done,
    /// Time to subscribe again.
    Resubscribe,
}

/// One frame of an agent's grant subscription, as the client judged it.
type Frame = FeedEvent<(WireSigned, Result<OpenGrant>)>;

/// What [`follow`] reads grants from and hands back what it did not handle to: a subscription
/// ([`Subscribed`]), or a test's stand-in.
trait Grants {
    /// The next frame of the subscription.
    async fn next(&mut self) -> Result<Frame>;
    /// `id` was not handled: the next subscription brings it again.
    fn forget(&mut self, id: [u8; 16]);
}

/// An agent's subscription to its grants.
struct Subscribed<'a, 'c> {
    agent: &'a sealrelay::client::AgentClient<'c>,
    feed: &'a mut sealrelay::client::GrantFeed,
}

impl Grants for Subscribed<'_, '_> {
    async fn next(&mut self) -> Result<Frame> {
        self.agent.next_grants(self.feed).await
    }
    fn forget(&mut self, id: [u8; 16]) {
        self.feed.forget(id);
    }
}

/// Follows one subscription: what waits is taken whole (to `Live`) and handled (by `handle`),
/// then each pushed grant as it comes, until `until` (or, with `once`, right after what
/// waited). Whatever came but was not handled when it ends (the subscription ended before
/// `Live`, a handling failed) is not counted as handed out: the next subscription's catch-up
/// brings it again.
async fn follow(
    grants: &mut impl Grants,
    once: bool,
    until: tokio::time::Instant,
    handle: impl AsyncFnMut(&OpenGrant) -> Result<Handled>,
) -> Result<Ended> {
    let mut waiting = std::collections::VecDeque::new();
    let ended = follow_until(grants, once, until, &mut waiting, handle).await;
    for (_, g) in waiting {
        if let Ok(g) = g {
            grants.forget(g.grant.grant_id.0);
        }
    }
    ended
}

/// [`follow`]'s loop; `waiting` holds what came and is not yet handled.
async fn follow_until(
    grants: &mut impl Grants,
    once: bool,
    until: tokio::time::Instant,
    waiting: &mut std::collections::VecDeque<(WireSigned, Result<OpenGrant>)>,
    mut handle: impl AsyncFnMut(&OpenGrant) -> Result<Handled>,
) -> Result<Ended> {
    let mut live = false;
    loop {
        if live {
            while let Some((_, g)) = waiting.pop_front() {
                match g {
                    Ok(g) => {
                        let handled = handle(&g).await;
                        if !matches!(handled, Ok(Handled::Done)) {
                            // Tried again when the next subscription lists it.
                            grants.forget(g.grant.grant_id.0);
                        }
                        handled?;
                    }
                    // Not remembered: the next subscription brings it again.
                    Err(e) => eprintln!("a grant the relay sent is not acted on now: {e}"),
                }
            }
            if once {
                return Ok(Ended::Done);
            }
        }
        let next = match tokio::time::timeout_at(until, grants.next()).await {
            Ok(next) => next?,
            Err(_) => return Ok(Ended::Resubscribe),
        };
        match next {
            FeedEvent::Items(items) => waiting.extend(items),
            FeedEvent::Live => live = true,
        }
    }
}

/// What became of one grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    /// Sent, or failed for good (reported once, not retried).
    Done,
    /// The relay went away: the grant stays open and is tried again.
    Again,
}

/// Runs the command for one grant and sends its output.
async fn handle(
    args: &RunArgs,
    courier: &Courier,
    agent: &sealrelay::client::AgentClient<'_>,
    g: &OpenGrant,
    failed: &mut HashSet<GrantId>,
) -> Result<Handled> {
    if failed.contains(&g.grant.grant_id) {
        return Ok(Handled::Done); // reported once; not retried forever
    }
    let id = hex(g.grant.grant_id);
    // The name reaches a command: check the grammar here too, whatever the relay did.
    if let Err(e) = sealrelay::core::resource::validate_resource(&g.grant.resource) {
        eprintln!("grant {id}: refused: {}", e.message());
        failed.insert(g.grant.grant_id);
        return Ok(Handled::Done);
    }
    // The command's output goes to a scratch file, not memory: it may be large.
    let mut out_file = tempfile::tempfile_in(scratch_dir())
        .map_err(|e| Error::io(format!("cannot make a scratch file: {e}")))?;
    let stdout = out_file
        .try_clone()
        .map_err(|e| Error::io(format!("cannot make a scratch file: {e}")))?;
    let status = run_exec(&args.exec, g, stdout).await?;
    if !status.success() {
        eprintln!("grant {id}: the command failed ({status}); not sending, not retrying");
        failed.insert(g.grant.grant_id);
        return Ok(Handled::Done);
    }
    std::io::Seek::seek(&mut out_file, std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(format!("cannot rewind the scratch file: {e}")))?;
    let sent = deliver(
        courier,
        Some(agent),
        ForGrant::Listed(g),
        Plaintext::Reader(&mut out_file),
        Retry::once(),
    )
    .await;
    match sent {
        Ok(d) => println!(
            "grant {id} ({}): sent envelope {}",
            g.grant.resource,
            hex(d.envelope_id)
        ),
        Err(e) if e.kind() == sealrelay::ErrorKind::Unavailable && !args.once => {
            eprintln!("grant {id}: the relay is unreachable ({e}); will retry");
            return Ok(Handled::Again);
        }
        Err(e) => {
            eprintln!("grant {id}: send failed: {e}");
            failed.insert(g.grant.grant_id);
        }
    }
    Ok(Handled::Done)
}

/// Runs `--exec` for one grant through the connectors' runner (see the module's doc for why
/// through `/bin/sh -c`), its stdout into `stdout`, on a blocking thread; says how it exited.
async fn run_exec(
    exec: &str,
    grant: &OpenGrant,
    stdout: std::fs::File,
) -> Result<std::process::ExitStatus> {
    let argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        exec.to_owned(),
        "sealrelay-agent".to_owned(),
        grant.grant.resource.clone(),
        grant.grant.purpose.clone(),
    ];
    let env = command_env(grant);
    let exec = exec.to_owned();
    tokio::task::spawn_blocking(move || {
        let program = Program {
            argv: &argv,
            env: &env,
            inherit_env: true,
            show_stderr: true,
            timeout: None,
            own_group: false,
        };
        run_to_end(&program, stdout).map_err(|e| match e {
            RunError::Start(e) => Error::io(format!("cannot run {exec:?}: {e}")),
            RunError::Other(e) => e,
        })
    })
    .await
    .map_err(|_| Error::internal("the command's task failed"))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::VecDeque;

    use super::*;
    use sealrelay::core::directory::{Attributes, DirectoryEntry};
    use sealrelay::core::grant::Grant;
    use sealrelay::core::sign::SigningKey;
    use sealrelay::ids::SpiffeId;

    /// A stand-in subscription: its frames, then the end of the stream.
    struct Script {
        frames: VecDeque<Result<Frame>>,
        forgotten: Vec<[u8; 16]>,
    }

    impl Grants for Script {
        async fn next(&mut self) -> Result<Frame> {
            self.frames.pop_front().unwrap_or_else(|| {
                Err(Error::new(
                    sealrelay::ErrorKind::Unavailable,
                    "the relay went away",
                ))
            })
        }
        fn forget(&mut self, id: [u8; 16]) {
            self.forgotten.push(id);
        }
    }

    fn grant(n: u8) -> (WireSigned, Result<OpenGrant>) {
        let alice = SpiffeId::new("t", PartyKind::User, "alice").unwrap();
        let open = OpenGrant {
            grant: Grant {
                grant_id: GrantId([n; 16]),
                user: alice.clone(),
                agent: SpiffeId::new("t", PartyKind::Agent, "bot").unwrap(),
                resource: "tickets/1".into(),
                purpose: "p".into(),
                created: 0,
                expires: 1,
                max_bytes: 1,
            },
            user_entry: DirectoryEntry {
                id: alice,
                age_recipient: None,
                signing_key: SigningKey::generate().unwrap().public(),
                tls_spki_sha256: [0; 32],
                attributes: Attributes::default(),
                serial: 1,
                not_before: 0,
                not_after: 1,
                enrolled_by: String::new(),
                rotation: None,
            },
            sources: Vec::new(),
            grant_digest: [0; 32],
        };
        let wire = WireSigned {
            statement: Vec::new(),
            signature: Vec::new(),
        };
        (wire, Ok(open))
    }

    /// Runs `follow` over `frames`, each grant handled as `answer` says: what it ended with,
    /// the grants it handled and those it handed back.
    async fn run(
        frames: Vec<Result<Frame>>,
        answer: impl Fn(u8) -> Result<Handled>,
    ) -> (Result<Ended>, Vec<u8>, Vec<u8>) {
        let mut script = Script {
            frames: frames.into(),
            forgotten: Vec::new(),
        };
        let mut handled = Vec::new();
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let ended = follow(&mut script, true, until, async |g: &OpenGrant| {
            handled.push(g.grant.grant_id.0[0]);
            answer(g.grant.grant_id.0[0])
        })
        .await;
        let forgotten = script.forgotten.iter().map(|id| id[0]).collect();
        (ended, handled, forgotten)
    }

    /// Helper-found: grants that came before `Live` counted as handed out; when the
    /// subscription ended there (a relay restart, a dropped connection) they were filtered from
    /// every later subscription, and the worker never ran them. They are handed back now, as is
    /// what was left when a handling failed or asked to be tried again.
    #[tokio::test]
    async fn grants_not_handled_when_a_subscription_ends_are_handed_back() {
        let done = |_| Ok(Handled::Done);
        // Ended before `Live`: both handed back, none handled.
        let (ended, handled, forgotten) =
            run(vec![Ok(FeedEvent::Items(vec![grant(1), grant(2)]))], done).await;
        assert!(ended.is_err());
        assert!(handled.is_empty());
        assert_eq!(forgotten, [1, 2]);
        // Handled: nothing handed back.
        let (ended, handled, forgotten) = run(
            vec![
                Ok(FeedEvent::Items(vec![grant(1), grant(2)])),
                Ok(FeedEvent::Live),
            ],
            done,
        )
        .await;
        assert_eq!(ended.unwrap(), Ended::Done);
        assert_eq!(handled, [1, 2]);
        assert!(forgotten.is_empty());
        // One to try again, then a failure: it and what came after it are handed back.
        let (ended, handled, forgotten) = run(
            vec![
                Ok(FeedEvent::Items(vec![grant(1), grant(2), grant(3)])),
                Ok(FeedEvent::Live),
            ],
            |n| match n {
                1 => Ok(Handled::Again),
                _ => Err(Error::io("cannot make a scratch file")),
            },
        )
        .await;
        assert!(ended.is_err());
        assert_eq!(handled, [1, 2]);
        assert_eq!(forgotten, [1, 2, 3]);
    }

    /// Review-found: a subscription refused as rate limited or over a quota (both for now)
    /// ended `agent run`; only a relay gone was waited out.
    #[test]
    fn a_subscription_refused_for_now_is_tried_again_and_one_refused_for_good_is_not() {
        use std::time::Duration;
        let half = Duration::from_millis(500);
        let refused = |kind| Error::answered_by_relay(kind, "refused by the relay");
        let limited =
            refused(sealrelay::ErrorKind::Refused).retry_after_wait(Duration::from_millis(1200));
        assert_eq!(
            again_after(&limited, false, half),
            Some(Duration::from_millis(1200))
        );
        // The wait grows with the tries, and is bounded.
        assert_eq!(
            again_after(&limited, false, Duration::from_secs(4)),
            Some(Duration::from_secs(4))
        );
        let long =
            refused(sealrelay::ErrorKind::Refused).retry_after_wait(Duration::from_secs(600));
        assert_eq!(again_after(&long, false, half), Some(MAX_BACKOFF));
        let gone = Error::new(sealrelay::ErrorKind::Unavailable, "the relay went away");
        assert_eq!(again_after(&gone, false, half), Some(half));
        for kind in [
            sealrelay::ErrorKind::Refused,
            sealrelay::ErrorKind::Verification,
            sealrelay::ErrorKind::BadInput,
        ] {
            assert_eq!(again_after(&refused(kind), false, half), None, "{kind:?}");
        }
        assert_eq!(again_after(&limited, true, half), None, "--once stops");
        assert_eq!(again_after(&gone, true, half), None, "--once stops");
    }
}
