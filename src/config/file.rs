//! Where a setting comes from: a TOML file (`--config FILE`), `EDGECOMET_*` environment
//! variables, flags; a flag wins over the environment, which wins over the file.
//!
//! Everything here works from clap's `Command`, never from a list of flags, so that a flag added
//! to [`Config`] gets its environment variable, its file key and its line in `--print-config`
//! without a line of code here:
//!
//! - [`command`] gives every flag an environment variable (`EDGECOMET_` + the long name in
//!   capitals, `-` as `_`; a flag that names its own, like EDGECOMET_PUBLISH_KEY, keeps it) and
//!   lets list flags take comma-separated values from it.
//! - The file's key for a flag is its long name (or an alias), with `-` or `_`. Each value is
//!   checked by the flag's own value parser, so the file refuses what the flag refuses, with
//!   the same words, plus the file's name, the line and the key. The values then become the
//!   flags' defaults on the `Command` (clap's order is flag, then environment, then default):
//!   nothing from the file goes into argv, where `--processes` would copy it for its children
//!   (they read the file again: the launcher passes its argv, `--config FILE` included).
//! - [`Loaded::render`] prints the effective settings as TOML for `--print-config`, secrets (a
//!   flag whose environment value is hidden) redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};

use super::Config;

/// Flags that are not settings: no environment variable, no file key, not printed.
const NOT_SETTINGS: &[&str] = &["help", "version", "print-config"];

/// Flags that have an environment variable but no file key (a file does not name a file).
const NOT_IN_FILE: &[&str] = &["config"];

/// What stands for a secret in `--print-config`.
pub const REDACTED: &str = "(redacted)";

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// From clap: a bad flag or environment value, or `--help` / `--version` (print it with
    /// `exit`).
    Clap(clap::Error),
    /// The file: unreadable, not TOML, an unknown key or a bad value.
    File(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Clap(e) => write!(f, "{e}"),
            LoadError::File(e) => f.write_str(e),
        }
    }
}

/// The environment variable of a long flag name: `max-connections` → `EDGECOMET_MAX_CONNECTIONS`.
pub fn env_name(long: &str) -> String {
    format!("EDGECOMET_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Whether a flag is a switch (`--client-publish`): `true`/`false` in the file.
fn is_switch(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Whether a flag takes a list (repeatable or comma-separated): a TOML array in the file.
fn is_list(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
}

/// The settings: every flag but help, version and --print-config.
pub fn settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some_and(|l| {
            !NOT_SETTINGS.contains(&l) && !NOT_SETTINGS.contains(&a.get_id().as_str())
        })
    })
}

/// The settings a file may set (every setting but --config).
pub fn file_settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    settings(cmd).filter(|a| !a.get_long().is_some_and(|l| NOT_IN_FILE.contains(&l)))
}

/// `Config`'s command with an environment variable for every setting.
pub fn command() -> Command {
    Config::command().mut_args(|a| {
        let Some(long) = a.get_long().map(str::to_string) else {
            return a;
        };
        if NOT_SETTINGS.contains(&long.as_str()) {
            return a;
        }
        let a = if a.get_env().is_none() {
            a.env(env_name(&long))
        } else {
            a
        };
        if is_list(&a) && a.get_value_delimiter().is_none() {
            a.value_delimiter(',')
        } else if is_switch(&a) {
            // EDGECOMET_CLIENT_PUBLISH=1 as well as =true (and 0/no/off/false).
            a.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            a
        }
    })
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// A TOML value as the text a flag would be given, or why it cannot be one.
fn scalar(arg: &Arg, v: &DeValue<'_>) -> Result<String, String> {
    match v {
        DeValue::Boolean(b) if is_switch(arg) => Ok(b.to_string()),
        _ if is_switch(arg) => Err("expected true or false".to_string()),
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("{i}: {e}")),
        DeValue::Boolean(_) => Err("expected a value, not true or false (not a switch)".into()),
        DeValue::Float(f) => Err(format!(
            "{f}: not a number this flag takes (durations and sizes take units: \"1500ms\", \"1MiB\")"
        )),
        DeValue::Datetime(_) => Err("expected a string or a number, not a date".into()),
        DeValue::Array(_) => Err("expected one value, not an array".into()),
        DeValue::Table(_) => Err("expected a value, not a table (keys are not grouped)".into()),
    }
}

/// Reads the TOML `text` of the file `path` into each setting's values (as a flag would be
/// given them), each checked with the flag's value parser. The error names the file, the line
/// and the key.
pub fn file_values(
    cmd: &Command,
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let shown = path.display();
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let msg = e.message().trim().to_string();
        format!("{shown}:{line}: not TOML: {msg}")
    })?;
    // Every name a key may use: the long name and the aliases, with `-` (keys are matched
    // after turning `_` into `-`).
    let mut names: BTreeMap<String, &Arg> = BTreeMap::new();
    for a in file_settings(cmd) {
        for name in a
            .get_long()
            .into_iter()
            .chain(a.get_all_aliases().unwrap_or_default())
        {
            names.insert(name.to_string(), a);
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for (key, value) in table.get_ref().iter() {
        let line = line_of(text, key.span().start);
        let k = key.get_ref().as_ref();
        let Some(&arg) = names.get(&k.replace('_', "-")) else {
            if matches!(value.get_ref(), DeValue::Table(_)) {
                return Err(format!(
                    "{shown}:{line}: [{k}]: not a table of settings: the keys are not grouped \
                     (`key = value` lines at the top, before any [table])"
                ));
            }
            let hint = closest(&k.replace('_', "-"), names.keys())
                .map_or(String::new(), |n| format!("; did you mean {n:?}?"));
            return Err(format!(
                "{shown}:{line}: unknown key {k:?} (the keys are the long flag names, as in \
                 `edgecomet --help`){hint}"
            ));
        };
        let id = arg.get_id().to_string();
        if let Some(first) = lines.insert(id.clone(), line) {
            return Err(format!(
                "{shown}:{line}: key {k:?}: --{} is set already on line {first}",
                arg.get_long().unwrap_or(&id)
            ));
        }
        let vline = line_of(text, value.span().start);
        let bad = |msg: String| format!("{shown}:{vline}: key {k:?}: {msg}");
        let mut values = Vec::new();
        match value.get_ref() {
            DeValue::Array(items) if is_list(arg) => {
                for item in items.iter() {
                    values.push(scalar(arg, item.get_ref()).map_err(bad)?);
                }
            }
            v => {
                let s = scalar(arg, v).map_err(bad)?;
                match arg.get_value_delimiter() {
                    Some(d) if is_list(arg) => values.extend(s.split(d).map(str::to_string)),
                    _ => values.push(s),
                }
            }
        }
        if !is_switch(arg) {
            for v in &values {
                check(arg, v).map_err(bad)?;
            }
        }
        out.insert(id, values);
    }
    Ok(out)
}

/// The name nearest to `key` by edit distance, if it is near (a typo, not another word).
fn closest<'a>(key: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    names
        .map(|n| (distance(key, n), n))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Runs `v` through the flag's own parser (a command with this flag alone, given
/// `--flag=v`), so that the file refuses exactly what the flag refuses, in the same words.
fn check(arg: &Arg, v: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
    Command::new("edgecomet")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>))
        .try_get_matches_from([format!("--{long}={v}")])
        .map(|_| ())
        .map_err(|e| clap_message(&e))
}

/// The first line of a clap error without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// `cmd` with the file's values as defaults.
fn with_defaults(cmd: Command, values: &BTreeMap<String, Vec<String>>) -> Command {
    values.iter().fold(cmd, |cmd, (id, vals)| {
        let vals = vals.clone();
        cmd.mut_arg(id, move |a| {
            if vals.is_empty() {
                // `key = []`: a list flag with no value, as if the file did not set it.
                a
            } else {
                a.default_values(vals)
            }
        })
    })
}

/// The configuration and where each setting came from.
pub struct Loaded {
    pub config: Config,
    /// Things to tell the operator before starting (a file with secrets that others may read).
    pub warnings: Vec<String>,
    cmd: Command,
    matches: ArgMatches,
    /// Ids of the settings the file set.
    from_file: BTreeSet<String>,
}

impl Config {
    /// `Config` from the process's flags, environment and `--config` file. `--help`, `--version`
    /// and bad flags are clap errors (`LoadError::Clap(e)`: `e.exit()` prints them).
    pub fn load() -> Result<Loaded, LoadError> {
        Config::load_from(std::env::args_os())
    }

    /// As [`Config::load`], from these arguments (the first is the program name) and the
    /// process's environment.
    pub fn load_from<I, T>(args: I) -> Result<Loaded, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cmd = command();
        let matches = cmd
            .clone()
            .try_get_matches_from(&args)
            .map_err(LoadError::Clap)?;
        let mut warnings = Vec::new();
        let (cmd, matches, from_file) = match matches.get_one::<std::path::PathBuf>("config") {
            None => (cmd, matches, BTreeSet::new()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| LoadError::File(format!("--config {}: {e}", path.display())))?;
                let values = file_values(&cmd, path, &text).map_err(LoadError::File)?;
                warnings.extend(secrets_readable_by_others(&cmd, path, &values));
                let cmd = with_defaults(cmd, &values);
                let matches = cmd
                    .clone()
                    .try_get_matches_from(&args)
                    .map_err(LoadError::Clap)?;
                (cmd, matches, values.into_keys().collect())
            }
        };
        let config = Config::from_arg_matches(&matches).map_err(LoadError::Clap)?;
        Ok(Loaded {
            config,
            warnings,
            cmd,
            matches,
            from_file,
        })
    }
}

/// A warning when the file sets a secret (a flag whose environment value is hidden) and its
/// group or others may read it.
fn secrets_readable_by_others(
    cmd: &Command,
    path: &Path,
    values: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let secrets: Vec<&str> = file_settings(cmd)
        .filter(|a| a.is_hide_env_values_set() && values.contains_key(a.get_id().as_str()))
        .filter_map(Arg::get_long)
        .collect();
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (!secrets.is_empty() && mode & 0o077 != 0).then(|| {
        format!(
            "edgecomet: warning: {} holds secrets ({}) and others may read it (mode {mode:03o}); \
             chmod 600 it",
            path.display(),
            secrets.join(", ")
        )
    })
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A flag's value as TOML: a bare integer when it is one, else a string.
fn toml_value(arg: &Arg, v: &str) -> String {
    let integer = v == "0" || (!v.starts_with('0') && v.chars().all(|c| c.is_ascii_digit()));
    if (is_switch(arg) && (v == "true" || v == "false")) || (integer && !v.is_empty()) {
        v.to_string()
    } else {
        toml_string(v)
    }
}

impl Loaded {
    /// The effective settings as TOML, one `key = value` per setting, grouped by help heading,
    /// each with where its value came from. Secrets are redacted.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# edgecomet --print-config: the effective configuration (file < environment < flags)\n",
        );
        if let Some(path) = &self.config.config {
            out.push_str(&format!("# file: {}\n", path.display()));
        }
        for (heading, args) in by_heading(file_settings(&self.cmd)) {
            out.push_str(&format!("\n# {heading}\n"));
            for a in args {
                let id = a.get_id().as_str();
                let key = a.get_long().unwrap_or(id);
                let secret = a.is_hide_env_values_set();
                let raw: Vec<String> = if is_switch(a) {
                    // As parsed: EDGECOMET_CLIENT_PUBLISH=1 prints `true`.
                    vec![self.matches.get_flag(id).to_string()]
                } else {
                    self.matches
                        .get_raw(id)
                        .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                        .unwrap_or_default()
                };
                let show = |v: &String| {
                    if secret {
                        toml_string(REDACTED)
                    } else if id == "broker" {
                        // The URL may hold a Redis password: shown with `***` in its place.
                        toml_string(&redact_url_password(v))
                    } else {
                        toml_value(a, v)
                    }
                };
                let source = match self.matches.value_source(id) {
                    Some(ValueSource::CommandLine) => "flag".to_string(),
                    Some(ValueSource::EnvVariable) => a
                        .get_env()
                        .map_or("environment".into(), |e| e.to_string_lossy().into_owned()),
                    Some(ValueSource::DefaultValue) if self.from_file.contains(id) => {
                        "file".to_string()
                    }
                    _ => "default".to_string(),
                };
                let line = if is_list(a) {
                    let items: Vec<String> = raw.iter().map(show).collect();
                    format!("{key} = [{}]", items.join(", "))
                } else if let Some(v) = raw.first() {
                    format!("{key} = {}", show(v))
                } else {
                    format!("# {key} = (unset)")
                };
                out.push_str(&format!("{line:<48} # {source}\n"));
            }
        }
        out
    }
}

/// Settings grouped by help heading, in `Config`'s order (headings in the order of their first
/// flag).
fn by_heading<'a>(args: impl Iterator<Item = &'a Arg>) -> Vec<(String, Vec<&'a Arg>)> {
    let order: Vec<String> = Config::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut args: Vec<&'a Arg> = args.collect();
    args.sort_by_key(|a| order.iter().position(|id| id == a.get_id().as_str()));
    let mut groups: Vec<(String, Vec<&'a Arg>)> = Vec::new();
    for a in args {
        let h = a.get_help_heading().unwrap_or("Options").to_string();
        match groups.iter_mut().find(|(name, _)| *name == h) {
            Some((_, v)) => v.push(a),
            None => groups.push((h, vec![a])),
        }
    }
    groups
}

/// Greedy wrap of `text` into `# `-comment lines of at most `width` characters.
fn comment(text: &str, width: usize) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let mut line = String::from("#");
        for word in para.split_whitespace() {
            if line.len() > 1 && line.len() + 1 + word.len() > width {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The example configuration file (`edgecomet.example.toml`): every key, commented out, with its
/// default (or a placeholder `"<VALUE>"` where there is none) and the flag's full help above it.
/// `tests/config.rs` keeps the committed file equal to this.
pub fn example() -> String {
    let cmd = command();
    let mut out = String::from(
        "# edgecomet configuration: `edgecomet --config edgecomet.example.toml`.\n\
         #\n\
         # Every key is a flag's long name (`max-connections`; `max_connections` works too) and is\n\
         # shown commented out with its default. Durations take units (500ms, 30s, 2m, 1h), sizes\n\
         # too (512KiB, 64MiB, 1GB); a bare number is in the flag's own unit. Lists are arrays,\n\
         # switches true/false. EDGECOMET_* environment variables override the file, and flags\n\
         # override both; `edgecomet --config FILE --print-config` shows the result.\n\
         #\n\
         # Generated from `edgecomet --help` (tests/config.rs checks that it is current).\n",
    );
    for (heading, args) in by_heading(file_settings(&cmd)) {
        out.push_str(&format!("\n# ---- {heading} ----\n"));
        for a in args {
            let key = a.get_long().unwrap_or(a.get_id().as_str());
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            out.push('\n');
            out.push_str(&comment(&help, 96));
            if let Some(aliases) = a.get_visible_aliases() {
                let names: Vec<String> = aliases.iter().map(|n| format!("`{n}`")).collect();
                out.push_str(&format!("# (also: {})\n", names.join(", ")));
            }
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let placeholder = || {
                let name = a
                    .get_value_names()
                    .and_then(|n| n.first())
                    .map_or("VALUE".to_string(), |n| n.to_string());
                toml_string(&format!("<{name}>"))
            };
            let value = if is_switch(a) {
                "false".to_string()
            } else if is_list(a) {
                if defaults.is_empty() {
                    format!("[{}]", placeholder())
                } else {
                    let items: Vec<String> = defaults.iter().map(|v| toml_value(a, v)).collect();
                    format!("[{}]", items.join(", "))
                }
            } else if let Some(d) = defaults.first() {
                toml_value(a, d)
            } else {
                placeholder()
            };
            out.push_str(&format!("# {key} = {value}\n"));
        }
    }
    out
}

/// A URL with the password of its userinfo (`scheme://user:PASSWORD@host`) replaced by `***`
/// (a `--broker` URL may hold Redis's password); unchanged without one.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    // `redis://PASS@host` (no colon) is a password alone, as redis-cli reads it.
    if !userinfo.contains(':') {
        return format!("{scheme}://***{}", &rest[at..]);
    }
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_passwords_are_redacted() {
        use super::redact_url_password as r;
        assert_eq!(r("redis://u:pw@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(r("rediss://:pw@h"), "rediss://:***@h");
        assert_eq!(r("redis://pw@h"), "redis://***@h");
        assert_eq!(r("redis://h:6379"), "redis://h:6379");
        assert_eq!(r("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    }

    use super::*;

    #[test]
    fn lines_and_near_names() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        let names: Vec<String> = ["max-connections", "max-channels", "listen"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            closest("max-conections", names.iter()).map(String::as_str),
            Some("max-connections")
        );
        assert_eq!(closest("colour", names.iter()), None);
    }

    #[test]
    fn values_as_toml() {
        let cmd = command();
        let arg = |id: &str| cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
        assert_eq!(toml_value(arg("history"), "64"), "64");
        assert_eq!(toml_value(arg("history"), "0"), "0");
        assert_eq!(toml_value(arg("token_audience"), "007"), "\"007\"");
        assert_eq!(toml_value(arg("bayeux_path"), "/a\"b\\"), "\"/a\\\"b\\\\\"");
        assert_eq!(toml_value(arg("client_publish"), "true"), "true");
        assert_eq!(toml_value(arg("listen"), "true"), "\"true\"");
        assert_eq!(toml_string("tab\there"), "\"tab\\u0009here\"");
        assert_eq!(comment("one two three", 9), "# one two\n# three\n");
    }
}
