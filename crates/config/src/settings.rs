//! The settings as every source gives them: all optional, named as gunicorn names
//! them (TOML keys, `FERRICORN_<NAME>` variables). Sources are merged with figment
//! and then validated into a [`crate::Config`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A value a config file may write as a number or a string (`umask = 0o27` or
/// `umask = "027"`, `user = 1000` or `user = "www"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrOrInt {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for StrOrInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrOrInt::Int(i) => write!(f, "{i}"),
            StrOrInt::Str(s) => f.write_str(s),
        }
    }
}

/// A comma list written as one string or as a list (`"10.0.0.0/8,::1"` or `["*"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl StrOrList {
    pub fn joined(&self) -> String {
        match self {
            StrOrList::Str(s) => s.clone(),
            StrOrList::List(l) => l.join(","),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsgi_app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_deadline: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_jitter: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_preset: Option<String>,
    /// `["HUP=graceful-stop:0", …]`, or in TOML a table `[on_signal] HUP = "graceful-stop:0"`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "on_signal_list"
    )]
    pub on_signal: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_delay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_exit: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int_exit: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quit_exit: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chdir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pythonpath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub umask: Option<StrOrInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglevel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accesslog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errorlog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsd_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsd_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dogstatsd_tags: Option<String>,
    /// `KEY=VALUE` entries, as gunicorn's `raw_env` (the `-e` flag adds to them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_allow_ips: Option<StrOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_extra_files: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_output: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_app: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendfile: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_port: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defer_accept: Option<bool>,
    /// `off`, `v1`, `v2`, `auto` (a gunicorn.conf.py may say True/False).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "bool_or_str"
    )]
    pub proxy_protocol: Option<StrOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_allow_ips: Option<StrOrList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_request_body: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_buffer_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_obsolete_folding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_request_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_request_fields: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_request_field_size: Option<u64>,
}

/// Every setting name, for `FERRICORN_<NAME>` and docs/configuration.md.
pub const NAMES: &[&str] = &[
    "wsgi_app",
    "bind",
    "backlog",
    "workers",
    "timeout",
    "boot_deadline",
    "max_requests",
    "max_requests_jitter",
    "signal_preset",
    "on_signal",
    "graceful_timeout",
    "drain_delay",
    "keepalive",
    "term_exit",
    "int_exit",
    "quit_exit",
    "chdir",
    "pythonpath",
    "pidfile",
    "certfile",
    "keyfile",
    "user",
    "group",
    "umask",
    "loglevel",
    "worker_connections",
    "accesslog",
    "access_log_format",
    "errorlog",
    "statsd_host",
    "statsd_prefix",
    "dogstatsd_tags",
    "raw_env",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "forwarded_allow_ips",
    "reload",
    "reload_extra_files",
    "capture_output",
    "preload_app",
    "threads",
    "proc_name",
    "sendfile",
    "reuse_port",
    "defer_accept",
    "proxy_protocol",
    "proxy_allow_ips",
    "metrics_bind",
    "header_timeout",
    "body_timeout",
    "limit_request_body",
    "body_buffer_size",
    "permit_obsolete_folding",
];

fn bool_or_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<StrOrList>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Bool(bool),
        Str(String),
    }
    Ok(Some(match Form::deserialize(d)? {
        Form::Bool(true) => StrOrList::Str("auto".into()),
        Form::Bool(false) => StrOrList::Str("off".into()),
        Form::Str(s) => StrOrList::Str(s),
    }))
}

fn on_signal_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
        Table(std::collections::BTreeMap<String, String>),
    }
    Ok(Some(match Form::deserialize(d)? {
        Form::List(l) => l,
        Form::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Form::Table(t) => t.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
    }))
}

/// The default of a setting as `--print-config` shows it.
pub fn default_text(name: &str) -> &'static str {
    match name {
        "wsgi_app" => "none",
        "bind" => "[\"127.0.0.1:8000\"]",
        "workers" => "1",
        "backlog" => "2048",
        "timeout" => "30",
        "boot_deadline" => "60",
        "max_requests" | "max_requests_jitter" => "0",
        "signal_preset" => "\"ferricorn\"",
        "on_signal" => "[]",
        "graceful_timeout" => "25",
        "drain_delay" => "0",
        "keepalive" => "100",
        "term_exit" | "int_exit" | "quit_exit" => "\"signal\"",
        "chdir" => "the start directory",
        "pythonpath" | "pidfile" | "certfile" | "keyfile" | "user" | "group" | "umask"
        | "accesslog" => "none",
        "access_log_format" => {
            r#""%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"""#
        }
        "errorlog" => "\"-\"",
        "statsd_host" => "none",
        "statsd_prefix" | "dogstatsd_tags" => "\"\"",
        "raw_env" => "[]",
        "forwarded_allow_ips" => "\"127.0.0.1,::1\"",
        "reload" | "capture_output" | "preload_app" => "false",
        "reload_extra_files" => "[]",
        "header_timeout" | "body_timeout" => "30",
        "limit_request_body" => "104857600",
        "body_buffer_size" => "1048576",
        "loglevel" => "\"info\"",
        "worker_connections" => "1000",
        "threads" => "1",
        "proc_name" | "metrics_bind" => "none",
        "sendfile" | "defer_accept" => "true",
        "reuse_port" | "permit_obsolete_folding" => "false",
        "proxy_protocol" => "\"off\"",
        "proxy_allow_ips" => "\"127.0.0.1,::1\"",
        "limit_request_line" => "4094",
        "limit_request_fields" => "100",
        "limit_request_field_size" => "8190",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exactly_the_fields() {
        // Every field must be reachable as FERRICORN_<NAME>, from gunicorn.conf.py,
        // and listed by --print-config and docs/configuration.md.
        let value = serde_json_fields();
        let mut fields: Vec<&str> = value.iter().map(String::as_str).collect();
        let mut names = NAMES.to_vec();
        fields.sort_unstable();
        names.sort_unstable();
        assert_eq!(fields, names);
        for n in NAMES {
            assert_ne!(default_text(n), "?", "no default text for {n}");
        }
    }

    /// The field names of `Settings`, read from serde's own view of the struct.
    fn serde_json_fields() -> Vec<String> {
        struct Names(Vec<String>);
        impl<'de> serde::Deserializer<'de> for &mut Names {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("only structs"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields.iter().map(|f| f.to_string()).collect();
                Err(serde::de::Error::custom("done"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut names = Names(Vec::new());
        let _ = Settings::deserialize(&mut names);
        names.0
    }
}
