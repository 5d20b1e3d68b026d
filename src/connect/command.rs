//! Running a program from an argv: the one place the clients and their surfaces start a process
//! for data. The argv is passed as it is (no shell of its own parses it) and stdin is closed. A
//! connector's command leads a process group of its own: a watchdog (when there is a deadline)
//! kills that whole group at the deadline, and whatever it left running in its group is killed
//! once it exits or is given up on ([`Program::own_group`]). Command connectors (`source.rs`)
//! and `agent run` both run their commands here.

use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// The variables a program gets from this process's environment when it does not inherit the
/// whole of it.
const KEPT_VARIABLES: [&str; 5] = ["PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"];

/// A program to run, and how.
pub struct Program<'a> {
    /// The program and its arguments, passed as they are (no shell, no templates).
    pub argv: &'a [String],
    /// Variables set for the program.
    pub env: &'a [(&'a str, String)],
    /// Whether the program sees this process's whole environment. When false it gets only
    /// PATH, LANG, LC_ALL, HOME and TMPDIR besides `env` (a connector's agent holds the HTTP
    /// connectors' secrets in its environment).
    pub inherit_env: bool,
    /// Whether the program's stderr reaches this process's stderr; when false it is dropped
    /// (a connector's command may echo data there, and no data may reach a log).
    pub show_stderr: bool,
    /// Past this the whole group is killed; `None`: no deadline.
    pub timeout: Option<Duration>,
    /// Whether the program leads a process group of its own, killed whole at the deadline and
    /// once the program exits (a connector's command: nothing it started outlives it). When
    /// false it stays in this process's group, so a terminal's signals (Ctrl-C) and prompts
    /// reach it and what it starts in the background is left alone (`agent run`, as an
    /// operator's own command always ran); only the program itself is killed when given up on.
    pub own_group: bool,
}

/// Why a program could not be run.
#[derive(Debug)]
pub enum RunError {
    /// The program did not start: the operating system's reason (callers choose how much of it
    /// to repeat).
    Start(std::io::Error),
    /// Anything after that (the watchdog, waiting): one line.
    Other(Error),
}

/// A started program, shared with its watchdog (which kills its group at the deadline).
pub struct Running {
    child: Arc<Mutex<Child>>,
    stop: Option<mpsc::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<bool>>,
    /// Whether the watchdog fired (known once it is stopped).
    timed_out: bool,
    /// The leader was reaped: its pid is no longer ours to signal.
    reaped: bool,
    /// Whether the program leads a group of its own (see [`Program::own_group`]).
    own_group: bool,
}

/// Starts `program` with its stdout sent to `stdout`; with [`Stdio::piped`] the pipe's reading
/// end comes back too.
pub fn start(
    program: &Program<'_>,
    stdout: Stdio,
) -> std::result::Result<(Running, Option<ChildStdout>), RunError> {
    let (path, args) = program
        .argv
        .split_first()
        .ok_or_else(|| RunError::Other(Error::bad_input("command is empty")))?;
    let mut cmd = Command::new(path);
    cmd.args(args);
    if !program.inherit_env {
        cmd.env_clear();
        for name in KEPT_VARIABLES {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
    }
    for (k, v) in program.env {
        cmd.env(k, v);
    }
    // Its own process group, so that the watchdog (and the end of the run) kills whatever it
    // started too.
    if program.own_group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    let stderr = if program.show_stderr {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(RunError::Start)?;
    let pipe = child.stdout.take();
    let child = Arc::new(Mutex::new(child));
    let (stop, stopped) = mpsc::channel::<()>();
    let own_group = program.own_group;
    let watchdog = match program.timeout {
        None => None,
        Some(deadline) => {
            let watched = child.clone();
            let handle = std::thread::Builder::new()
                .name("connector-watchdog".into())
                .spawn(move || match stopped.recv_timeout(deadline) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // The whole group goes, so that a child the command left behind holding
                        // the pipe cannot keep the read blocked (threat 50's neighbour: a
                        // timeout that holds). The leader is never reaped while the watchdog
                        // runs (only looked at with WNOWAIT), so its pid, and the group's,
                        // cannot be someone else's yet, even when the leader has exited.
                        if let Ok(mut c) = watched.lock() {
                            if own_group {
                                kill_group(c.id());
                            }
                            let _ = c.kill();
                        }
                        true
                    }
                    _ => false,
                })
                .map_err(|e| {
                    RunError::Other(Error::internal(format!(
                        "cannot start the command's watchdog: {e}"
                    )))
                })?;
            Some(handle)
        }
    };
    Ok((
        Running {
            child,
            stop: Some(stop),
            watchdog,
            timed_out: false,
            reaped: false,
            own_group,
        },
        pipe,
    ))
}

/// Runs `program` to its end with its stdout written straight into `stdout` (a file: nothing
/// is held in memory), and says how it exited. Blocking: callers on an async runtime run it on
/// a blocking thread.
pub fn run_to_end(
    program: &Program<'_>,
    stdout: std::fs::File,
) -> std::result::Result<ExitStatus, RunError> {
    let (mut running, _) = start(program, Stdio::from(stdout))?;
    running.wait().map_err(RunError::Other)
}

impl Running {
    /// Whether the watchdog killed the program (known after [`Running::wait`]).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Waits for the program (the group's leader) to exit, then stops the watchdog and kills
    /// what the program left running in its group, and only then reaps the leader: until
    /// then it is only looked at (`WNOWAIT`), so the watchdog never signals a reused pid.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let pid = {
            let c = self
                .child
                .lock()
                .map_err(|_| Error::internal("the command's lock is poisoned"))?;
            c.id()
        };
        while !exited(pid)? {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop_watchdog();
        let mut c = self
            .child
            .lock()
            .map_err(|_| Error::internal("the command's lock is poisoned"))?;
        if self.own_group {
            kill_group(c.id());
        }
        let status = c
            .wait()
            .map_err(|e| Error::io(format!("cannot wait for the command: {}", e.kind())))?;
        self.reaped = true;
        Ok(status)
    }

    /// Stops the watchdog and records whether it had fired.
    fn stop_watchdog(&mut self) {
        self.stop.take();
        if let Some(w) = self.watchdog.take() {
            self.timed_out = w.join().unwrap_or(true);
        }
    }
}

/// Whether the child `pid` has exited, without reaping it (`waitid` with `WNOWAIT`).
fn exited(pid: u32) -> Result<bool> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::internal("the command has no pid"))?;
    let found = waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )
    .map_err(|e| {
        Error::io(format!(
            "cannot wait for the command: {}",
            std::io::Error::from(e).kind()
        ))
    })?;
    Ok(found.is_some())
}

impl Drop for Running {
    fn drop(&mut self) {
        // Cut short (a limit, an error), or done: the watchdog stops, the whole group goes,
        // and the leader is reaped (it was never reaped before, so its pid is still ours).
        self.stop_watchdog();
        if self.reaped {
            return;
        }
        if let Ok(mut c) = self.child.lock() {
            if self.own_group {
                kill_group(c.id());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGKILL to the process group `pid` leads (the program was started as its leader).
fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
