//! The response sink of the app call running on this thread, for the legacy
//! `write()` callable: PEP 3333 wants what the app writes sent before `write()`
//! returns, and `write()` is called from inside the app, far from the sink. While
//! [`App::call`](crate::App::call) runs the app (or asks its iterable for the next
//! block), the sink is lent here; `write()` on the same thread borrows it.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::app::ResponseSink;

type Erased = NonNull<dyn ResponseSink + 'static>;

thread_local! {
    static CURRENT: Cell<Option<Erased>> = const { Cell::new(None) };
}

/// The sink is lent while this lives; dropping it takes the sink back.
pub struct Lent<'a> {
    previous: Option<Erased>,
    _sink: PhantomData<&'a mut dyn ResponseSink>,
}

/// Lend `sink` to `write()` calls on this thread until the guard drops. The guard
/// holds the exclusive borrow, so the caller cannot touch the sink meanwhile.
pub fn lend<'a>(sink: &'a mut (dyn ResponseSink + 'a)) -> Lent<'a> {
    let ptr: NonNull<dyn ResponseSink + 'a> = NonNull::from(sink);
    // SAFETY: only the lifetime is erased. The pointer is dereferenced only by
    // `with`, on this thread, while the cell holds it, and the cell holds it only
    // while the returned guard (which keeps the `'a` borrow) is alive: `Drop`
    // puts the previous value back.
    let erased: Erased = unsafe { std::mem::transmute(ptr) };
    let previous = CURRENT.with(|c| c.replace(Some(erased)));
    Lent {
        previous,
        _sink: PhantomData,
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Run `f` with the lent sink, if one is lent on this thread (`None` otherwise:
/// a `write()` from another thread, or after the call). The sink is taken out of
/// the cell while `f` runs, so a nested call cannot alias it.
pub fn with<R>(f: impl FnOnce(&mut dyn ResponseSink) -> R) -> Option<R> {
    let mut ptr = CURRENT.with(|c| c.take())?;
    // SAFETY: the pointer came from a `&mut` that a live `Lent` guard holds (see
    // `lend`), on this thread; it was taken out of the cell, so no other `with`
    // can reach it until it is put back below.
    let result = f(unsafe { ptr.as_mut() });
    CURRENT.with(|c| c.set(Some(ptr)));
    Some(result)
}
