//! The `wsloop-bench` command: parses the flags and runs one scenario (see the library docs).

use std::process::ExitCode;

use clap::Parser;
use wsloop_bench::BenchArgs;

fn main() -> ExitCode {
    wsloop_bench::run(&BenchArgs::parse())
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
