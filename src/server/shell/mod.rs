//! The relay's shell: sockets, tasks, processes and timers. The only part of the server that
//! spawns, or waits on the network; it reads the clock once per request and hands the
//! handlers what they touch (`effects`).

pub mod admin_http;
pub mod deadline;
pub mod dirwatch;
pub mod effects;
pub mod listener;
pub mod loops;
pub mod policy_gate;
pub mod public_log;
pub mod receipt;
pub mod startup;
pub mod stream;
pub mod subscription;
pub mod witnessing;
