use std::fmt;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    Flag(&'static str),
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// A refused setting: one line naming the setting, the value, its source and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}` for `{setting}` (from {origin}): {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub origin: Source,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn with_value(mut self, value: &str) -> Self {
        self.value = value.to_string();
        self
    }

    pub(crate) fn with_setting(mut self, setting: &'static str) -> Self {
        self.setting = setting;
        self
    }
}
