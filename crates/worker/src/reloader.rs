//! `--reload` (development): notice that a source file changed, so the worker can
//! stop and the master start a fresh one that imports the new code.
//!
//! Polling modification times every half second is enough for a developer saving a
//! file, needs no inotify dependency, and sees files on network mounts too.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pyo3::prelude::*;

/// Files to watch at most (a huge tree would make every check slow).
const MAX_FILES: usize = 20_000;
/// Directories under the app directory that are never the app's own code.
const SKIP_DIRS: &[&str] = &[
    "__pycache__",
    "node_modules",
    "venv",
    ".venv",
    "env",
    "site-packages",
    "target",
];

pub struct Reloader {
    files: Vec<(PathBuf, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// Watch every file Python has imported, every `.py` under `app_dir` (so a
    /// module that failed to import is watched too), and `extra`.
    pub fn new(py: Python<'_>, app_dir: &Path, extra: &[PathBuf]) -> Reloader {
        let mut paths: Vec<PathBuf> = Vec::new();
        let loaded = py
            .run(c"import sys\n_ferricorn_files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]", None, None)
            .and_then(|_| py.eval(c"_ferricorn_files", None, None))
            .and_then(|v| v.extract::<Vec<Option<String>>>());
        if let Ok(files) = loaded {
            paths.extend(files.into_iter().flatten().map(PathBuf::from));
        }
        walk(app_dir, 0, &mut paths);
        paths.extend(extra.iter().cloned());
        paths.sort();
        paths.dedup();
        paths.truncate(MAX_FILES);
        let files = paths.into_iter().filter(|p| p.is_file()).map(|p| {
            let t = mtime(&p);
            (p, t)
        });
        Reloader {
            files: files.collect(),
        }
    }

    /// The first watched file whose modification time changed (or that vanished).
    pub fn changed(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|(p, t)| mtime(p) != *t)
            .map(|(p, _)| p.as_path())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 8 || out.len() >= MAX_FILES {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() && !SKIP_DIRS.contains(&name.as_str()) => {
                walk(&path, depth + 1, out)
            }
            Ok(t) if t.is_file() && name.ends_with(".py") => out.push(path),
            _ => {}
        }
    }
}
