//! ferricorn's settings: parsed from the command line (gunicorn's flag names) and
//! the environment gunicorn honours (`PORT`, `WEB_CONCURRENCY`), validated into one
//! [`Config`] before anything binds.
//!
//! Every error names the setting, the value, where the value came from and why it
//! is refused, on one line.

mod bind;
mod cli;
mod error;

use std::path::PathBuf;
use std::time::Duration;

pub use bind::Bind;
pub use cli::Cli;
pub use error::{ConfigError, Source};
use ferricorn_signals::{Policy, Signal};
use log::LevelFilter;

/// Validated settings; everything downstream reads only this.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODULE:CALLABLE`, `MODULE:factory(args)` or `MODULE`, as given.
    pub app: String,
    pub binds: Vec<Bind>,
    pub backlog: i32,
    pub workers: u32,
    pub graceful_timeout: Duration,
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
    /// Workers switch to these ids after fork.
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub umask: Option<u32>,
    pub log_level: LevelFilter,
}

/// Where environment variables come from (the process environment in production,
/// a fixed list in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

impl Config {
    /// Merge the parsed command line with the environment: a flag wins over the
    /// environment, which wins over the default, as in gunicorn.
    pub fn resolve(cli: Cli, env: &dyn Env) -> Result<Config, ConfigError> {
        let binds = if !cli.bind.is_empty() {
            cli.bind
                .iter()
                .map(|b| Bind::parse(b, Source::Flag("--bind")))
                .collect::<Result<_, _>>()?
        } else if let Some(port) = env.var("PORT") {
            // As gunicorn: PORT (even empty) means 0.0.0.0:$PORT, validated here.
            vec![Bind::parse(&format!("0.0.0.0:{port}"), Source::Env("PORT"))
                .map_err(|e| e.with_value(&port).with_setting("bind"))?]
        } else {
            vec![Bind::parse("127.0.0.1:8000", Source::Default)?]
        };

        let workers = match (cli.workers, env.var("WEB_CONCURRENCY")) {
            (Some(w), _) => positive("workers", &w, Source::Flag("--workers"))?,
            (None, Some(w)) => positive("workers", &w, Source::Env("WEB_CONCURRENCY"))?,
            (None, None) => 1,
        };

        let mut policy = cli.signal_preset.map(Policy::preset).unwrap_or_default();
        for o in &cli.on_signal {
            policy.apply(*o);
        }
        for (sig, rule) in [
            (Signal::SIGTERM, cli.term_exit),
            (Signal::SIGINT, cli.int_exit),
            (Signal::SIGQUIT, cli.quit_exit),
        ] {
            if let Some(rule) = rule {
                policy.set_exit(sig, rule);
            }
        }

        let log_level = ferricorn_log::parse_level(&cli.log_level).ok_or_else(|| ConfigError {
            setting: "loglevel",
            value: cli.log_level.clone(),
            origin: Source::Flag("--log-level"),
            reason: "expected one of debug, info, warning, error, critical".into(),
        })?;

        let app = cli.app.clone().unwrap_or_default();
        if cli.app.is_some() && app.trim().is_empty() {
            return Err(ConfigError {
                setting: "wsgi_app",
                value: app,
                origin: Source::Flag("APP_MODULE"),
                reason: "expected MODULE:CALLABLE".into(),
            });
        }

        let user = cli.user.as_deref().map(resolve_user).transpose()?;
        let group = cli.group.as_deref().map(resolve_group).transpose()?;
        let umask = cli.umask.as_deref().map(parse_umask).transpose()?;

        Ok(Config {
            app,
            pidfile: cli.pid.clone(),
            user,
            group,
            umask,
            timeout: (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout)),
            max_requests: cli.max_requests,
            max_requests_jitter: cli.max_requests_jitter,
            boot_deadline: Duration::from_secs(cli.boot_deadline.max(1)),
            binds,
            backlog: cli.backlog,
            workers,
            graceful_timeout: Duration::from_secs_f64(cli.graceful_timeout),
            keepalive: Duration::from_secs_f64(cli.keep_alive),
            policy,
            chdir: cli.chdir,
            pythonpath: cli
                .pythonpath
                .iter()
                .flat_map(|p| p.split(','))
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            log_level,
        })
    }
}

fn resolve_user(u: &str) -> Result<u32, ConfigError> {
    let err = |reason: String| ConfigError {
        setting: "user",
        value: u.to_string(),
        origin: Source::Flag("--user"),
        reason,
    };
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(err("no such user".into())),
        Err(e) => Err(err(format!("cannot look it up: {e}"))),
    }
}

fn resolve_group(g: &str) -> Result<u32, ConfigError> {
    let err = |reason: String| ConfigError {
        setting: "group",
        value: g.to_string(),
        origin: Source::Flag("--group"),
        reason,
    };
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
fn parse_umask(s: &str) -> Result<u32, ConfigError> {
    let err = || ConfigError {
        setting: "umask",
        value: s.to_string(),
        origin: Source::Flag("--umask"),
        reason: "expected a mask from 0 to 0o777, e.g. 0o027 or 027".into(),
    };
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

fn positive(setting: &'static str, value: &str, source: Source) -> Result<u32, ConfigError> {
    let err = |reason: &str| ConfigError {
        setting,
        value: value.to_string(),
        origin: source.clone(),
        reason: reason.into(),
    };
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
    use ferricorn_signals::{Exit, ExitRule};

    struct Vars(&'static [(&'static str, &'static str)]);
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn resolve(
        args: &[&str],
        env: &'static [(&'static str, &'static str)],
    ) -> Result<Config, ConfigError> {
        let mut argv = vec!["ferricorn"];
        argv.extend_from_slice(args);
        Config::resolve(Cli::try_parse_from(argv).expect("cli parses"), &Vars(env))
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
    fn errors_name_setting_value_and_source() {
        type Case<'a> = (
            &'a [&'a str],
            &'static [(&'static str, &'static str)],
            &'a str,
        );
        let cases: &[Case] = &[
            (&["app"], &[("WEB_CONCURRENCY", "abc")], "invalid value `abc` for `workers` (from environment variable WEB_CONCURRENCY): expected a positive integer"),
            (&["-w", "0", "app"], &[], "invalid value `0` for `workers` (from --workers)"),
            (&["app"], &[("PORT", "")], "invalid value `` for `bind` (from environment variable PORT)"),
            (&["app"], &[("PORT", "99999")], "invalid value `99999` for `bind` (from environment variable PORT)"),
            (&["-b", "unix:/tmp/x", "app"], &[], "invalid value `unix:/tmp/x` for `bind` (from --bind): unix sockets are not supported yet"),
            (&["--log-level", "loud", "app"], &[], "invalid value `loud` for `loglevel`"),
        ];
        for (args, env, want) in cases {
            let err = resolve(args, env).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{args:?}: got {err:?}, want prefix {want:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
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
            assert_eq!(parse_umask(s).unwrap(), want, "{s}");
        }
        for s in ["0o1000", "abc", "-1", "08"] {
            assert!(parse_umask(s).is_err(), "{s}");
        }
    }

    #[test]
    fn users_and_groups_resolve_or_fail_before_binding() {
        assert_eq!(resolve_user("root").unwrap(), 0);
        assert_eq!(resolve_user("1234").unwrap(), 1234);
        let e = resolve_user("no-such-user-ferricorn")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value `no-such-user-ferricorn` for `user` (from --user): no such user"
        );
        assert!(resolve_group("no-such-group-ferricorn").is_err());
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
        assert!(Cli::try_parse_from(["ferricorn", "--term-exit", "256", "app"]).is_err());
    }
}
