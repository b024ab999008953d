//! Measures the largest single allocation a piece of code makes, so that tests can check that
//! no decoder allocates from a length its input declares.
//!
//! The lib's test binary allocates through [`Probe`]: the system allocator, plus a note of the
//! largest size asked for on the current thread. A per-thread note keeps the tests that run in
//! parallel apart; it is a `const` thread-local of a `Cell`, which never allocates itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Bytes any decoder may allocate at once whatever its input: serde preallocates at most 1 MiB
/// for a container whose declared size it cannot trust, and the rest is room for the
/// decoders' own small buffers.
const SLACK: usize = 2 << 20;
/// Bytes a decoder may allocate at once per byte of input: a value can be larger in memory
/// than encoded (an empty string is 1 byte in a record, 24 in memory), and vectors double as
/// they grow.
const FACTOR: usize = 64;

struct Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| {
        if size > largest.get() {
            largest.set(size);
        }
    });
}

// SAFETY: every call goes to the system allocator unchanged; `note` only touches a
// thread-local cell.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// The result of `f` and the largest single allocation it made on this thread.
pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let outer = LARGEST.with(|l| l.replace(0));
    let result = f();
    let largest = LARGEST.with(|l| l.get());
    LARGEST.with(|l| l.set(outer.max(largest)));
    (result, largest)
}

/// Runs `f`, which decodes `input`, and checks that it allocated no more at once than that
/// input can justify.
pub fn bounded<R>(what: &str, input: &[u8], f: impl FnOnce() -> R) -> R {
    let (result, largest) = largest_during(f);
    let bound = SLACK + FACTOR * input.len();
    assert!(
        largest <= bound,
        "{what}: one allocation of {largest} bytes while decoding {} bytes (at most {bound} \
         allowed): {:02x?}",
        input.len(),
        &input[..input.len().min(256)]
    );
    result
}

#[test]
fn the_probe_sees_a_large_allocation() {
    let (v, largest) = largest_during(|| Vec::<u8>::with_capacity(10 << 20));
    assert!(largest >= 10 << 20, "{largest}");
    drop(v);
    let (_, small) = largest_during(|| vec![0u8; 10]);
    assert!(small < 1024, "{small}");
}
