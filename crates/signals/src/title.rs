//! `--name`: how ferricorn's processes show in `ps` and `top`, as gunicorn's
//! setproctitle does (`ferricorn: master [NAME]`, `ferricorn: worker [NAME]`).
//!
//! Linux shows a process's command line from the memory its `argv` strings were
//! placed in, so the title is written over that area (its bounds come from
//! `/proc/self/stat`); the short `comm` name (`top`, `ps -o comm`) is set with
//! `PR_SET_NAME`. Call it only after everything that reads the process's own
//! arguments (std's `args()`, Python's `sys.argv`) has read them.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;

/// The `[arg_start, arg_end)` addresses of this process's argv strings.
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may itself contain spaces: "pid (comm) state ...".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    // arg_start and arg_end are fields 48 and 49 of the whole line; `rest` starts at field 3.
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}

/// Set the title `ps` shows for this process.
pub fn set_title(title: &str) {
    if let Ok(name) = CString::new(
        title
            .chars()
            .filter(|c| *c != '\0')
            .take(15)
            .collect::<String>(),
    ) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let Some((start, end)) = argv_area() else {
        return;
    };
    let room = end - start;
    let bytes = title.as_bytes();
    let n = bytes.len().min(room.saturating_sub(1));
    // SAFETY: the kernel reports [start, end) as this process's own argv strings,
    // which live in writable memory for the life of the process. We write within
    // those bounds only, NUL-terminate, and clear the rest; nothing in this process
    // holds a Rust reference into them (std keeps raw pointers that the docs above
    // say are read before this runs).
    unsafe {
        let base = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base, n);
        std::ptr::write_bytes(base.add(n), 0, room - n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_area_is_found() {
        let (start, end) = argv_area().expect("this process has argv");
        assert!(end > start);
    }
}
