use std::fmt;

/// Where a value came from, for error messages and `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A command-line flag, e.g. `--workers`.
    Flag(String),
    /// An environment variable, e.g. `WEB_CONCURRENCY` or `FERRICORN_WORKERS`.
    Env(String),
    /// A line of a config file.
    File {
        path: String,
        line: Option<usize>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File {
                path,
                line: Some(line),
            } => write!(f, "{path}:{line}"),
            Source::File { path, line: None } => f.write_str(path),
        }
    }
}

/// A refused setting: one line naming the setting, the value, its source and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}` for `{setting}` (from {origin}): {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub value: String,
    pub origin: Source,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        setting: &str,
        value: impl fmt::Display,
        origin: Source,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            setting: setting.to_string(),
            value: value.to_string(),
            origin,
            reason: reason.into(),
        }
    }
}
