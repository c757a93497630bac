//! ferricorn's settings: from the command line (gunicorn's flag names), a TOML
//! config file (gunicorn's setting names), `FERRICORN_<SETTING>` variables,
//! `GUNICORN_CMD_ARGS`/`FERRICORN_CMD_ARGS`, and the environment gunicorn honours
//! (`PORT`, `WEB_CONCURRENCY`), merged with figment and validated into one
//! [`Config`] before anything binds.
//!
//! Every error names the setting, the value, where the value came from and why it
//! is refused, on one line.

mod bind;
mod cli;
mod error;
mod load;
mod pyconf;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

pub use bind::Bind;
pub use cli::Cli;
pub use error::{ConfigError, Source};
use ferricorn_signals::{ExitRule, Override, ParseExitRuleError, Policy, Signal};
pub use load::{env_name, flag_for};
use log::LevelFilter;
pub use settings::{Settings, StrOrInt, StrOrList, NAMES};

/// Validated settings; everything downstream reads only this.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODULE:CALLABLE`, `MODULE:factory(args)` or `MODULE`, as given.
    pub app: String,
    pub binds: Vec<Bind>,
    pub backlog: i32,
    pub workers: u32,
    pub graceful_timeout: Duration,
    /// `--drain-delay`: serving on, with `Connection: close`, before a graceful stop.
    pub drain_delay: Duration,
    /// Longest a worker may be in one request, silent, or booting; None = off.
    pub timeout: Option<Duration>,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Crash-loop give-up: no worker ready for this long while workers keep dying.
    pub boot_deadline: Duration,
    pub keepalive: Duration,
    pub policy: Policy,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// TLS on every TCP bind: the PEM certificate chain and its key (`None`:
    /// the key is in the certificate file).
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Workers switch to these ids after fork. With `user` and no `group`, `group`
    /// is the user's primary group.
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// With `user`: the supplementary groups workers take (the user's, as
    /// initgroups gives them: what `su`, systemd and `runuser` give).
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    pub log_level: LevelFilter,
    /// Said once logging is up (e.g. a gunicorn.conf.py that is not read).
    pub warnings: Vec<String>,
    pub worker_connections: usize,
    /// `-` (stdout), a file, or None (off).
    pub access_log: Option<String>,
    pub access_log_format: Option<String>,
    /// None or `-` means stderr.
    pub error_log: Option<String>,
    /// `--statsd-host` (with `--statsd-prefix`, `--dogstatsd-tags`); None = off.
    pub statsd: Option<ferricorn_log::statsd::Settings>,
    /// Request head limits, with gunicorn's clamping applied.
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    /// `--reload`: workers restart when a watched file changes.
    pub reload: bool,
    pub reload_extra_files: Vec<PathBuf>,
    /// `--capture-output`: the app's stdout goes to the error log.
    pub capture_output: bool,
    /// `--preload`: the master imports the app before forking.
    pub preload: bool,
    /// `--threads`: concurrent requests (event loops) per worker.
    pub threads: u32,
    /// `--name`: process titles `ferricorn: master [NAME]` / `worker [NAME]`.
    pub proc_name: Option<String>,
    /// `--reuse-port`: SO_REUSEPORT on the listening sockets.
    pub reuse_port: bool,
    /// TCP_DEFER_ACCEPT on the listening sockets (`--no-defer-accept` turns it off).
    pub defer_accept: bool,
    /// wsgi.file_wrapper responses use sendfile(2) (`--no-sendfile`, SENDFILE).
    pub sendfile: bool,
    /// `--proxy-protocol`: the peers allowed to send a PROXY header; None = off.
    pub proxy_protocol: Option<ferricorn_http::AllowList>,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub limit_request_body: u64,
    /// Bodies larger than this stream to the app instead of being received first.
    pub body_buffer_size: usize,
    /// Accept obs-fold in request heads (gunicorn's option) instead of 400.
    pub permit_obsolete_folding: bool,
    /// `--metrics-bind`: where the master serves /metrics, /livez and /readyz;
    /// None = off. Always [`Bind::Tcp`].
    pub metrics_bind: Option<Bind>,
    /// Peers whose X-Forwarded-Proto (and -Ssl, -Protocol) set wsgi.url_scheme.
    pub forwarded_allow_ips: ferricorn_http::AllowList,
    /// gunicorn.conf.py server hooks to run: the file and the hook names.
    pub hooks: Option<(PathBuf, Vec<String>)>,
    /// Every setting as resolved, with its source, for `--print-config`.
    pub resolved: Vec<(String, String, Source)>,
    /// `-e KEY=VALUE`: set in the master (and so in every worker) at start.
    pub raw_env: Vec<(String, String)>,
}

/// Where environment variables come from (the process environment in production,
/// a fixed list in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;

    /// The Python that runs a gunicorn.conf.py (the one ferricorn serves with).
    fn python(&self) -> Option<PathBuf> {
        None
    }
}

/// The real environment, and the Python to read gunicorn.conf.py files with.
pub struct ProcessEnv {
    pub python: Option<PathBuf>,
}

impl Env for ProcessEnv {
    fn python(&self) -> Option<PathBuf> {
        self.python.clone()
    }

    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

impl Config {
    /// Merge every source (see `load`) and validate the result. A flag wins over
    /// the environment, which wins over a config file, which wins over defaults.
    pub fn resolve(cli: Cli, env: &dyn Env) -> Result<Config, ConfigError> {
        let merged = load::merge(&cli, env)?;
        let mut warnings = merged.warnings.clone();
        for (source, c) in [
            ("the command line", Some(&cli)),
            ("GUNICORN_CMD_ARGS", merged.gunicorn_args.as_ref()),
            ("FERRICORN_CMD_ARGS", merged.ferricorn_args.as_ref()),
        ] {
            let Some(c) = c else { continue };
            match c.gunicorn.check(source) {
                Ok(w) => warnings.extend(w),
                Err((flag, value, why)) => {
                    let o = if source == "the command line" {
                        Source::Flag(flag.clone())
                    } else {
                        Source::Env(source.to_string())
                    };
                    return Err(ConfigError::new(
                        flag.trim_start_matches('-'),
                        value,
                        o,
                        why,
                    ));
                }
            }
        }
        if merged.settings.preload_app == Some(true) && merged.settings.reload == Some(true) {
            warnings.push("--reload with --preload restarts workers on a change, but they fork from the code the master imported: restart or send USR2 to load new code".into());
        }
        let resolved = resolved_table(&merged, env);
        let mut raw_env = Vec::new();
        // The -e flags are part of the command line layer, so they are in `raw_env`
        // already, unless a config file gave raw_env and the command line none.
        for kv in merged.settings.raw_env.iter().flatten() {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        "raw_env",
                        kv,
                        Source::Flag("--env".into()),
                        "expected KEY=VALUE",
                    )
                })?;
            raw_env.push((k.to_string(), v.to_string()));
        }
        let s = &merged.settings;
        let origin = |key: &str| merged.origin(key);
        if let (Some(key), None) = (&s.keyfile, &s.certfile) {
            return Err(ConfigError::new(
                "keyfile",
                key.display(),
                origin("keyfile"),
                "a keyfile needs a certfile (--certfile) to go with it",
            ));
        }

        let binds = if let Some(list) = &s.bind {
            list.iter()
                .map(|b| Bind::parse(b, origin("bind")))
                .collect::<Result<_, _>>()?
        } else if let Some(port) = env.var("PORT") {
            // As gunicorn: PORT (even empty) means 0.0.0.0:$PORT, validated here.
            vec![
                Bind::parse(&format!("0.0.0.0:{port}"), Source::Env("PORT".into())).map_err(
                    |mut e| {
                        e.value = port.clone();
                        e
                    },
                )?,
            ]
        } else {
            vec![Bind::parse("127.0.0.1:8000", Source::Default)?]
        };

        let workers = match (&s.workers, env.var("WEB_CONCURRENCY")) {
            (Some(w), _) => positive("workers", &w.to_string(), origin("workers"))?,
            (None, Some(w)) => positive("workers", &w, Source::Env("WEB_CONCURRENCY".into()))?,
            (None, None) => 1,
        };

        let mut policy = match &s.signal_preset {
            Some(p) => Policy::preset(p.parse().map_err(|e: String| {
                ConfigError::new("signal_preset", p, origin("signal_preset"), e)
            })?),
            None => Policy::default(),
        };
        for o in s.on_signal.iter().flatten() {
            let parsed: Override = o
                .parse()
                .map_err(|e: String| ConfigError::new("on_signal", o, origin("on_signal"), e))?;
            policy.apply(parsed);
        }
        for (key, sig, rule) in [
            ("term_exit", Signal::SIGTERM, &s.term_exit),
            ("int_exit", Signal::SIGINT, &s.int_exit),
            ("quit_exit", Signal::SIGQUIT, &s.quit_exit),
        ] {
            if let Some(rule) = rule {
                let r: ExitRule = rule.to_string().parse().map_err(|e: ParseExitRuleError| {
                    ConfigError::new(key, rule, origin(key), e.to_string())
                })?;
                policy.set_exit(sig, r);
            }
        }

        let level = s.loglevel.as_deref().unwrap_or("info");
        let log_level = ferricorn_log::parse_level(level).ok_or_else(|| {
            ConfigError::new(
                "loglevel",
                level,
                origin("loglevel"),
                "expected one of debug, info, warning, error, critical",
            )
        })?;

        let app = s.wsgi_app.clone().unwrap_or_default();
        if s.wsgi_app.is_some() && app.trim().is_empty() {
            return Err(ConfigError::new(
                "wsgi_app",
                &app,
                origin("wsgi_app"),
                "expected MODULE:CALLABLE",
            ));
        }
        let non_negative =
            |key: &str, v: Option<f64>, default: f64| -> Result<Duration, ConfigError> {
                let v = v.unwrap_or(default);
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ConfigError::new(
                        key,
                        v,
                        origin(key),
                        "expected a number of seconds, 0 or more",
                    ));
                }
                Ok(Duration::from_secs_f64(v))
            };
        let user = s
            .user
            .as_ref()
            .map(|u| resolve_user(&u.to_string(), origin("user")))
            .transpose()?;
        let group = s
            .group
            .as_ref()
            .map(|g| resolve_group(&g.to_string(), origin("group")))
            .transpose()?;
        let (group, groups) = match user {
            Some(uid) => {
                let (gid, groups) = user_groups(uid, group, origin("user"))?;
                (Some(gid), groups)
            }
            None => (group, Vec::new()),
        };
        let umask = s
            .umask
            .as_ref()
            .map(|m| parse_umask(m, origin("umask")))
            .transpose()?;
        let timeout = s.timeout.unwrap_or(30);
        // As gunicorn: FORWARDED_ALLOW_IPS is the default, any other source overrides it.
        let (allow_text, allow_origin) =
            match (&s.forwarded_allow_ips, env.var("FORWARDED_ALLOW_IPS")) {
                (Some(v), _) => (v.joined(), origin("forwarded_allow_ips")),
                (None, Some(v)) => (v, Source::Env("FORWARDED_ALLOW_IPS".into())),
                (None, None) => ("127.0.0.1,::1".to_string(), Source::Default),
            };
        let proxy_on = match s.proxy_protocol.as_ref().map(StrOrList::joined) {
            None => false,
            Some(m) => match m.to_ascii_lowercase().as_str() {
                "off" | "false" | "" => false,
                "v1" | "v2" | "auto" | "true" | "on" => true,
                _ => {
                    return Err(ConfigError::new(
                        "proxy_protocol",
                        &m,
                        origin("proxy_protocol"),
                        "expected off, v1, v2 or auto",
                    ))
                }
            },
        };
        // The PROXY header comes before the TLS handshake, on the raw socket; the
        // worker reads it from the decrypted stream only, so the two are refused
        // together rather than read in the wrong place.
        if proxy_on && s.certfile.is_some() {
            return Err(ConfigError::new(
                "proxy_protocol",
                s.proxy_protocol
                    .as_ref()
                    .map(StrOrList::joined)
                    .unwrap_or_default(),
                origin("proxy_protocol"),
                "not supported together with certfile yet (a PROXY header before the TLS handshake is not read); terminate TLS in the proxy, or turn one off",
            ));
        }
        let proxy_protocol = if proxy_on {
            let text = s
                .proxy_allow_ips
                .as_ref()
                .map_or_else(|| "127.0.0.1,::1".to_string(), StrOrList::joined);
            Some(text.parse::<ferricorn_http::AllowList>().map_err(|e| {
                ConfigError::new("proxy_allow_ips", &text, origin("proxy_allow_ips"), e)
            })?)
        } else {
            None
        };
        let statsd = statsd_settings(s, &origin)?;
        let forwarded_allow_ips: ferricorn_http::AllowList =
            allow_text.parse().map_err(|e: String| {
                ConfigError::new("forwarded_allow_ips", &allow_text, allow_origin, e)
            })?;

        let metrics_bind = s
            .metrics_bind
            .as_deref()
            .map(|m| metrics_bind(m, origin("metrics_bind")))
            .transpose()?;

        Ok(Config {
            app,
            metrics_bind,
            pidfile: s.pidfile.clone(),
            certfile: s.certfile.clone(),
            keyfile: s.keyfile.clone(),
            user,
            group,
            groups,
            umask,
            timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
            max_requests: s.max_requests.unwrap_or(0),
            max_requests_jitter: s.max_requests_jitter.unwrap_or(0),
            boot_deadline: Duration::from_secs(s.boot_deadline.unwrap_or(60).max(1)),
            binds,
            backlog: s.backlog.unwrap_or(2048),
            workers,
            graceful_timeout: non_negative("graceful_timeout", s.graceful_timeout, 25.0)?,
            drain_delay: non_negative("drain_delay", s.drain_delay, 0.0)?,
            keepalive: non_negative("keepalive", s.keepalive, 100.0)?,
            policy,
            chdir: s.chdir.clone(),
            pythonpath: s
                .pythonpath
                .iter()
                .flat_map(|p| p.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            log_level,
            warnings,
            raw_env,
            resolved,
            hooks: merged.hooks.clone(),
            forwarded_allow_ips,
            reload: s.reload.unwrap_or(false),
            reload_extra_files: s
                .reload_extra_files
                .iter()
                .flatten()
                .map(PathBuf::from)
                .collect(),
            capture_output: s.capture_output.unwrap_or(false),
            preload: s.preload_app.unwrap_or(false),
            proc_name: s.proc_name.clone(),
            reuse_port: s.reuse_port.unwrap_or(false),
            defer_accept: s.defer_accept.unwrap_or(true),
            // As gunicorn: a setting decides; else SENDFILE (y, 1, yes, true = on); else on.
            sendfile: s.sendfile.unwrap_or_else(|| {
                env.var("SENDFILE").is_none_or(|v| {
                    ["y", "1", "yes", "true"].contains(&v.to_ascii_lowercase().as_str())
                })
            }),
            proxy_protocol,
            threads: match s.threads.unwrap_or(1) {
                0 => {
                    return Err(ConfigError::new(
                        "threads",
                        0,
                        origin("threads"),
                        "expected a positive integer",
                    ))
                }
                n => n,
            },
            header_timeout: non_negative("header_timeout", s.header_timeout, 30.0)?,
            body_timeout: non_negative("body_timeout", s.body_timeout, 30.0)?,
            limit_request_body: s.limit_request_body.unwrap_or(100 * 1024 * 1024),
            permit_obsolete_folding: s.permit_obsolete_folding.unwrap_or(false),
            body_buffer_size: usize::try_from(s.body_buffer_size.unwrap_or(1024 * 1024))
                .unwrap_or(usize::MAX),
            access_log: s.accesslog.clone().filter(|a| !a.is_empty()),
            access_log_format: s.access_log_format.clone(),
            error_log: s.errorlog.clone().filter(|e| !e.is_empty() && e != "-"),
            statsd,
            worker_connections: usize::try_from(s.worker_connections.unwrap_or(1000))
                .unwrap_or(usize::MAX)
                .max(1),
            // gunicorn's clamping, so limits carried over from its configs mean the same.
            limit_request_line: match s.limit_request_line.unwrap_or(4094) {
                0 => 8190,
                n => n.min(8190) as usize,
            },
            limit_request_fields: match s.limit_request_fields.unwrap_or(100) {
                0 => 32768,
                n => n.min(32768) as usize,
            },
            limit_request_field_size: match s.limit_request_field_size.unwrap_or(8190) {
                0 => 8190,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
        })
    }
}

/// `statsd_host` (empty: off), with the prefix and tags checked: they are sent as
/// given inside every line, so nothing that would break a line gets through.
fn statsd_settings(
    s: &Settings,
    origin: &dyn Fn(&str) -> Source,
) -> Result<Option<ferricorn_log::statsd::Settings>, ConfigError> {
    use ferricorn_log::statsd;
    let Some(host) = s.statsd_host.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let target = statsd::Target::parse(host)
        .map_err(|e| ConfigError::new("statsd_host", host, origin("statsd_host"), e))?;
    let text = |key: &str, value: &Option<String>, forbidden: &[char]| {
        let value = value.clone().unwrap_or_default();
        statsd::check_text(&value, forbidden)
            .map(|()| value.clone())
            .map_err(|e| ConfigError::new(key, &value, origin(key), e))
    };
    Ok(Some(statsd::Settings {
        target,
        prefix: text("statsd_prefix", &s.statsd_prefix, &[':', '|'])?,
        tags: text("dogstatsd_tags", &s.dogstatsd_tags, &['|'])?,
    }))
}

/// `--metrics-bind`: a TCP `HOST:PORT` (`[V6]:PORT`, `:PORT`), port required
/// (gunicorn's bare `HOST` means port 8000, the app's own).
fn metrics_bind(text: &str, source: Source) -> Result<Bind, ConfigError> {
    let refuse = |why: &str| ConfigError::new("metrics_bind", text, source.clone(), why);
    let tcp = text.strip_prefix("tcp://").unwrap_or(text);
    let has_port = match tcp.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => tcp.contains(':'),
    };
    match Bind::parse(text, source.clone()) {
        Ok(bind @ Bind::Tcp { .. }) if has_port => Ok(bind),
        Ok(Bind::Tcp { .. }) => Err(refuse(
            "expected HOST:PORT, e.g. 127.0.0.1:9100 (the port is required)",
        )),
        Ok(_) => Err(refuse("expected a TCP HOST:PORT, e.g. 127.0.0.1:9100")),
        Err(e) => Err(refuse(&e.reason)),
    }
}

/// `(setting, value, source)` for every setting: what the sources gave, or the
/// default (PORT and WEB_CONCURRENCY count as defaults, as in gunicorn).
fn resolved_table(merged: &load::Merged, env: &dyn Env) -> Vec<(String, String, Source)> {
    let given = figment::value::Value::serialize(&merged.settings)
        .ok()
        .and_then(|v| v.into_dict())
        .unwrap_or_default();
    NAMES
        .iter()
        .map(|name| {
            if let Some(v) = given.get(*name) {
                return (name.to_string(), value_text(v), merged.origin(name));
            }
            let (value, source) = match *name {
                "bind" => match env.var("PORT") {
                    Some(p) => (format!("[\"0.0.0.0:{p}\"]"), Source::Env("PORT".into())),
                    None => ("[\"127.0.0.1:8000\"]".into(), Source::Default),
                },
                "workers" => match env.var("WEB_CONCURRENCY") {
                    Some(w) => (w, Source::Env("WEB_CONCURRENCY".into())),
                    None => ("1".into(), Source::Default),
                },
                other => (settings::default_text(other).to_string(), Source::Default),
            };
            (name.to_string(), value, source)
        })
        .collect()
}

fn value_text(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Array(_, items) => format!(
            "[{}]",
            items.iter().map(value_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            (None, None, None) => "?".into(),
        },
        Value::Bool(_, b) => b.to_string(),
        Value::Char(_, c) => c.to_string(),
        Value::Dict(_, d) => format!(
            "{{{}}}",
            d.iter()
                .map(|(k, v)| format!("{k} = {}", value_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Empty(_, _) => "none".into(),
    }
}

fn resolve_user(u: &str, origin: Source) -> Result<u32, ConfigError> {
    let err = |reason: String| ConfigError::new("user", u, origin.clone(), reason);
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(err("no such user".into())),
        Err(e) => Err(err(format!("cannot look it up: {e}"))),
    }
}

/// The primary group (`group`, else the user's own) and the supplementary groups
/// a worker running as `uid` takes. A uid with no passwd entry has no primary
/// group: without `--group` it is refused, rather than keep the master's (root's).
fn user_groups(
    uid: u32,
    group: Option<u32>,
    origin: Source,
) -> Result<(u32, Vec<u32>), ConfigError> {
    let err = |reason: String| ConfigError::new("user", uid.to_string(), origin.clone(), reason);
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .map_err(|e| err(format!("cannot look it up: {e}")))?;
    let Some(user) = user else {
        return match group {
            Some(gid) => Ok((gid, vec![gid])),
            None => Err(err(
                "no passwd entry, so no primary group to run workers with: give --group".into(),
            )),
        };
    };
    let gid = group.unwrap_or(user.gid.as_raw());
    let name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| err("the user name holds a NUL byte".into()))?;
    let groups = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .map_err(|e| err(format!("cannot read its groups: {e}")))?;
    Ok((gid, groups.into_iter().map(|g| g.as_raw()).collect()))
}

fn resolve_group(g: &str, origin: Source) -> Result<u32, ConfigError> {
    let err = |reason: String| ConfigError::new("group", g, origin.clone(), reason);
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(err("no such group".into())),
        Err(e) => Err(err(format!("cannot look it up: {e}"))),
    }
}

/// gunicorn reads the umask with `int(x, 0)` plus a leading-0 octal form.
fn parse_umask(v: &StrOrInt, origin: Source) -> Result<u32, ConfigError> {
    let err = || {
        ConfigError::new(
            "umask",
            v,
            origin.clone(),
            "expected a mask from 0 to 0o777, e.g. 0o027 or 027",
        )
    };
    if let StrOrInt::Int(i) = v {
        return u32::try_from(*i)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(err);
    }
    let s = v.to_string();
    let t = s.trim();
    let value = if let Some(oct) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(oct, 8)
    } else if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<u32>()
    };
    value.ok().filter(|v| *v <= 0o777).ok_or_else(err)
}

fn positive(setting: &str, value: &str, source: Source) -> Result<u32, ConfigError> {
    let err = |reason: &str| ConfigError::new(setting, value, source.clone(), reason);
    let n: u32 = value
        .trim()
        .parse()
        .map_err(|_| err("expected a positive integer"))?;
    if n == 0 {
        return Err(err(
            "expected a positive integer (a master with no workers serves nothing)",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferricorn_signals::Exit;

    struct Vars(Vec<(&'static str, String)>);
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn resolve(args: &[&str], env: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let mut argv = vec!["ferricorn"];
        argv.extend_from_slice(args);
        let vars = Vars(env.iter().map(|(k, v)| (*k, v.to_string())).collect());
        Config::resolve(Cli::try_parse_from(argv).expect("cli parses"), &vars)
    }

    fn toml_file(name: &str, text: &str) -> String {
        let dir =
            std::env::temp_dir().join(format!("ferricorn-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ferricorn.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn defaults() {
        let c = resolve(&["app:app"], &[]).unwrap();
        assert_eq!(
            c.binds,
            vec![Bind::Tcp {
                host: "127.0.0.1".into(),
                port: 8000
            }]
        );
        assert_eq!(c.workers, 1);
        assert_eq!(c.graceful_timeout, Duration::from_secs(25));
        assert_eq!(c.timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.keepalive, Duration::from_secs(100));
        assert_eq!(
            c.policy.exit_for(Signal::SIGTERM, false),
            Exit::Signal(Signal::SIGTERM)
        );
    }

    #[test]
    fn port_and_web_concurrency_as_gunicorn() {
        let c = resolve(&["app"], &[("PORT", "5000"), ("WEB_CONCURRENCY", "3")]).unwrap();
        assert_eq!(
            c.binds,
            vec![Bind::Tcp {
                host: "0.0.0.0".into(),
                port: 5000
            }]
        );
        assert_eq!(c.workers, 3);
        // Flags win over the environment.
        let c = resolve(
            &["-b", "[::1]:9", "-w", "2", "app"],
            &[("PORT", "5000"), ("WEB_CONCURRENCY", "3")],
        )
        .unwrap();
        assert_eq!(
            c.binds,
            vec![Bind::Tcp {
                host: "::1".into(),
                port: 9
            }]
        );
        assert_eq!(c.workers, 2);
    }

    #[test]
    fn precedence_file_then_env_then_cmd_args_then_flags() {
        let path = toml_file("precedence", "workers = 2\ntimeout = 7\nbacklog = 10\nmax_requests = 100\nbind = [\"127.0.0.1:9000\"]\n");
        let c = resolve(&["-c", &path, "app"], &[]).unwrap();
        assert_eq!(
            (c.workers, c.timeout, c.backlog, c.max_requests),
            (2, Some(Duration::from_secs(7)), 10, 100)
        );
        assert_eq!(
            c.binds,
            vec![Bind::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            }]
        );
        let c = resolve(
            &["-c", &path, "app"],
            &[("FERRICORN_WORKERS", "3"), ("FERRICORN_TIMEOUT", "8")],
        )
        .unwrap();
        assert_eq!((c.workers, c.timeout), (3, Some(Duration::from_secs(8))));
        let env = [
            ("FERRICORN_WORKERS", "3"),
            ("GUNICORN_CMD_ARGS", "--workers 4 --backlog 11"),
            ("FERRICORN_CMD_ARGS", "--backlog 12"),
        ];
        let c = resolve(&["-c", &path, "app"], &env).unwrap();
        assert_eq!((c.workers, c.backlog), (4, 12));
        let c = resolve(&["-c", &path, "-w", "5", "app"], &env).unwrap();
        assert_eq!(c.workers, 5);
        // PORT is a default: a file's bind wins over it, as in gunicorn.
        let c = resolve(&["-c", &path, "app"], &[("PORT", "5000")]).unwrap();
        assert_eq!(
            c.binds,
            vec![Bind::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            }]
        );
    }

    #[test]
    fn metrics_bind_from_each_source_and_refused_forms() {
        assert_eq!(resolve(&["app:app"], &[]).unwrap().metrics_bind, None);
        let tcp = |host: &str, port| {
            Some(Bind::Tcp {
                host: host.into(),
                port,
            })
        };
        let c = resolve(&["app:app", "--metrics-bind", "127.0.0.1:9100"], &[]).unwrap();
        assert_eq!(c.metrics_bind, tcp("127.0.0.1", 9100));
        let c = resolve(&["app:app"], &[("FERRICORN_METRICS_BIND", "[::1]:0")]).unwrap();
        assert_eq!(c.metrics_bind, tcp("::1", 0));
        let file = toml_file("metrics", "metrics_bind = \":9100\"\n");
        let c = resolve(&["-c", &file, "app:app"], &[]).unwrap();
        assert_eq!(c.metrics_bind, tcp("0.0.0.0", 9100));
        for (value, reason) in [
            ("localhost", "the port is required"),
            ("[::1]", "the port is required"),
            ("unix:/run/m.sock", "expected a TCP HOST:PORT"),
            ("fd://3", "expected a TCP HOST:PORT"),
            ("127.0.0.1:99999", "the port must be a number"),
            ("::1:9100", "brackets"),
        ] {
            let e = resolve(&["app:app", "--metrics-bind", value], &[]).unwrap_err();
            let line = e.to_string();
            assert!(
                line.starts_with(&format!(
                    "invalid value `{value}` for `metrics_bind` (from --metrics-bind): "
                )),
                "{line}"
            );
            assert!(line.contains(reason), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn on_signal_from_a_toml_table() {
        let path = toml_file("signals", "signal_preset = \"gunicorn\"\nterm_exit = \"signal\"\n\n[on_signal]\nHUP = \"graceful-stop:3\"\n");
        let c = resolve(&["-c", &path, "app"], &[]).unwrap();
        assert_eq!(
            c.policy.exit_for(Signal::SIGTERM, false),
            Exit::Signal(Signal::SIGTERM)
        );
        assert_eq!(c.policy.exit_for(Signal::SIGINT, false), Exit::Code(0));
        assert_eq!(c.policy.exit_for(Signal::SIGHUP, false), Exit::Code(3));
    }

    #[test]
    fn errors_name_setting_value_and_source() {
        let bad_file = toml_file("bad", "# settings\nworkers = 2\ntimeout = \"soon\"\n");
        let typo_file = toml_file("typo", "workers = 2\nwokers = 3\n");
        let broken_file = toml_file("broken", "workers = \n");
        type Case<'a> = (Vec<&'a str>, Vec<(&'static str, &'a str)>, String);
        let cases: Vec<Case> = vec![
            (vec!["app"], vec![("WEB_CONCURRENCY", "abc")], "invalid value `abc` for `workers` (from environment variable WEB_CONCURRENCY): expected a positive integer".into()),
            (vec!["-w", "0", "app"], vec![], "invalid value `0` for `workers` (from --workers)".into()),
            (vec!["app"], vec![("PORT", "")], "invalid value `` for `bind` (from environment variable PORT)".into()),
            (vec!["app"], vec![("PORT", "99999")], "invalid value `99999` for `bind` (from environment variable PORT)".into()),
            (vec!["-b", "fd://three", "app"], vec![], "invalid value `fd://three` for `bind` (from --bind): expected fd://N".into()),
            (vec!["--log-level", "loud", "app"], vec![], "invalid value `loud` for `loglevel` (from --log-level)".into()),
            (vec!["--term-exit", "300", "app"], vec![], "invalid value `300` for `term_exit` (from --term-exit): expected `signal` or an exit code".into()),
            (vec!["app"], vec![("FERRICORN_WORKERS", "many")], "invalid value `many` for `workers` (from environment variable FERRICORN_WORKERS)".into()),
            (vec!["app"], vec![("FERRICORN_TIMEOUT", "soon")], "invalid value `string \"soon\"` for `timeout` (from environment variable FERRICORN_TIMEOUT)".into()),
            (vec!["app"], vec![("GUNICORN_CMD_ARGS", "--wrokers 2")], "invalid value `--wrokers 2` for `GUNICORN_CMD_ARGS` (from environment variable GUNICORN_CMD_ARGS): unexpected argument '--wrokers'".into()),
            (vec!["-c", &bad_file, "app"], vec![], format!("invalid value `string \"soon\"` for `timeout` (from {bad_file}:3)")),
            (vec!["-c", &typo_file, "app"], vec![], format!("invalid value `wokers` for `wokers` (from {typo_file}:2): unknown setting")),
            (vec!["-c", &broken_file, "app"], vec![], format!("invalid value `{broken_file}` for `config` (from --config): not valid TOML")),
            (vec!["-c", "/nonexistent/ferricorn.toml", "app"], vec![], "invalid value `/nonexistent/ferricorn.toml` for `config` (from --config): No such file".into()),
            (vec!["-c", "/nonexistent/gunicorn.conf.py", "app"], vec![], "invalid value `/nonexistent/gunicorn.conf.py` for `config` (from --config): No such file".into()),
            (vec!["--on-signal", "KILL=ignore", "app"], vec![], "invalid value `KILL=ignore` for `on_signal` (from --on-signal)".into()),
            (vec!["--certfile", "/x.pem", "app"], vec![("FERRICORN_PROXY_PROTOCOL", "v1")], "invalid value `v1` for `proxy_protocol` (from environment variable FERRICORN_PROXY_PROTOCOL): not supported together with certfile yet".into()),
        ];
        for (args, env, want) in cases {
            let err = resolve(&args, &env).unwrap_err().to_string();
            assert!(
                err.starts_with(&want),
                "{args:?} {env:?}:\n got  {err:?}\n want {want:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn statsd_from_each_source() {
        use ferricorn_log::statsd::{Settings as Statsd, Target};
        assert!(resolve(&["app"], &[]).unwrap().statsd.is_none());
        let udp = |port| Target::Udp {
            host: "localhost".into(),
            port,
        };
        let file = toml_file(
            "statsd",
            "statsd_host = \"localhost:9125\"\nstatsd_prefix = \"web\"\ndogstatsd_tags = \"env:prod\"\n",
        );
        for (args, env, want) in [
            (
                vec![
                    "--statsd-host",
                    "localhost:1",
                    "--statsd-prefix",
                    "p",
                    "--dogstatsd-tags",
                    "a:b",
                    "app",
                ],
                vec![],
                Statsd {
                    target: udp(1),
                    prefix: "p".into(),
                    tags: "a:b".into(),
                },
            ),
            (
                vec!["app"],
                vec![
                    ("FERRICORN_STATSD_HOST", "unix:///run/statsd.sock"),
                    ("FERRICORN_STATSD_PREFIX", "x."),
                ],
                Statsd {
                    target: Target::Unix("/run/statsd.sock".into()),
                    prefix: "x.".into(),
                    tags: String::new(),
                },
            ),
            (
                vec!["-c", &file, "app"],
                vec![],
                Statsd {
                    target: udp(9125),
                    prefix: "web".into(),
                    tags: "env:prod".into(),
                },
            ),
            (
                vec!["-c", &file, "--statsd-host", "localhost", "app"],
                vec![],
                Statsd {
                    target: udp(8125),
                    prefix: "web".into(),
                    tags: "env:prod".into(),
                },
            ),
        ] {
            assert_eq!(
                resolve(&args, &env).unwrap().statsd,
                Some(want),
                "{args:?} {env:?}"
            );
        }
        // Empty is off (FERRICORN_STATSD_HOST= in a unit file).
        let c = resolve(&["app"], &[("FERRICORN_STATSD_HOST", "")]).unwrap();
        assert!(c.statsd.is_none());
        for (args, want) in [
            (vec!["--statsd-host", "host:port", "app"], "invalid value `host:port` for `statsd_host` (from --statsd-host): `port` is not a port number"),
            (vec!["--statsd-host", "h:1", "--statsd-prefix", "a|b", "app"], "invalid value `a|b` for `statsd_prefix` (from --statsd-prefix): '|' cannot be sent"),
            (vec!["--statsd-host", "h:1", "--dogstatsd-tags", "a\nb", "app"], "invalid value `a\nb` for `dogstatsd_tags` (from --dogstatsd-tags): '\\n' cannot be sent"),
        ] {
            let err = resolve(&args, &[]).unwrap_err().to_string();
            assert!(err.starts_with(want), "{args:?}:\n got  {err:?}\n want {want:?}");
        }
    }

    #[test]
    fn umask_forms() {
        for (s, want) in [
            ("0o027", 0o27),
            ("027", 0o27),
            ("0", 0),
            ("23", 23),
            ("0x1f", 0x1f),
        ] {
            assert_eq!(
                parse_umask(&StrOrInt::Str(s.into()), Source::Default).unwrap(),
                want,
                "{s}"
            );
        }
        assert_eq!(
            parse_umask(&StrOrInt::Int(0o27), Source::Default).unwrap(),
            0o27
        );
        for s in ["0o1000", "abc", "-1", "08"] {
            assert!(
                parse_umask(&StrOrInt::Str(s.into()), Source::Default).is_err(),
                "{s}"
            );
        }
    }

    #[test]
    fn users_and_groups_resolve_or_fail_before_binding() {
        assert_eq!(resolve_user("root", Source::Default).unwrap(), 0);
        // Without --group: the user's primary group, and its supplementary groups
        // with it (initgroups), never the master's.
        let (gid, groups) = user_groups(0, None, Source::Default).unwrap();
        assert_eq!(gid, 0);
        assert!(groups.contains(&0), "{groups:?}");
        let (gid, groups) = user_groups(0, Some(65534), Source::Default).unwrap();
        assert_eq!(gid, 65534);
        assert!(groups.contains(&65534), "{groups:?}");
        let e = user_groups(4_000_000, None, Source::Flag("--user".into())).unwrap_err();
        assert!(e.to_string().contains("give --group"), "{e}");
        assert_eq!(
            user_groups(4_000_000, Some(7), Source::Default).unwrap(),
            (7, vec![7])
        );
        assert_eq!(resolve_user("1234", Source::Default).unwrap(), 1234);
        let e = resolve_user("no-such-user-ferricorn", Source::Flag("--user".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value `no-such-user-ferricorn` for `user` (from --user): no such user"
        );
        assert!(resolve_group("no-such-group-ferricorn", Source::Default).is_err());
    }

    #[test]
    fn term_exit() {
        let c = resolve(
            &[
                "--term-exit",
                "0",
                "--int-exit",
                "signal",
                "--quit-exit",
                "7",
                "app",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.policy.exit_rule(Signal::SIGTERM), ExitRule::Code(0));
        assert_eq!(c.policy.exit_rule(Signal::SIGINT), ExitRule::Signal);
        assert_eq!(c.policy.exit_rule(Signal::SIGQUIT), ExitRule::Code(7));
    }
}
