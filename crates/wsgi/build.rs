//! Record which interpreter this crate is built against, so the embedded CPython
//! starts with that interpreter's prefix and stdlib whatever PATH says at run time;
//! and link that interpreter's libpython into the binary when it ships a static one.
//!
//! Why static: a shared libpython built without `-fno-semantic-interposition`
//! (pyenv's, python.org's default) calls its own exported functions through the
//! PLT and reads its own globals through the GOT. Linked into the executable, those
//! become direct calls and loads: a Flask request costs 7–9 % less CPU (docs/design.md).
//! `FERRICORN_LIBPYTHON=shared` keeps the shared library; `static` insists.
use std::path::Path;
use std::process::Command;

fn main() {
    let config = pyo3_build_config::get();
    let version = format!("{}.{}", config.version().major, config.version().minor);
    // For this crate, and (as DEP_FERRICORN_PYTHON_*) for the binary's build script.
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=FERRICORN_BUILD_PYTHON={exe}");
        println!("cargo:build_python={exe}");
    }
    println!("cargo:rustc-env=FERRICORN_PYTHON_VERSION={version}");
    println!("cargo:python_version={version}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=FERRICORN_LIBPYTHON");
    println!("cargo:rerun-if-env-changed=CC");

    let wanted = std::env::var("FERRICORN_LIBPYTHON").unwrap_or_default();
    let static_lib = match wanted.as_str() {
        "shared" => Err(Unusable::NotWanted),
        "" | "static" => match config.executable() {
            Some(exe) => static_libpython(Path::new(exe)),
            None => Err(Unusable::NoArchive),
        },
        other => panic!("FERRICORN_LIBPYTHON must be `static` or `shared`, not `{other}`"),
    };
    match static_lib {
        Ok(lib) => {
            println!("cargo:rerun-if-changed={}", lib.archive());
            println!("cargo:rustc-link-search=native={}", lib.dir);
            // Every object, not only those ferricorn calls: extension modules
            // (lib-dynload, site-packages) link against the whole C API.
            println!(
                "cargo:rustc-link-lib=static:+whole-archive,-bundle={}",
                lib.name
            );
            for dep in &lib.deps {
                println!("cargo:rustc-link-lib={dep}");
            }
            println!("cargo:link=static");
            println!("cargo:rustc-link-arg={EXPORT_C_API}");
            println!("cargo:bin_link_arg={EXPORT_C_API}");
        }
        Err(why) if wanted == "static" => panic!("FERRICORN_LIBPYTHON=static, but {why}"),
        Err(why) => {
            if let Unusable::MissingLib(..) = why {
                // There is an archive, so linking it was expected: say why not.
                println!("cargo:warning=linking the shared libpython: {why}");
            }
            println!("cargo:link=shared");
            // A RUNPATH to the build interpreter's libpython, for this crate's unit
            // tests (they run Python too) and for the binary: without it the loader
            // may pick another libpython of the same soname (Debian's /usr/lib one),
            // with another stdlib, and nothing warns.
            if let Some(dir) = config.lib_dir() {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
                println!("cargo:bin_link_arg=-Wl,-rpath,{dir}");
            }
        }
    }
}

/// Extension modules find the C API in the executable: every symbol of
/// libpython's API starts with `Py` or `_Py`.
const EXPORT_C_API: &str = "-Wl,--export-dynamic-symbol=Py*,--export-dynamic-symbol=_Py*";

struct StaticLib {
    dir: String,
    /// As `-l` takes it: `python3.11` for libpython3.11.a.
    name: String,
    /// The libraries the archive needs, as the interpreter's own link used them.
    deps: Vec<String>,
}

impl StaticLib {
    fn archive(&self) -> String {
        format!("{}/lib{}.a", self.dir, self.name)
    }
}

/// Why the static libpython is not linked.
enum Unusable {
    NotWanted,
    NoArchive,
    /// The archive needs a library the linker cannot find (e.g. Debian's needs
    /// libexpat and zlib, whose `-dev` packages may be missing).
    MissingLib(String, String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::NotWanted => write!(f, "FERRICORN_LIBPYTHON=shared"),
            Unusable::NoArchive => write!(
                f,
                "the build interpreter has no PIC static libpython (libpythonX.Y-pic.a, \
                 or libpythonX.Y.a of a --enable-shared build) in its LIBPL"
            ),
            Unusable::MissingLib(archive, lib) => write!(
                f,
                "{archive} needs -l{lib}, which the C compiler cannot find (install its -dev package)"
            ),
        }
    }
}

/// The build interpreter's static libpython, if it has one that can go into a
/// position-independent executable: Debian's `-pic.a`, or the `.a` of a
/// `--enable-shared` build (whose objects are all compiled with -fPIC).
fn static_libpython(python: &Path) -> Result<StaticLib, Unusable> {
    const VARS: [&str; 6] = [
        "LIBPL",
        "LDVERSION",
        "Py_ENABLE_SHARED",
        "LIBS",
        "SYSLIBS",
        "MODLIBS",
    ];
    let script =
        format!("import sysconfig\nfor v in {VARS:?}: print(sysconfig.get_config_var(v) or '')");
    let out = match Command::new(python).arg("-c").arg(script).output() {
        Ok(out) if out.status.success() => out.stdout,
        _ => return Err(Unusable::NoArchive),
    };
    let text = String::from_utf8_lossy(&out);
    let vars: Vec<&str> = text.lines().collect();
    let [libpl, ldversion, enable_shared, libs, syslibs, modlibs] = vars[..] else {
        return Err(Unusable::NoArchive);
    };
    let pic = format!("python{ldversion}-pic");
    let plain = format!("python{ldversion}");
    let name = if Path::new(&format!("{libpl}/lib{pic}.a")).exists() {
        pic
    } else if enable_shared == "1" && Path::new(&format!("{libpl}/lib{plain}.a")).exists() {
        plain
    } else {
        return Err(Unusable::NoArchive);
    };
    let mut deps: Vec<String> = Vec::new();
    for lib in [modlibs, libs, syslibs]
        .iter()
        .flat_map(|v| v.split_whitespace())
        .filter_map(|t| t.strip_prefix("-l"))
    {
        if !deps.iter().any(|d| d == lib) {
            deps.push(lib.to_string());
        }
    }
    let lib = StaticLib {
        dir: libpl.to_string(),
        name,
        deps,
    };
    match lib.deps.iter().find(|d| !linker_finds(d)) {
        Some(missing) => Err(Unusable::MissingLib(lib.archive(), missing.clone())),
        None => Ok(lib),
    }
}

/// Whether the C compiler (the linker driver) finds `lib{name}.so` or `.a` on its
/// search path: `-print-file-name` echoes the bare name back when it does not.
fn linker_finds(name: &str) -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    ["so", "a"].iter().any(|ext| {
        let file = format!("lib{name}.{ext}");
        Command::new(&cc)
            .arg(format!("-print-file-name={file}"))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() != file)
    })
}
