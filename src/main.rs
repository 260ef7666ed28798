//! The `progressd` binary: parse the command line, hand over to the library.

use clap::Parser;
use progressd::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => progressd::serve::main(*args),
        Command::Migrate(args) => progressd::serve::migrate(*args),
    }
}
