//! gunicorn.conf.py: run it with the Python ferricorn serves with (in a child
//! process: the master runs no Python), and take the module-level names that are
//! gunicorn settings, as gunicorn does.

use std::path::Path;
use std::process::Command;

use figment::value::{Dict, Value};

use crate::{ConfigError, Source};

/// gunicorn's settings a config file may set (gunicorn ignores other names).
const GUNICORN_SETTINGS: &[&str] = &[
    "wsgi_app",
    "bind",
    "backlog",
    "workers",
    "worker_class",
    "threads",
    "worker_connections",
    "max_requests",
    "max_requests_jitter",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "reload",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "check_config",
    "print_config",
    "preload_app",
    "sendfile",
    "reuse_port",
    "chdir",
    "daemon",
    "raw_env",
    "pidfile",
    "worker_tmp_dir",
    "user",
    "group",
    "umask",
    "initgroups",
    "tmp_upload_dir",
    "secure_scheme_headers",
    "forwarded_allow_ips",
    "pythonpath",
    "paste",
    "proxy_protocol",
    "proxy_allow_ips",
    "raw_paste_global_conf",
    "permit_obsolete_folding",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "forwarder_headers",
    "header_map",
    "accesslog",
    "disable_redirect_access_to_syslog",
    "access_log_format",
    "errorlog",
    "loglevel",
    "capture_output",
    "logger_class",
    "logconfig",
    "logconfig_dict",
    "logconfig_json",
    "syslog_addr",
    "syslog",
    "syslog_prefix",
    "syslog_facility",
    "enable_stdio_inheritance",
    "statsd_host",
    "dogstatsd_tags",
    "statsd_prefix",
    "proc_name",
    "keyfile",
    "certfile",
    "ssl_version",
    "cert_reqs",
    "ca_certs",
    "suppress_ragged_eofs",
    "do_handshake_on_connect",
    "ciphers",
    "control_socket",
    "control_socket_mode",
    "control_socket_disable",
];

/// gunicorn's server hooks.
pub const HOOKS: &[&str] = &[
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
];

/// The hooks ferricorn runs: in the master (through a child Python, since the
/// master runs none itself) and in each worker's interpreter.
pub const RUN_HOOKS: &[&str] = &[
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_exec",
    "child_exit",
    "nworkers_changed",
    "on_exit",
    "post_fork",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_exit",
];

/// What ferricorn does with a gunicorn setting it does not implement.
enum Unsupported {
    Ignore(&'static str),
    Refuse(&'static str),
}

fn unsupported(name: &str, value: &Value) -> Option<Unsupported> {
    use Unsupported::*;
    let truthy = !matches!(value, Value::Bool(_, false) | Value::Empty(..))
        && !matches!(value, Value::Num(_, n) if n.to_u128() == Some(0));
    Some(match name {
        "daemon" if truthy => {
            Refuse("ferricorn stays in the foreground; let the supervisor run it in the background")
        }
        "paste" if truthy => {
            Refuse("PasteDeploy apps are not supported; name the WSGI callable (MODULE:CALLABLE)")
        }
        "ca_certs" if truthy => {
            Refuse("client certificates are not supported yet; put a TLS proxy in front to require them")
        }
        "worker_class" if !matches!(value, Value::String(_, s) if s == "sync" || s == "gthread") => {
            Refuse("ferricorn has sync and gthread workers; use worker_class = \"sync\" or \"gthread\" (with threads = N)")
        }
        "secure_scheme_headers" => Ignore(
            "the scheme headers are gunicorn's defaults (X-Forwarded-Proto: https, X-Forwarded-Ssl: on, X-Forwarded-Protocol: ssl)",
        ),
        "forwarder_headers" => Ignore("not supported yet"),
        "worker_class" | "daemon" | "paste" | "ca_certs" => return None,
        "check_config" | "print_config" => {
            Ignore("use the --check-config and --print-config flags")
        }
        "logconfig_dict" | "logconfig" | "logconfig_json" | "logger_class" => {
            Ignore("Python logging configuration does not apply to ferricorn's own log")
        }
        "header_map" => Ignore("header names with `_` are always dropped, as gunicorn's default"),
        _ => Ignore("not applicable to ferricorn"),
    })
}

pub struct PyConf {
    pub settings: Dict,
    pub hooks: Vec<String>,
    pub warnings: Vec<String>,
}

/// Run `path` with `python` and collect its settings. `names` are the settings
/// ferricorn implements (the rest are reported or refused).
pub fn read(
    path: &Path,
    python: &Path,
    names: &[&str],
    origin: &Source,
    text: &str,
) -> Result<PyConf, ConfigError> {
    let shown = path.display().to_string();
    let err = |reason: String| ConfigError::new("config", &shown, origin.clone(), reason);
    let out = Command::new(python)
        .arg("-c")
        .arg(include_str!("pyconf.py"))
        .arg(path)
        .arg(GUNICORN_SETTINGS.join(","))
        .arg(HOOKS.join(","))
        .output()
        .map_err(|e| err(format!("cannot run {} to read it: {e}", python.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "cannot read it: {}",
            stderr.lines().last().unwrap_or("python failed")
        )));
    }
    let parsed: Value = serde_json_like(&stdout)
        .ok_or_else(|| err("cannot read it: no result from python".into()))?;
    let dict = parsed.into_dict().unwrap_or_default();
    if let Some(Value::String(_, e)) = dict.get("error") {
        return Err(err(format!("it raised {e}")));
    }
    let given = dict
        .get("settings")
        .and_then(|v| v.clone().into_dict())
        .unwrap_or_default();
    let mut settings = Dict::new();
    let mut warnings = Vec::new();
    let at = |key: &str| Source::File {
        path: shown.clone(),
        line: crate::load::line_of(text, key),
    };
    for (name, value) in given {
        let value = match (name.as_str(), value) {
            // gunicorn lets `bind` be one string.
            ("bind", Value::String(t, s)) => Value::Array(t, vec![Value::String(t, s)]),
            (_, v) => v,
        };
        if name == "raw_env" {
            settings.insert("raw_env".into(), value);
        } else if names.contains(&name.as_str()) {
            settings.insert(name, value);
        } else {
            match unsupported(&name, &value) {
                Some(Unsupported::Refuse(why)) => {
                    return Err(ConfigError::new(&name, value_text(&value), at(&name), why))
                }
                Some(Unsupported::Ignore(why)) => {
                    warnings.push(format!("{name} (from {}) is ignored: {why}", at(&name)))
                }
                None => {}
            }
        }
    }
    for name in dict
        .get("unreadable")
        .and_then(|v| v.as_array())
        .unwrap_or(&[])
    {
        if let Some(n) = name.as_str() {
            warnings.push(format!("{n} (from {}) is ignored: its value is not a plain value (string, number, list, dict)", at(n)));
        }
    }
    let hooks: Vec<String> = dict
        .get("hooks")
        .and_then(|v| v.as_array())
        .unwrap_or(&[])
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    Ok(PyConf {
        settings,
        hooks,
        warnings,
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(_, s) => s.clone(),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

/// JSON is a subset of what figment's value parser reads for scalars; for the
/// nested result use figment's JSON provider.
fn serde_json_like(text: &str) -> Option<Value> {
    use figment::providers::{Format, Json};
    use figment::Provider;
    let data = Json::string(text.trim()).data().ok()?;
    data.into_values().next().map(Value::from)
}
