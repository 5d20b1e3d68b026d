//! The `sealrelay` command line: a thin shell over the library. Each failure is one line on
//! stderr and an exit code from `docs/cli.md`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = u8::try_from(e.kind().exit_code()).unwrap_or(1);
            ExitCode::from(code)
        }
    }
}
