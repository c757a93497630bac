//! The wheel scripts/test built (dist/), as published: portable across Linux
//! distributions (a manylinux policy, no library outside it, nothing of this
//! machine's paths), and what it installs needs no libpython of its own.

use std::path::PathBuf;
use std::process::Command;

use crate::deploy_docs::built_wheel;
use crate::util::{bin, test_venv};

/// The installed extension module (the same bytes as the wheel's).
fn extension_module() -> PathBuf {
    let out = Command::new(test_venv().join("bin/python"))
        .args(["-c", "import ferricorn._native as n; print(n.__file__)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn auditwheel_names_a_manylinux_policy_and_no_outside_library() {
    let auditwheel = test_venv().join("bin/auditwheel");
    assert!(
        auditwheel.exists(),
        "run ./scripts/test (it installs auditwheel)"
    );
    let out = Command::new(&auditwheel)
        .arg("show")
        .arg(built_wheel())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("is consistent with the following platform tag: \"manylinux_2_17_x86_64\""),
        "{text}"
    );
    assert!(!text.contains("external shared libraries"), "{text}");
    let name = built_wheel()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.contains("manylinux_2_17_x86_64"), "{name}");
}

#[test]
fn the_extension_links_no_libpython_and_carries_no_path_of_this_machine() {
    let module = extension_module();
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&module)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    for lib in &needed {
        assert!(
            [
                "libc.so.6",
                "libgcc_s.so.1",
                "ld-linux-x86-64.so.2",
                "libm.so.6",
                "libpthread.so.0",
                "libdl.so.2"
            ]
            .contains(lib),
            "{lib} needed: {dynamic}"
        );
    }
    assert!(
        !dynamic.contains("RPATH") && !dynamic.contains("RUNPATH"),
        "{dynamic}"
    );
    let bytes = std::fs::read(&module).unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let repo = crate::util::repo_dir().display().to_string();
    for path in [format!("{home}/"), format!("{repo}/"), "pyenv".to_string()] {
        assert!(
            !bytes.windows(path.len()).any(|w| w == path.as_bytes()),
            "{} holds `{path}`",
            module.display()
        );
    }
}

#[test]
fn the_installed_command_is_a_script_of_the_venvs_python() {
    let script = std::fs::read_to_string(bin()).unwrap();
    let first = script.lines().next().unwrap();
    assert!(
        first.starts_with("#!")
            && first.contains(&test_venv().join("bin/python").display().to_string()),
        "{first}"
    );
}
