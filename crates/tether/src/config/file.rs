//! Configuration files: every `tether serve` flag as a TOML key, layered under the
//! environment and the command line.
//!
//! Why this shape: the keys are not a second list kept in sync by hand but the serve
//! command's own arguments (`--max-message-bytes` is the key `max_message_bytes`), and
//! every value is checked by the same parser as the flag, so a flag added to
//! [`crate::Config`] is a config key at once, with the same validation. A file value
//! becomes its argument's default, so clap's own precedence gives the layering:
//! command-line flags, then `TETHER_*` environment variables, then the file, then the
//! built-in defaults.
//!
//! Problems carry the file, line, column and key, so `tether config check` and a
//! failing `tether serve --config` point at the exact spot.

use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (unreadable).
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One `key = value` of the file.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    key_span: Range<usize>,
    /// The value as the flag's text; several for a list (a flag that may repeat).
    values: Vec<String>,
    value_span: Range<usize>,
    /// Set when the value's shape (a table, a nested list) cannot be a flag value.
    shape_error: Option<String>,
}

/// A parsed config file, not yet checked against the command.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    name: String,
    text: String,
    settings: Vec<Setting>,
}

impl ConfigFile {
    /// Reads and parses a file; a syntax error or an unreadable file is a problem.
    pub fn read(path: &Path) -> Result<ConfigFile, Vec<Problem>> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                file: name.clone(),
                line: 0,
                column: 0,
                key: None,
                message: format!("cannot read the config file: {e}"),
            }]
        })?;
        ConfigFile::parse(&name, &text)
    }

    /// Parses TOML text; `name` labels problems.
    pub fn parse(name: &str, text: &str) -> Result<ConfigFile, Vec<Problem>> {
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                let (line, column) = line_column(text, at);
                vec![Problem {
                    file: name.to_owned(),
                    line,
                    column,
                    key: None,
                    message: e.message().trim().to_owned(),
                }]
            })?;
        let mut settings: Vec<Setting> = table
            .into_iter()
            .map(|(key, value)| {
                let (values, shape_error) = flag_values(value.get_ref());
                Setting {
                    key: key.get_ref().clone(),
                    key_span: key.span(),
                    values,
                    value_span: value.span(),
                    shape_error,
                }
            })
            .collect();
        // In file order, so problems read top to bottom.
        settings.sort_by_key(|s| s.key_span.start);
        Ok(ConfigFile {
            name: name.to_owned(),
            text: text.to_owned(),
            settings,
        })
    }

    /// How many settings the file holds.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// The keys set, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.settings.iter().map(|s| s.key.as_str())
    }

    /// Every problem with the file against `serve` (the `tether serve` command):
    /// unknown keys, values of the wrong shape, values its flag would refuse.
    pub fn check(&self, serve: &Command) -> Vec<Problem> {
        let mut problems = Vec::new();
        for setting in &self.settings {
            let Some(arg) = find_arg(serve, &setting.key) else {
                let mut message = "unknown key".to_owned();
                match closest(serve, &setting.key) {
                    Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
                    None => message.push_str(&format!("; known keys: {}", keys(serve).join(", "))),
                }
                problems.push(self.problem(&setting.key_span, &setting.key, message));
                continue;
            };
            if let Some(shape) = &setting.shape_error {
                problems.push(self.problem(&setting.value_span, &setting.key, shape.clone()));
                continue;
            }
            if setting.values.len() != 1 && !takes_many(arg) {
                problems.push(self.problem(
                    &setting.value_span,
                    &setting.key,
                    "takes one value, not a list".into(),
                ));
                continue;
            }
            for value in &setting.values {
                let checked = validate(arg, value)
                    .and_then(|()| super::check_spec(&setting.key.replace('-', "_"), value));
                if let Err(message) = checked {
                    problems.push(self.problem(&setting.value_span, &setting.key, message));
                }
            }
        }
        problems
    }

    /// `serve` with the file's values as its defaults (check first: unknown keys are
    /// skipped here).
    pub fn apply(&self, mut serve: Command) -> Command {
        for setting in &self.settings {
            let Some(id) = find_arg(&serve, &setting.key).map(|a| a.get_id().to_string()) else {
                continue;
            };
            let values = setting.values.clone();
            serve = serve.mut_arg(id, move |arg| arg.default_values(values));
        }
        serve
    }

    fn problem(&self, span: &Range<usize>, key: &str, message: String) -> Problem {
        let (line, column) = line_column(&self.text, span.start);
        Problem {
            file: self.name.clone(),
            line,
            column,
            key: Some(key.to_owned()),
            message,
        }
    }
}

/// The config key of an argument: its long name with `_` for `-`.
pub fn key_of(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    // The file cannot name itself, and help and version are not settings.
    if matches!(long, "config" | "help" | "version") {
        return None;
    }
    Some(long.replace('-', "_"))
}

/// Every key a config file for `serve` may hold.
pub fn keys(serve: &Command) -> Vec<String> {
    serve.get_arguments().filter_map(key_of).collect()
}

fn find_arg<'c>(serve: &'c Command, key: &str) -> Option<&'c Arg> {
    let key = key.replace('-', "_");
    serve
        .get_arguments()
        .find(|a| key_of(a).as_deref() == Some(key.as_str()))
}

/// Runs `value` through the flag's own parser. clap keeps the parser call to itself,
/// so this parses `--flag=value` with a command holding only a copy of the flag
/// (without its `requires` and conflicts, which are not about the value). A boolean
/// switch takes `true` or `false` here.
fn validate(arg: &Arg, value: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let mut copy = Arg::new(arg.get_id().clone())
        .long(long.to_owned())
        .value_parser(arg.get_value_parser().clone())
        .action(match arg.get_action() {
            ArgAction::Append => ArgAction::Append,
            _ => ArgAction::Set,
        });
    if let Some(names) = arg.get_value_names() {
        copy = copy.value_names(names.to_vec());
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        copy = copy.value_delimiter(delimiter);
    }
    Command::new("tether")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(copy)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| ())
        .map_err(|e| clap_message(&e))
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg.get_value_delimiter().is_some()
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// A TOML value as the text(s) its flag would take.
fn flag_values(value: &toml::Value) -> (Vec<String>, Option<String>) {
    match value {
        toml::Value::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                match scalar(item) {
                    Some(v) => values.push(v),
                    None => return (Vec::new(), Some("a list may hold only plain values".into())),
                }
            }
            (values, None)
        }
        other => match scalar(other) {
            Some(v) => (vec![v], None),
            None => (
                Vec::new(),
                Some("expects a value, not a table (settings are top-level keys)".into()),
            ),
        },
    }
}

fn scalar(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

/// clap's message without its "error: " prefix and its "try --help" tail.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// The known key nearest to a misspelt one, if it is near enough to be a typo.
fn closest(serve: &Command, key: &str) -> Option<String> {
    let key = key.replace('-', "_");
    keys(serve)
        .into_iter()
        .map(|k| (edit_distance(&k, &key), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    /// A stand-in for `tether serve` with the kinds of flags it has.
    #[derive(Debug, Args)]
    struct Serve {
        #[arg(long = "config")]
        config_file: Option<String>,
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 1 << 20)]
        max_message_bytes: usize,
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        echo_endpoint: bool,
        #[arg(long = "allow-origin", value_delimiter = ',')]
        allow_origins: Vec<String>,
        #[arg(long = "mongo-resource")]
        mongo_resources: Vec<String>,
    }

    fn serve() -> Command {
        Serve::augment_args(Command::new("serve"))
    }

    fn parse(file: &ConfigFile, args: &[&str]) -> Serve {
        let command = file.apply(serve());
        let matches = command
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap();
        Serve::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn a_good_file_sets_defaults_and_flags_still_win() {
        let text = "listen = \"0.0.0.0:8080\"\nmax-message-bytes = 2048\nstore = \"sqlite:///tmp/x.db\"\necho_endpoint = true\nallow_origin = [\"https://a.example\", \"https://b.example\"]\n";
        let file = ConfigFile::parse("t.toml", text).unwrap();
        assert_eq!(file.check(&serve()), Vec::new());
        assert_eq!(file.len(), 5);

        let s = parse(&file, &[]);
        assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.max_message_bytes, 2048);
        assert_eq!(s.store.as_deref(), Some("sqlite:///tmp/x.db"));
        assert!(s.echo_endpoint);
        assert_eq!(s.allow_origins, ["https://a.example", "https://b.example"]);

        let s = parse(&file, &["--max-message-bytes", "7"]);
        assert_eq!(s.max_message_bytes, 7);
        assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn specs_with_passwords_are_checked_without_showing_them() {
        let text = "mongo_resource = [\"todos=mongodb://u:pw@h/#app/todos\", \"x=mongodb://u:pw@h/#app\"]\n";
        let file = ConfigFile::parse("t.toml", text).unwrap();
        let problems: Vec<String> = file.check(&serve()).iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            ["t.toml:1:18: key `mongo_resource`: --mongo-resource x=mongodb://u:***@h/#app: expected RESOURCE=mongodb://HOST:PORT/?OPTIONS#DATABASE/COLLECTION"]
        );
    }

    #[test]
    fn problems_name_the_line_and_key() {
        let text = "# comment\nlisten = \"nowhere\"\nmax_mesage_bytes = 5\necho_endpoint = \"maybe\"\nmax_message_bytes = 12\n[store]\nurl = \"x\"\n";
        let file = ConfigFile::parse("t.toml", text).unwrap();
        let problems: Vec<String> = file.check(&serve()).iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert_eq!(
            problems[0],
            "t.toml:2:10: key `listen`: invalid value 'nowhere' for '--listen <LISTEN>': invalid socket address syntax"
        );
        assert_eq!(
            problems[1],
            "t.toml:3:1: key `max_mesage_bytes`: unknown key; did you mean `max_message_bytes`?"
        );
        assert!(
            problems[2].starts_with("t.toml:4:17: key `echo_endpoint`: invalid value 'maybe'"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].starts_with("t.toml:6:1: key `store`: expects a value, not a table"),
            "{}",
            problems[3]
        );
        // A number where text is expected is fine: it is the flag's text.
        let file = ConfigFile::parse("t.toml", "store = 3\n").unwrap();
        assert_eq!(file.check(&serve()), Vec::new());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        #[derive(Debug, Args)]
        struct WithEnv {
            #[arg(long, default_value = "built-in", env = "TETHER_TEST_CFG_ENV_ONLY")]
            value: String,
        }
        let file = ConfigFile::parse("t.toml", "value = \"from-file\"\n").unwrap();
        let command = || file.apply(WithEnv::augment_args(Command::new("serve")));
        let value = |args: &[&str]| {
            let m = command()
                .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
                .unwrap();
            WithEnv::from_arg_matches(&m).unwrap().value
        };
        assert_eq!(value(&[]), "from-file");
        // Only this test uses this variable, so setting it races with nothing.
        std::env::set_var("TETHER_TEST_CFG_ENV_ONLY", "from-env");
        assert_eq!(value(&[]), "from-env");
        assert_eq!(value(&["--value", "from-flag"]), "from-flag");
        std::env::remove_var("TETHER_TEST_CFG_ENV_ONLY");
    }

    #[test]
    fn lists_only_where_the_flag_repeats() {
        let file = ConfigFile::parse("t.toml", "max_message_bytes = [1, 2]\n").unwrap();
        let problems = file.check(&serve());
        assert_eq!(problems[0].message, "takes one value, not a list");
        assert_eq!((problems[0].line, problems[0].column), (1, 21));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let problems = ConfigFile::parse("t.toml", "listen = \"a\"\nlisten = \"b\"\n").unwrap_err();
        assert_eq!(problems[0].line, 2, "{}", problems[0]);
        let problems = ConfigFile::parse("t.toml", "a = \n").unwrap_err();
        assert_eq!(problems[0].line, 1, "{}", problems[0]);
        let p = ConfigFile::read(Path::new("/nonexistent/t.toml")).unwrap_err();
        assert!(p[0]
            .to_string()
            .starts_with("/nonexistent/t.toml: cannot read the config file"));
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncdé f", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé f", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé f", 7), (2, 4));
        assert_eq!(edit_distance("listen", "lisen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
