//! Argument parsing (clap) and dispatch. The names here are a contract (DESIGN.md §6).

mod admin;
mod audit;
mod demo;
mod envelope;
mod export;
mod inbox;
mod keys;
mod mcp;
mod policy;
mod policy_prove;
mod relay;
mod source;
mod ui;
mod vectors;
mod witness;
mod worker;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sealrelay::Result;

#[derive(Parser)]
#[command(
    name = "sealrelay",
    version,
    about = "Encrypted agent-to-user data relay: what an agent retrieves is sealed to the person who asked",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 verification failed, 2 usage, 3 bad input, 4 already exists, 5 I/O error, 6 refused, 7 relay unreachable, 8 not found.\nDocs: docs/cli.md"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make and manage keys: the trust root, party identities, bundles.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Enroll, rotate or revoke users (admin).
    #[command(subcommand)]
    User(admin::PartyCommand),
    /// Enroll, rotate or revoke agents (admin), or run an agent worker.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Enroll, rotate or revoke admins (admin): admins are directory entries too, pinned to
    /// their TLS key and revocable.
    #[command(subcommand)]
    Admin(admin::PartyCommand),
    /// Check the signed directory.
    #[command(subcommand)]
    Directory(admin::DirectoryCommand),
    /// Run the relay (QUIC + mutual TLS).
    Serve(relay::ServeArgs),
    /// User: ask an agent for a resource (signs and files a grant); prints the grant id.
    Grant(relay::GrantArgs),
    /// Agent: list the open grants addressed to you.
    Grants(relay::IdentityRelayArgs),
    /// Agent: seal data to a grant's user and submit it.
    Send(relay::SendArgs),
    /// User: list your envelopes waiting at the relay: who sent each, for what, why, under
    /// whose approval, and whether it verifies.
    Inbox(relay::IdentityRelayArgs),
    /// User: fetch, verify and decrypt envelopes, and file signed receipts.
    Fetch(inbox::FetchArgs),
    /// Approver: approve a grant that needs a second person.
    Approve(inbox::ApproveArgs),
    /// Approver: deny a grant that needs a second person (a signed refusal; the grant closes).
    Deny(inbox::DenyArgs),
    /// Approver: list the grants awaiting your approval, in full.
    Approvals(relay::IdentityRelayArgs),
    /// Validate a Cedar policy, or evaluate one request against it.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify delivery receipts offline.
    #[command(subcommand)]
    Receipt(audit::ReceiptCommand),
    /// Check the relay's transparency log: consistency with what you saw before, latest events.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Seal a file to a recipient as an age envelope (offline).
    Seal(envelope::SealArgs),
    /// Open an age envelope with your identity (offline).
    Open(envelope::OpenArgs),
    /// User: your own client as a web app on 127.0.0.1 (inbox, envelopes, approvals, grants,
    /// receipts); prints the URL with its token once.
    Ui(ui::UiArgs),
    /// Agent: an MCP server for an LLM agent; connectors seal data at the source, the model
    /// gets only a handle (blind retrieval, docs/mcp.md).
    Mcp(mcp::McpArgs),
    /// Enroll, rotate or revoke sources (admin), or run one: the data owner's sealing service
    /// next to its data (docs/sources.md).
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Agent: have a source fill one of your grants where the data lives (docs/sources.md);
    /// prints where it is queued.
    Dispatch(source::DispatchArgs),
    /// Run the whole flow in a temporary directory, step by step.
    Demo(demo::DemoArgs),
    /// A transparency-log witness: cosigns a log's checkpoints only when consistent with
    /// every one it cosigned before (C2SP tlog-witness, docs/witness.md).
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// Test vectors for other implementations (docs/vectors/): write them, or check them.
    #[command(subcommand)]
    Vectors(vectors::VectorsCommand),
}

#[derive(Subcommand)]
enum AgentCommand {
    #[command(flatten)]
    Party(admin::PartyCommand),
    /// Run a worker: for each new grant, run CMD and send its stdout.
    Run(worker::RunArgs),
    /// The kill switch: quarantine an agent on a running relay (admin).
    Quarantine(policy::QuarantineArgs),
    /// Lift an agent's quarantine (admin).
    Release(policy::ReleaseArgs),
}

/// `--dir DIR`: the trust-root directory.
#[derive(Args, Clone)]
pub struct DirArg {
    /// Trust-root directory (made by `keys init`).
    #[arg(long, value_name = "DIR", default_value = "keys")]
    pub dir: PathBuf,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::User(cmd) => admin::run_party(sealrelay::ids::PartyKind::User, cmd),
        Command::Admin(cmd) => admin::run_party(sealrelay::ids::PartyKind::Admin, cmd),
        Command::Agent(AgentCommand::Party(cmd)) => {
            admin::run_party(sealrelay::ids::PartyKind::Agent, cmd)
        }
        Command::Agent(AgentCommand::Run(args)) => worker::run_agent(args),
        Command::Agent(AgentCommand::Quarantine(args)) => policy::quarantine(args),
        Command::Agent(AgentCommand::Release(args)) => policy::release(args),
        Command::Approve(args) => inbox::approve(args),
        Command::Deny(args) => inbox::deny(args),
        Command::Approvals(args) => inbox::approvals(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Serve(args) => relay::serve(args),
        Command::Source(cmd) => source::run(cmd),
        Command::Dispatch(args) => source::dispatch(args),
        Command::Grant(args) => relay::grant(args),
        Command::Grants(args) => relay::grants(args),
        Command::Send(args) => relay::send(args),
        Command::Inbox(args) => inbox::inbox(args),
        Command::Fetch(args) => inbox::fetch(args),
        Command::Directory(cmd) => admin::run_directory(cmd),
        Command::Receipt(cmd) => audit::run_receipt(cmd),
        Command::Audit(cmd) => audit::run_audit(cmd),
        Command::Seal(args) => envelope::seal(args),
        Command::Open(args) => envelope::open(args),
        Command::Ui(args) => ui::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Witness(cmd) => witness::run(cmd),
        Command::Vectors(cmd) => vectors::run(cmd),
    }
}
