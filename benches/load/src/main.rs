//! The `wsloop-bench` command: parses the flags and runs one scenario (see the library docs).

use std::process::ExitCode;

use clap::Parser;
use wsloop_bench::BenchArgs;

fn main() -> ExitCode {
    match BenchArgs::try_parse() {
        Ok(args) => wsloop_bench::run(&args),
        // clap exits with 2 for bad arguments, which here means "ran but saw errors": a run
        // that could not be made is 1, as `--help` says. `--help` and `--version` are 0.
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        BenchArgs::command().debug_assert();
    }
}
