//! The `mbc-node` binary: parse, dispatch, print errors, pick the exit code.

use std::process::ExitCode;

use clap::Parser;
use mbc_node::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse(); // Usage errors exit with code 2 here (clap).
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
