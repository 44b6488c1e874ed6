//! The `mbc-node` binary: parse, dispatch, print errors, pick the exit code.

use std::process::ExitCode;

use clap::Parser;
use mbc_node::cli::{Cli, run};

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse(); // Usage errors exit with code 2 here (clap).
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Output into a pipe that closed (`mbc-node status | head -3`) ends the program quietly with
/// success, as ripgrep does, instead of a panic: `println!` panics on EPIPE because Rust ignores
/// SIGPIPE, and this crate forbids the unsafe code that would restore it.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
