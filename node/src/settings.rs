//! The node's settings file, `canopy-node.toml` in the data directory: every flag of `join`
//! can be set there under its name (`store_mib = 8192`, `when = "idle"`), so a volunteer
//! writes their rules once. A flag on the command line wins over its environment variable
//! (`CANOPY_*`), which wins over the file, which wins over the built-in default. The first
//! `join` on a data directory writes a commented file with every setting and its default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

/// The settings file's name in the data directory.
pub const FILE: &str = "canopy-node.toml";
/// The commented file written on first `join`.
pub const TEMPLATE: &str = include_str!("canopy-node.toml");
/// A settings file larger than this is refused unread.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Why the command line or the settings file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The command line itself (clap prints it, with usage).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The file cannot be read or is not TOML.
    #[error("{path}: {message}")]
    File {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn file_error(path: &Path, message: impl Into<String>) -> SettingsError {
    SettingsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parses the command line, adding the settings file's values for `join`.
pub fn parse(argv: Vec<OsString>) -> Result<Cli, SettingsError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let (Command::Join(_), Some(join)) = (&cli.command, matches.subcommand_matches("join")) else {
        return Ok(cli);
    };
    let Some(dir) = crate::cli::data_dir(cli.data_dir.clone()) else {
        return Ok(cli);
    };
    let path = dir.join(FILE);
    let Some(table) = read(&path)? else {
        return Ok(cli);
    };
    let join_command = command
        .find_subcommand("join")
        .ok_or_else(|| file_error(&path, "this build has no join command"))?;
    let extra = args_from_table(join_command, join, &table).map_err(|m| file_error(&path, m))?;
    if extra.is_empty() {
        return Ok(cli);
    }
    let mut argv = argv;
    argv.extend(extra);
    let matches = command
        .try_get_matches_from(&argv)
        .map_err(|e| file_error(&path, e.to_string().trim_start_matches("error: ").trim()))?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The file as a TOML table; `None` when there is no file.
fn read(path: &Path) -> Result<Option<toml::Table>, SettingsError> {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, e.to_string())),
    };
    if size > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            format!("{size} bytes; a settings file is at most {MAX_FILE_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    text.parse::<toml::Table>()
        .map(Some)
        .map_err(|e| file_error(path, e.to_string()))
}

/// The command-line words that give `join` the file's settings, leaving out those the command
/// line or the environment already set.
fn args_from_table(
    join: &clap::Command,
    matches: &ArgMatches,
    table: &toml::Table,
) -> Result<Vec<OsString>, String> {
    let mut words = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = join
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && !a.is_hide_set())
            .ok_or_else(|| {
                let known: Vec<String> = join
                    .get_arguments()
                    .filter(|a| !a.is_hide_set() && a.get_id() != "help")
                    .map(|a| a.get_id().to_string())
                    .collect();
                format!(
                    "unknown setting `{key}`; the settings are: {}",
                    known.join(", ")
                )
            })?;
        if matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = arg.get_long().map(|l| format!("--{l}"));
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(format!("`{key}` takes a string or a number")),
        };
        if !arg.get_action().takes_values() {
            match (value, &flag) {
                (toml::Value::Boolean(true), Some(flag)) => words.push(flag.into()),
                (toml::Value::Boolean(false), _) => {}
                _ => return Err(format!("`{key}` is true or false")),
            }
            continue;
        }
        let values = match value {
            toml::Value::Array(items) if matches!(arg.get_action(), clap::ArgAction::Append) => {
                items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
            }
            toml::Value::Array(_) => return Err(format!("`{key}` takes one value, not a list")),
            v => vec![scalar(v)?],
        };
        for v in values {
            match &flag {
                Some(flag) => words.push(format!("{flag}={v}").into()),
                None => words.push(v.into()),
            }
        }
    }
    Ok(words)
}

/// Writes the commented settings file into `dir` if it has none; returns its path.
pub fn write_template_if_missing(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join(FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => std::io::Write::write_all(&mut file, TEMPLATE.as_bytes())?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::JoinConfig;
    use crate::polite::When;

    const ADDR: &str =
        "/ip4/127.0.0.1/tcp/4740/p2p/12D3KooWRh8tC5w9fyYZci3S9vTrNDbMNdXj13XfBj5aof2awhA9";

    fn join(dir: &Path, args: &[&str]) -> Result<JoinConfig, String> {
        let mut argv: Vec<OsString> = vec!["canopy-node".into(), "--data-dir".into()];
        argv.push(dir.into());
        argv.push("join".into());
        argv.extend(args.iter().map(OsString::from));
        match parse(argv).map_err(|e| e.to_string())?.command {
            Command::Join(a) => JoinConfig::from_args(*a).map_err(|e| e.to_string()),
            _ => Err("not join".into()),
        }
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let plain = join(dir.path(), &[ADDR]).unwrap();
        assert_eq!(plain.rules.when, When::Always);
        std::fs::write(
            dir.path().join(FILE),
            format!(
                "coordinator = \"{ADDR}\"\nwhen = \"idle\"\nidle-minutes = 10\nhours = \"22:00-07:00\"\n\
                 cpu_share = 50\nstore_mib = 100\nmdns = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n"
            ),
        )
        .unwrap();
        let from_file = join(dir.path(), &[]).unwrap();
        assert_eq!(from_file.rules.when, When::Idle);
        assert_eq!(from_file.rules.idle_after.as_secs(), 600);
        assert_eq!(
            from_file
                .rules
                .hours
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("22:00-07:00")
        );
        assert_eq!(from_file.rules.cpu_share, Some(50));
        assert_eq!(from_file.store_cap, 100 << 20);
        assert!(from_file.network.mdns);
        assert_eq!(from_file.network.listen.len(), 1);
        // The command line wins.
        let flags = join(dir.path(), &[ADDR, "--when", "always", "--store-mib", "7"]).unwrap();
        assert_eq!(flags.rules.when, When::Always);
        assert_eq!(flags.store_cap, 7 << 20);
        assert_eq!(
            flags.rules.cpu_share,
            Some(50),
            "the rest still from the file"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_file_and_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE);
        let path = file.display().to_string();
        for (text, expect) in [
            ("colour = \"green\"\n", "unknown setting `colour`"),
            ("cpu_share = 250\n", "cpu-share"),
            ("hours = \"9-5\"\n", "22:00-07:00"),
            ("when = \"sometimes\"\n", "sometimes"),
            ("mdns = \"yes\"\n", "`mdns` is true or false"),
            ("store_mib = [1, 2]\n", "takes one value"),
            ("store_mib = \n", "store_mib"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = join(dir.path(), &[ADDR]).unwrap_err();
            assert!(err.contains(&path) && err.contains(expect), "{text}: {err}");
        }
        std::fs::write(&file, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(join(dir.path(), &[ADDR]).unwrap_err().contains("at most"));
        std::fs::remove_file(&file).unwrap();
        let none = join(dir.path(), &[]).unwrap_err();
        assert!(none.contains("coordinator"), "{none}");
    }

    #[test]
    fn the_template_is_all_comments_and_every_setting_in_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_template_if_missing(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TEMPLATE);
        std::fs::write(&path, "# mine\n").unwrap();
        write_template_if_missing(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n", "kept");
        assert!(TEMPLATE.parse::<toml::Table>().unwrap().is_empty());
        // Uncommented, every example setting is accepted.
        let settings: String = TEMPLATE
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(settings.lines().count() >= 15, "{settings}");
        std::fs::write(&path, &settings).unwrap();
        join(dir.path(), &[ADDR]).unwrap();
    }
}
