//! The `krafter` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = krafter::cli::Cli::parse();
    match krafter::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", krafter::cli::output::error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
