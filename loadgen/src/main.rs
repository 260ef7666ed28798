//! The `loadgen` binary: parse the command line, dispatch to the library, map the
//! outcome to an exit code (see [`loadgen::error`]).

use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::{compare, estimate, Error, Report, EXIT_VERIFY_FAILED};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn dispatch(command: Command) -> Result<i32, Error> {
    match command {
        Command::Run(args) => {
            let cfg = args.into_config()?;
            let json = cfg.json.clone();
            let report = loadgen::run_blocking(cfg)?;
            print!("{}", report.text());
            if let Some(path) = json {
                report.write_json(&path)?;
            }
            Ok(if report.passed() {
                0
            } else {
                EXIT_VERIFY_FAILED
            })
        }
        Command::Estimate(args) => {
            let input = args.input()?;
            let e = estimate::estimate(&input);
            if args.json {
                let text = serde_json::to_string_pretty(&e)
                    .map_err(|e| Error::Config(format!("cannot render the estimate: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", estimate::text(&input, &e));
            }
            if let Some(path) = &args.measured {
                let r = Report::read_json(path)?;
                print!("\n{}", estimate::versus_measured(&input, &r));
            }
            Ok(0)
        }
        Command::Compare(args) => {
            let a = Report::read_json(&args.a)?;
            let b = Report::read_json(&args.b)?;
            print!("{}", compare::compare(&a, &b));
            Ok(0)
        }
    }
}
