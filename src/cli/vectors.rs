//! `vectors write` and `vectors check`: the test vectors other implementations check against
//! (`docs/vectors/`, `core::vectors`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealrelay::core::vectors::{check, generate, FILES};
use sealrelay::error::{Error, Result};
use sealrelay::local::fs::{read_capped, write_atomic};

#[derive(Subcommand)]
pub enum VectorsCommand {
    /// Write the vector files into DIR (made if missing; the files are replaced): the same
    /// bytes on every run and machine.
    Write(DirArgs),
    /// Verify every vector of the files in DIR as sealrelay verifies what they describe: each
    /// valid vector to exactly what it says, each invalid one fails.
    Check(DirArgs),
}

#[derive(Args)]
pub struct DirArgs {
    /// The vectors directory.
    #[arg(value_name = "DIR", default_value = "docs/vectors")]
    pub dir: PathBuf,
}

/// The largest vector file read.
const MAX_VECTOR_FILE: usize = 1 << 20;

pub fn run(cmd: VectorsCommand) -> Result<()> {
    match cmd {
        VectorsCommand::Write(a) => {
            if a.dir.exists() && !a.dir.is_dir() {
                return Err(Error::bad_input(format!(
                    "{} is not a directory: give a directory for the vector files",
                    a.dir.display()
                )));
            }
            std::fs::create_dir_all(&a.dir)
                .map_err(|e| Error::io(format!("cannot make {}: {e}", a.dir.display())))?;
            for (name, text) in generate()? {
                write_atomic(&a.dir.join(name), text.as_bytes(), 0o644, true)?;
                println!("wrote {}", a.dir.join(name).display());
            }
            Ok(())
        }
        VectorsCommand::Check(a) => {
            let mut total = 0;
            for name in FILES {
                let path = a.dir.join(name);
                let bytes = read_capped(&path, MAX_VECTOR_FILE)?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| Error::bad_input(format!("{} is not UTF-8", path.display())))?;
                let n = check(name, text).map_err(|e| e.context(path.display()))?;
                println!("{name}: {n} vectors verified");
                total += n;
            }
            println!("ok: {total} vectors");
            Ok(())
        }
    }
}
