//! bench/bench.py still runs and produces numbers (a 1 s run of hello world on
//! ferricorn, on this build again as `ferricorn-b` (FERRICORN_B, for comparing two
//! builds) and on gunicorn, with the test venv). No timing is asserted: the
//! benchmark measures, the tests check it can.

use std::process::Command;

use crate::util::{repo_dir, scratch, test_venv};

#[test]
fn a_one_second_bench_run_produces_a_table_with_numbers() {
    let _exclusive = crate::util::exclusive();
    let venv = test_venv();
    let out = scratch("bench").join("latest.md");
    let run = Command::new(venv.join("bin").join("python"))
        .arg(repo_dir().join("bench").join("bench.py"))
        .args(["--duration", "1", "--rounds", "1"])
        .args(["--workloads", "hello"])
        .args(["--servers", "ferricorn,ferricorn-b,gunicorn"])
        .arg("--out")
        .arg(&out)
        .env("BENCH_VENV", &venv)
        .env("FERRICORN_BIN", crate::util::bin())
        .env("FERRICORN_B", crate::util::bin())
        .output()
        .expect("bench.py runs");
    assert!(
        run.status.success(),
        "bench.py exited with {}:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let table = std::fs::read_to_string(&out).unwrap();
    for server in ["ferricorn", "ferricorn-b", "gunicorn"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {server} |")))
            .unwrap_or_else(|| panic!("no {server} row in:\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let rps: f64 = cells[2].replace(',', "").parse().unwrap_or(0.0);
        let cpu: f64 = cells[4].parse().unwrap_or(0.0);
        let pss: f64 = cells[7].parse().unwrap_or(0.0);
        assert!(rps > 0.0 && cpu > 0.0 && pss > 0.0, "{row}");
        assert!(row.ends_with("| 0 | 0 |"), "errors in a 1 s run: {row}");
    }
}
