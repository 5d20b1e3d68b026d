//! Opening a connector's source for one resource: a `Read` with a byte limit that remembers why
//! it failed, in one line that never holds what was read.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::process::{ChildStdout, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::command::{self, Program, RunError, Running};
use super::{Connector, Kind};
use crate::error::{Error, Result};

/// A connector's source for one resource, ready to be pulled by the sealer.
pub struct Source {
    inner: Inner,
    limit: u64,
    read: u64,
    timeout_secs: u64,
    failure: Option<Error>,
}

enum Inner {
    Http(Box<dyn Read + Send>),
    File(std::fs::File),
    /// A command run by `command.rs`, the reading end of its stdout, and when reading gives up
    /// (the command's deadline: something it started in a session of its own, out of reach of
    /// the group kill, may hold the pipe open for ever).
    Command(Running, ChildStdout, std::time::Instant),
}

/// What fills the templates: the resource, and the segments after the pattern's prefix.
fn rest_of(pattern: &str, resource: &str) -> String {
    if pattern == "*" {
        return resource.to_owned();
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => resource
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or_default()
            .to_owned(),
        None => String::new(),
    }
}

/// Each segment percent-encoded (everything but unreserved characters), joined by `/`.
fn escape_path(name: &str) -> String {
    name.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Connector {
    /// Opens the source for `resource` (already checked against the grammar and this
    /// connector's pattern), reading at most `limit` bytes (and never more than `max_bytes`).
    /// `env` is given to a command as environment variables.
    pub fn open(&self, resource: &str, limit: u64, env: &[(&str, String)]) -> Result<Source> {
        crate::core::resource::validate_resource(resource)?;
        if !crate::core::resource::matches(&self.resources, resource) {
            return Err(Error::bad_input(
                "this connector does not serve that resource",
            ));
        }
        let rest = rest_of(&self.resources, resource);
        let limit = limit.min(self.max_bytes);
        let inner = match &self.kind {
            Kind::Http {
                template,
                headers,
                ca_pem,
                max_redirects,
            } => {
                let url = template
                    .replace("{rest}", &escape_path(&rest))
                    .replace("{resource}", &escape_path(resource));
                Inner::Http(self.http_get(
                    &url,
                    headers,
                    ca_pem.as_deref(),
                    *max_redirects,
                    limit,
                )?)
            }
            Kind::File { root } => Inner::File(open_beneath(root, &rest, limit)?),
            Kind::Command { argv } => {
                let (running, stdout) = self.spawn(argv, &rest, resource, env)?;
                let deadline = std::time::Instant::now() + Duration::from_secs(self.timeout_secs);
                Inner::Command(running, stdout, deadline)
            }
        };
        Ok(Source {
            inner,
            limit,
            read: 0,
            timeout_secs: self.timeout_secs,
            failure: None,
        })
    }

    fn http_get(
        &self,
        url: &str,
        headers: &[(String, zeroize::Zeroizing<String>)],
        ca_pem: Option<&[u8]>,
        max_redirects: u32,
        limit: u64,
    ) -> Result<Box<dyn Read + Send>> {
        use ureq::tls::{RootCerts, TlsConfig};
        let roots = match ca_pem {
            None => RootCerts::WebPki,
            Some(pem) => {
                let certs = ureq::tls::parse_pem(pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if certs.is_empty() {
                    return Err(Error::bad_input("ca_file holds no PEM certificate"));
                }
                RootCerts::Specific(Arc::new(certs))
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(self.timeout_secs)))
            .http_status_as_error(false)
            // Redirects are followed below, one at a time, and only on the same origin.
            .max_redirects(0)
            .max_redirects_will_error(false)
            // An https source is never followed to plain http.
            .https_only(url.starts_with("https://"))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .user_agent("sealrelay-connector")
            // Never a proxy taken from the environment: it would see the secret headers.
            .proxy(None)
            .build()
            .into();
        let mut url = url.to_owned();
        let mut hops = 0;
        let response = loop {
            let mut request = agent.get(url.as_str());
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let response = request
                .call()
                .map_err(|e| http_error(&e, self.timeout_secs))?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                break response;
            }
            if hops == max_redirects {
                return Err(if max_redirects == 0 {
                    Error::io("the source answered with a redirect, which this connector does not follow (point `http` at the final URL): nothing was sealed")
                } else {
                    Error::io(
                        "the source redirected too many times (max_redirects): nothing was sealed",
                    )
                });
            }
            hops += 1;
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            url = same_origin(&url, location).ok_or_else(|| {
                Error::io("the source redirected to another host, scheme or port, which a connector never follows (point `http` at the final URL): nothing was sealed")
            })?;
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Error::io(format!(
                "the source answered HTTP {status}: nothing was sealed"
            )));
        }
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(over_limit(limit));
        }
        Ok(Box::new(response.into_body().into_reader()))
    }

    /// Fills the argument templates and runs the command through `command.rs`: no shell, a
    /// clean environment, stderr dropped, killed with its group at `timeout_secs`.
    fn spawn(
        &self,
        argv: &[String],
        rest: &str,
        resource: &str,
        env: &[(&str, String)],
    ) -> Result<(Running, ChildStdout)> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::bad_input("command is empty"))?;
        let mut filled_argv = Vec::with_capacity(argv.len());
        filled_argv.push(program.clone());
        for a in args {
            let filled = a.replace("{rest}", rest).replace("{resource}", resource);
            // A resource segment may start with '-': it must never become an option.
            if filled.starts_with('-') && !a.starts_with('-') {
                return Err(refused(
                    "the resource would reach the command as an option (it starts with '-'): refused",
                ));
            }
            filled_argv.push(filled);
        }
        // Only what a program needs, and the grant's facts: not the agent's environment (which
        // holds the HTTP connectors' secrets). No shell; stderr is dropped (it may echo data,
        // and nothing of the data may reach a log or an error).
        let program = Program {
            argv: &filled_argv,
            env,
            inherit_env: false,
            show_stderr: false,
            timeout: Some(Duration::from_secs(self.timeout_secs)),
            own_group: true,
        };
        match command::start(&program, Stdio::piped()) {
            Ok((running, Some(stdout))) => Ok((running, stdout)),
            Ok((_, None)) => Err(Error::internal("the command has no stdout")),
            Err(RunError::Start(e)) => Err(Error::io(format!(
                "cannot run the connector's command: {}",
                e.kind()
            ))),
            Err(RunError::Other(e)) => Err(e),
        }
    }
}

/// Opens `rest` beneath `root` with openat2(RESOLVE_BENEATH): the kernel refuses `..` and
/// symlinks that lead out of the root, with no window between a check and the open.
fn open_beneath(root: &std::path::Path, rest: &str, limit: u64) -> Result<std::fs::File> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    if rest.is_empty()
        || rest
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
    {
        return Err(Error::bad_input(
            "the resource names no file under the connector's root",
        ));
    }
    let dir = std::fs::File::open(root)
        .map_err(|e| Error::io(format!("cannot open the connector's root: {}", e.kind())))?;
    let fd = openat2(
        &dir,
        rest,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::XDEV => {
            refused("the file is outside the connector's root (a symlink or .. leads out): refused")
        }
        rustix::io::Errno::NOENT => Error::not_found("no such file under the connector's root"),
        rustix::io::Errno::LOOP => refused("too many symlinks under the connector's root"),
        rustix::io::Errno::NOSYS => {
            unavailable("this kernel lacks openat2 (Linux 5.6+), which the file connector needs")
        }
        other => Error::io(format!(
            "cannot open the file under the connector's root: {}",
            std::io::Error::from(other).kind()
        )),
    })?;
    let file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot inspect the file: {}", e.kind())))?;
    let ft = meta.file_type();
    if !ft.is_file() || ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        return Err(Error::bad_input(
            "the resource is not a regular file under the connector's root",
        ));
    }
    if meta.len() > limit {
        return Err(over_limit(limit));
    }
    Ok(file)
}

fn refused(m: impl Into<String>) -> Error {
    Error::new(crate::ErrorKind::Refused, m)
}
fn too_large(m: impl Into<String>) -> Error {
    Error::new(crate::ErrorKind::BadInput, m)
}
fn unavailable(m: impl Into<String>) -> Error {
    Error::new(crate::ErrorKind::Unavailable, m)
}

/// The source holds (or declares) more than `limit` bytes. Its own figure is not repeated: a
/// number the source chose is a word the source chose (threat 50).
fn over_limit(limit: u64) -> Error {
    too_large(format!(
        "the source holds more than the limit of {limit} bytes (max_bytes, or the grant's): nothing was sealed"
    ))
}

/// Where a redirect from `url` to `location` leads, if it stays on `url`'s origin (scheme,
/// host and port): an absolute URL on that origin, or a path from its root. Anything else (the
/// connector host's own network, a cloud's metadata address, any other host) is not followed:
/// the data the source's credentials reach is the source's, not what a redirect names.
fn same_origin(url: &str, location: &str) -> Option<String> {
    let origin = |u: &str| -> Option<String> {
        let (scheme, rest) = u.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        (!authority.is_empty() && !authority.contains('@')).then(|| {
            format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            )
        })
    };
    let base = origin(url)?;
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(format!("{base}{location}"));
    }
    (origin(location)? == base).then(|| location.to_owned())
}

/// A failed request to an HTTP source, in fixed sentences: nothing of the library's own text,
/// which can carry what the source chose (a redirect target, a status line, a header, a
/// certificate's names), reaches the agent, its model or its log (threat 50).
fn http_error(e: &ureq::Error, timeout_secs: u64) -> Error {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => unavailable(format!(
            "the source did not answer within {timeout_secs} s (timeout_secs): nothing was sealed"
        )),
        E::TooManyRedirects => {
            Error::io("the source redirected too many times (max_redirects): nothing was sealed")
        }
        E::RedirectFailed | E::BadUri(_) => {
            Error::io("the source answered with a redirect that cannot be followed: nothing was sealed")
        }
        E::RequireHttpsOnly(_) => Error::io(
            "the source redirected an https request to plain http, which is never followed: nothing was sealed",
        ),
        E::HostNotFound => unavailable("the source's host was not found: nothing was sealed"),
        E::ConnectionFailed => unavailable("cannot connect to the source: nothing was sealed"),
        E::Tls(_) | E::Pem(_) | E::Rustls(_) | E::TlsRequired => Error::io(
            "the source's TLS connection was refused (an unknown issuer, or a name that does not match; a source's own CA goes in ca_file): nothing was sealed",
        ),
        // TLS failures (an unknown issuer, a name mismatch) also arrive as I/O errors of this
        // kind; their text names what the source's certificate holds, so it is not repeated.
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Error::io(
            "the source's TLS connection was refused (an unknown issuer, or a name that does not match; a source's own CA goes in ca_file): nothing was sealed",
        ),
        E::Io(io) => unavailable(format!(
            "cannot reach the source ({}): nothing was sealed",
            io.kind()
        )),
        E::LargeResponseHeader(..) => {
            Error::io("the source's response headers are too large: nothing was sealed")
        }
        E::Protocol(_) | E::Http(_) => {
            Error::io("the source's answer is not valid HTTP: nothing was sealed")
        }
        E::BodyExceedsLimit(_) => too_large(
            "the source sent more than the connector's limit (max_bytes, or the grant's): nothing was sealed",
        ),
        _ => Error::io("the request to the source failed: nothing was sealed"),
    }
}

impl Source {
    /// Why reading failed, if it did: the error to report instead of the sealer's.
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// After the last byte: a command must have exited 0 within its time.
    pub fn finish(mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if let Inner::Command(running, _, _) = &mut self.inner {
            let status = running.wait()?;
            if running.timed_out() {
                return Err(unavailable(format!(
                    "the command did not finish within {} s (timeout_secs): nothing was sent",
                    self.timeout_secs
                )));
            }
            if !status.success() {
                return Err(Error::io(match status.code() {
                    Some(code) => {
                        format!("the command exited with status {code}: nothing was sent")
                    }
                    None => "the command was killed by a signal: nothing was sent".to_owned(),
                }));
            }
        }
        Ok(())
    }
}

/// Reads from a command's pipe, waiting no later than `deadline`: past it the read fails as
/// timed out, whoever still holds the pipe's other end.
fn read_by(
    pipe: &mut ChildStdout,
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> std::io::Result<usize> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let timeout = Timespec {
        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds = [PollFd::new(&*pipe, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        Ok(_) => pipe.read(buf),
        Err(rustix::io::Errno::INTR) => Err(std::io::Error::from(std::io::ErrorKind::Interrupted)),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.failure.is_some() {
            return Err(std::io::Error::other("the source failed"));
        }
        // One byte past the limit is asked for, so that a source of exactly `limit` passes.
        let room = (self.limit - self.read).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let result = match &mut self.inner {
            Inner::Http(r) => r.read(&mut buf[..want]),
            Inner::File(f) => f.read(&mut buf[..want]),
            Inner::Command(_, stdout, deadline) => read_by(stdout, &mut buf[..want], *deadline),
        };
        match result {
            Ok(n) => {
                self.read += n as u64;
                if self.read > self.limit {
                    self.failure = Some(too_large(format!(
                        "the source sent more than the limit of {} bytes (max_bytes, or the grant's): nothing was sent",
                        self.limit
                    )));
                    return Err(std::io::Error::other("the source is over its limit"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failure = Some(match e.kind() {
                    std::io::ErrorKind::TimedOut => unavailable(format!(
                        "the source did not finish within {} s (timeout_secs): nothing was sent",
                        self.timeout_secs
                    )),
                    kind => Error::io(format!(
                        "reading the source failed ({kind}): nothing was sent"
                    )),
                });
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_the_rest_escaped_segment_by_segment() {
        assert_eq!(rest_of("tickets/*", "tickets/4711/notes"), "4711/notes");
        assert_eq!(rest_of("*", "a/b"), "a/b");
        assert_eq!(rest_of("docs/one", "docs/one"), "");
        assert_eq!(escape_path("4711/notes.v2"), "4711/notes%2Ev2");
        assert_eq!(escape_path("a~b_c-d"), "a~b_c-d");
    }
}
