//! Where settings come from: the command line, then `WSLOOP_*` environment variables, then a
//! `--config` TOML file with the flags' names, then the defaults. The file's settings become
//! flags for what neither the command line nor the environment set, so every value goes
//! through the same validation.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The environment variable of a flag: `--ping-interval` is `WSLOOP_PING_INTERVAL`.
pub fn env_name(long: &str) -> String {
    format!("WSLOOP_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Gives every flag of `command` and its subcommands its `WSLOOP_*` variable.
pub fn with_env(command: Command) -> Command {
    let add = |arg: clap::Arg| match (arg.get_long(), arg.get_action()) {
        (_, ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version) => {
            arg
        }
        (Some(long), _) if arg.get_env().is_none() => {
            let name = env_name(long);
            arg.env(name)
        }
        _ => arg,
    };
    command
        .mut_args(add)
        .mut_subcommands(move |sub| sub.mut_args(add))
}

/// The flags that the file at `path` adds for `subcommand`: one `--name=value` per setting
/// that `matches` did not get from the command line or the environment.
pub fn file_args(
    path: &Path,
    subcommand: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{shown}: {e}"))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = subcommand
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                format!(
                    "{shown}: `{key}` is not a setting of `wsloop {}` (the settings are its flags' names without --)",
                    subcommand.get_name()
                )
            })?;
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for value in values {
            let text = match value {
                toml::Value::Boolean(on) if is_switch => {
                    if *on {
                        args.push(format!("--{key}").into());
                    }
                    continue;
                }
                _ if is_switch => return Err(format!("{shown}: `{key}` wants true or false")),
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                _ => {
                    return Err(format!(
                        "{shown}: `{key}` wants a string, a number or a list of them"
                    ))
                }
            };
            args.push(format!("--{key}={text}").into());
        }
    }
    Ok(args)
}
