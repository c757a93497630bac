//! Merging the sources with figment, in gunicorn's order of precedence:
//! defaults < config file < environment (`FERRICORN_<SETTING>`, then
//! `GUNICORN_CMD_ARGS`, then `FERRICORN_CMD_ARGS`) < command line.

use std::path::{Path, PathBuf};

use clap::Parser;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::settings::{Settings, NAMES};
use crate::{Cli, ConfigError, Env, Source};

const CLI_LAYER: &str = "command line";
const ENV_LAYER: &str = "environment";
const PY_LAYER: &str = "python config file ";

/// The merged settings and where each came from.
pub struct Merged {
    pub settings: Settings,
    pub gunicorn_args: Option<Cli>,
    pub ferricorn_args: Option<Cli>,
    figment: Figment,
    file: Option<(PathBuf, String)>,
    /// Things to tell the user once logging is up (ignored files, …).
    pub warnings: Vec<String>,
    /// A gunicorn.conf.py's server hooks that ferricorn runs, and the file.
    pub hooks: Option<(PathBuf, Vec<String>)>,
}

/// One named layer of settings (a provider whose metadata names it).
struct Layer {
    name: String,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

fn layer(name: &str, settings: &Settings) -> Result<Layer, ConfigError> {
    let value = Value::serialize(settings)
        .map_err(|e| ConfigError::new(name, "", Source::Default, e.to_string()))?;
    Ok(Layer {
        name: name.to_string(),
        data: value.into_dict().unwrap_or_default(),
    })
}

/// `FERRICORN_WORKERS=3` → `workers = 3`, values read as TOML-ish scalars.
fn env_layer(env: &dyn Env) -> Layer {
    let mut data = Dict::new();
    for name in NAMES {
        if let Some(v) = env.var(&env_name(name)) {
            let value = if ["bind", "on_signal", "reload_extra_files", "raw_env"].contains(name) {
                Value::from(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>(),
                )
            } else {
                v.parse::<Value>().unwrap_or_else(|_| Value::from(v))
            };
            data.insert(name.to_string(), value);
        }
    }
    Layer {
        name: ENV_LAYER.to_string(),
        data,
    }
}

pub fn env_name(setting: &str) -> String {
    format!("FERRICORN_{}", setting.to_ascii_uppercase())
}

/// Parse `GUNICORN_CMD_ARGS` / `FERRICORN_CMD_ARGS` like a second command line.
fn cmd_args(var: &str, env: &dyn Env) -> Result<Option<Cli>, ConfigError> {
    let Some(raw) = env.var(var) else {
        return Ok(None);
    };
    let words = shlex::split(&raw)
        .ok_or_else(|| ConfigError::new(var, &raw, Source::Env(var.into()), "unbalanced quotes"))?;
    let args = std::iter::once("ferricorn".to_string()).chain(words);
    let cli = Cli::try_parse_from(args).map_err(|e| {
        let first = e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string();
        ConfigError::new(var, &raw, Source::Env(var.into()), first)
    })?;
    Ok(Some(cli))
}

pub fn merge(cli: &Cli, env: &dyn Env) -> Result<Merged, ConfigError> {
    let gunicorn_args = cmd_args("GUNICORN_CMD_ARGS", env)?;
    let ferricorn_args = cmd_args("FERRICORN_CMD_ARGS", env)?;
    let mut warnings: Vec<String> = Vec::new();

    // Which config file: -c, else -c inside the CMD_ARGS, else ./ferricorn.toml.
    let chosen = cli
        .config
        .as_ref()
        .map(|p| (p.clone(), Source::Flag("--config".into())))
        .or_else(|| {
            ferricorn_args
                .as_ref()
                .and_then(|c| c.config.clone())
                .map(|p| (p, Source::Env("FERRICORN_CMD_ARGS".into())))
        })
        .or_else(|| {
            gunicorn_args
                .as_ref()
                .and_then(|c| c.config.clone())
                .map(|p| (p, Source::Env("GUNICORN_CMD_ARGS".into())))
        })
        .or_else(|| {
            Path::new("ferricorn.toml")
                .exists()
                .then(|| (PathBuf::from("ferricorn.toml"), Source::Default))
        });
    // As gunicorn: ./gunicorn.conf.py when no other config file was named.
    let chosen = chosen.or_else(|| {
        Path::new("gunicorn.conf.py")
            .exists()
            .then(|| (PathBuf::from("gunicorn.conf.py"), Source::Default))
    });
    let mut figment = Figment::new();
    let mut file = None;
    if let Some((path, origin)) = chosen {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new("config", &shown, origin.clone(), e.to_string()))?;
        if path.extension().is_some_and(|e| e == "py") {
            let python = env.python().ok_or_else(|| {
                ConfigError::new(
                    "config",
                    &shown,
                    origin.clone(),
                    "no Python to read it with",
                )
            })?;
            let conf = crate::pyconf::read(&path, &python, NAMES, &origin, &text)?;
            warnings.extend(conf.warnings);
            let mut run = Vec::new();
            for hook in conf.hooks {
                if crate::pyconf::RUN_HOOKS.contains(&hook.as_str()) {
                    run.push(hook);
                } else {
                    warnings.push(format!("server hook `{hook}` in {shown} is not run: ferricorn has no matching moment for it yet"));
                }
            }
            figment = figment.merge(Layer {
                name: format!("{PY_LAYER}{shown}"),
                data: conf.settings,
            });
            let absolute = std::env::current_dir()
                .map(|d| d.join(&path))
                .unwrap_or_else(|_| path.clone());
            let mut merged = finish(
                figment,
                Some((path, text)),
                warnings,
                cli,
                env,
                gunicorn_args,
                ferricorn_args,
            )?;
            merged.hooks = (!run.is_empty()).then_some((absolute, run));
            return Ok(merged);
        }
        // Syntax errors first, so the message names the file (it carries the line).
        if let Err(e) = Toml::string(&text).data() {
            let msg = e.to_string().replace('\n', " ");
            return Err(ConfigError::new(
                "config",
                &shown,
                origin,
                format!("not valid TOML: {msg}"),
            ));
        }
        figment = figment.merge(Toml::file(&path));
        file = Some((path, text));
    }
    finish(
        figment,
        file,
        warnings,
        cli,
        env,
        gunicorn_args,
        ferricorn_args,
    )
}

/// The layers above the config file, then the merge itself.
fn finish(
    mut figment: Figment,
    file: Option<(PathBuf, String)>,
    warnings: Vec<String>,
    cli: &Cli,
    env: &dyn Env,
    gunicorn_args: Option<Cli>,
    ferricorn_args: Option<Cli>,
) -> Result<Merged, ConfigError> {
    figment = figment.merge(env_layer(env));
    for (name, c) in [
        ("GUNICORN_CMD_ARGS", &gunicorn_args),
        ("FERRICORN_CMD_ARGS", &ferricorn_args),
    ] {
        if let Some(c) = c {
            figment = figment.merge(layer(name, &c.settings())?);
        }
    }
    figment = figment.merge(layer(CLI_LAYER, &cli.settings())?);
    let mut merged = Merged {
        settings: Settings::default(),
        gunicorn_args,
        ferricorn_args,
        figment,
        file,
        warnings,
        hooks: None,
    };
    merged.settings = merged
        .figment
        .extract::<Settings>()
        .map_err(|e| merged.error(e))?;
    Ok(merged)
}

impl Merged {
    /// Where the value of `key` came from.
    pub fn origin(&self, key: &str) -> Source {
        let Some(meta) = self.figment.find_metadata(key) else {
            return Source::Default;
        };
        match meta.name.as_ref() {
            CLI_LAYER => Source::Flag(flag_for(key).to_string()),
            ENV_LAYER => Source::Env(env_name(key)),
            "GUNICORN_CMD_ARGS" | "FERRICORN_CMD_ARGS" => Source::Env(meta.name.to_string()),
            _ => match &self.file {
                Some((path, text)) => Source::File {
                    path: path.display().to_string(),
                    line: line_of(text, key),
                },
                None => Source::Default,
            },
        }
    }

    fn error(&self, e: figment::Error) -> ConfigError {
        use figment::error::Kind;
        let e = e
            .into_iter()
            .next()
            .expect("a figment error has at least one error");
        let key = e.path.join(".");
        let origin = |key: &str| match (&e.metadata, &self.file) {
            (Some(m), _) if m.name == CLI_LAYER => Source::Flag(flag_for(key).to_string()),
            (Some(m), _) if m.name == ENV_LAYER => Source::Env(env_name(key)),
            (Some(m), Some((path, text))) if m.source.is_some() => Source::File {
                path: path.display().to_string(),
                line: line_of(text, key),
            },
            (Some(m), _) => Source::Env(m.name.to_string()),
            (None, _) => Source::Default,
        };
        match &e.kind {
            Kind::UnknownField(field, _) => {
                let mut err = ConfigError::new(
                    field,
                    "",
                    origin(field),
                    "unknown setting; see docs/configuration.md",
                );
                err.value = field.to_string();
                err
            }
            Kind::InvalidType(actual, expected) => {
                ConfigError::new(&key, actual, origin(&key), format!("expected {expected}"))
            }
            Kind::InvalidValue(actual, expected) => {
                ConfigError::new(&key, actual, origin(&key), format!("expected {expected}"))
            }
            other => ConfigError::new(&key, "", origin(&key), other.to_string()),
        }
    }
}

/// The 1-based line where a TOML file sets `key` (`key = …` or `[key]`).
pub(crate) fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.starts_with(&format!("[{key}]"))
        })
        .map(|i| i + 1)
}

/// The command-line flag of a setting, for "(from --workers)".
pub fn flag_for(key: &str) -> &'static str {
    match key {
        "wsgi_app" => "APP_MODULE",
        "bind" => "--bind",
        "backlog" => "--backlog",
        "workers" => "--workers",
        "timeout" => "--timeout",
        "boot_deadline" => "--boot-deadline",
        "max_requests" => "--max-requests",
        "max_requests_jitter" => "--max-requests-jitter",
        "signal_preset" => "--signal-preset",
        "on_signal" => "--on-signal",
        "graceful_timeout" => "--graceful-timeout",
        "drain_delay" => "--drain-delay",
        "keepalive" => "--keep-alive",
        "term_exit" => "--term-exit",
        "int_exit" => "--int-exit",
        "quit_exit" => "--quit-exit",
        "chdir" => "--chdir",
        "pythonpath" => "--pythonpath",
        "pidfile" => "--pid",
        "certfile" => "--certfile",
        "keyfile" => "--keyfile",
        "user" => "--user",
        "group" => "--group",
        "umask" => "--umask",
        "loglevel" => "--log-level",
        "worker_connections" => "--worker-connections",
        "accesslog" => "--access-logfile",
        "access_log_format" => "--access-logformat",
        "errorlog" => "--error-logfile",
        "statsd_host" => "--statsd-host",
        "statsd_prefix" => "--statsd-prefix",
        "dogstatsd_tags" => "--dogstatsd-tags",
        "raw_env" => "--env",
        "forwarded_allow_ips" => "--forwarded-allow-ips",
        "reload" => "--reload",
        "reload_extra_files" => "--reload-extra-file",
        "capture_output" => "--capture-output",
        "preload_app" => "--preload",
        "threads" => "--threads",
        "proc_name" => "--name",
        "sendfile" => "--no-sendfile",
        "reuse_port" => "--reuse-port",
        "defer_accept" => "--no-defer-accept",
        "proxy_protocol" => "--proxy-protocol",
        "proxy_allow_ips" => "--proxy-allow-from",
        "metrics_bind" => "--metrics-bind",
        "header_timeout" => "--header-timeout",
        "body_timeout" => "--body-timeout",
        "limit_request_body" => "--limit-request-body",
        "body_buffer_size" => "--body-buffer-size",
        "permit_obsolete_folding" => "--permit-obsolete-folding",
        "limit_request_line" => "--limit-request-line",
        "limit_request_fields" => "--limit-request-fields",
        "limit_request_field_size" => "--limit-request-field_size",
        _ => "the command line",
    }
}
