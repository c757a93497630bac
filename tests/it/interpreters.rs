//! The same wheel on every interpreter scripts/test installed it for
//! (`FERRICORN_TEST_INTERPRETERS`: pyenv's CPython, a shared libpython, and
//! Debian's /usr/bin/python3, a static executable with another stdlib build): a
//! Flask and a Django app whose code imports C extensions serve from a bare
//! environment, and a TERM drains and reads 143.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::{apps_dir, http, ServerBuilder};

fn venvs() -> Vec<PathBuf> {
    let list = std::env::var("FERRICORN_TEST_INTERPRETERS")
        .unwrap_or_else(|_| crate::util::test_venv().display().to_string());
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

fn serves_and_stops_with_143(app: &str) {
    for venv in venvs() {
        let ferricorn = venv.join("bin/ferricorn");
        assert!(
            ferricorn.exists(),
            "run ./scripts/test: no {}",
            ferricorn.display()
        );
        let mut server = ServerBuilder::new(app)
            .program(&ferricorn)
            .chdir(&apps_dir())
            .workers(2)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .start();
        let response = http::get(server.addr(), "/").unwrap();
        let text = response.text();
        assert_eq!(
            response.status,
            200,
            "{}: {text}\n{}",
            venv.display(),
            server.log()
        );
        assert_eq!(
            text,
            "math=4.0\nsqlite3=42\nzlib=ferricorn\nssl=OpenSSL\nctypes=4\npyexpat=expat\nsocket=True\njson=[1]\n",
            "{}",
            venv.display()
        );
        server.signal(nix::sys::signal::Signal::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(30));
        assert_eq!(
            status.signal(),
            Some(libc::SIGTERM),
            "{}: the master dies by SIGTERM (a shell reads 143): {status:?}\n{}",
            venv.display(),
            server.log()
        );
    }
}

#[test]
fn flask_with_c_extensions_serves_on_every_interpreter() {
    serves_and_stops_with_143("native_imports:create_flask()");
}

#[test]
fn django_with_c_extensions_serves_on_every_interpreter() {
    serves_and_stops_with_143("native_imports:create_django()");
}
