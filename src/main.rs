//! The `sealrelay` command line: a thin shell over the library. Each failure is one line on
//! stderr and an exit code from `docs/cli.md`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_on_a_closed_pipe();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = u8::try_from(e.exit_code()).unwrap_or(1);
            ExitCode::from(code)
        }
    }
}

/// `sealrelay … | head` must not end in a panic and a backtrace when the reader goes away:
/// Rust ignores SIGPIPE, so printing to a closed pipe fails, and `println!` panics on it. The
/// hook turns that one panic into the quiet exit a shell expects (141, as for SIGPIPE); any
/// other panic is reported as before.
fn quiet_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
