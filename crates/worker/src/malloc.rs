//! glibc malloc settings for a worker.
//!
//! By default glibc gives memory at the top of the heap back to the kernel once
//! 128 KiB of it is free. A worker that allocates and frees a body of that order
//! per request (a 64 KiB upload read into a bytes object, its echo) then has the
//! kernel unmap and zero-fill the same pages on every request: measured on the
//! 64 KiB POST echo benchmark, 97 µs of CPU per request with the default and 42 µs
//! with these settings.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// Free memory kept at the top of the heap before it is returned to the kernel.
const TRIM_THRESHOLD: i32 = 4 << 20;
/// Allocations at least this large get their own mapping (returned when freed).
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Keep a few MiB of freed heap for reuse, unless the user tuned malloc through
/// the environment (GLIBC_TUNABLES, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_):
/// theirs wins.
pub fn keep_freed_heap() {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc."))
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
    if tuned {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; the worker calls it once,
    // single-threaded, before the app is imported or called.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
