//! What every fuzz binary installs (not the regression replay of `cargo test`).
//!
//! - A global allocator that fails any single allocation over the target's limit as a full
//!   machine would (null: `try_reserve` gets an error, anything else aborts), and says so on
//!   stderr. An input of at most 1 MiB that makes the node ask for more has found a memory
//!   exhaustion. Without a sanitizer libFuzzer's `-malloc_limit_mb` is not enforced, and
//!   `-rss_limit_mb` sees only the pages touched; a low limit also keeps the fuzzer fast, as
//!   zeroing a declared length of hundreds of MiB costs more than the parse.
//! - A panic hook that prints each new panic location once and does not abort: the node
//!   catches panics inside decoders (`imaging::guard`), so the fuzz binary does
//!   too; a panic that nothing catches still ends in libfuzzer-sys's `catch_unwind` and is a
//!   crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

#[allow(dead_code)] // each binary uses one of the two limits
/// A parser's limit: no single allocation of a parser fed at most 1 MiB needs 16 MiB.
pub const PARSER_LIMIT: usize = 16 << 20;
#[allow(dead_code)]
/// A decoder's limit: 256 MiB, a 1 MiB codestream decoded to 128 M 16-bit samples.
pub const DECODER_LIMIT: usize = 256 << 20;

/// Largest single allocation allowed; set by [`init`].
static MAX_ALLOCATION: AtomicUsize = AtomicUsize::new(usize::MAX);

pub struct Limited;

// SAFETY: every call is forwarded unchanged to the system allocator, or fails (null), which
// the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if over(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if over(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if over(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Whether `size` is over the limit; says so on stderr (without allocating).
fn over(size: usize) -> bool {
    if size > MAX_ALLOCATION.load(Ordering::Relaxed) {
        // No allocation here: write the message with a fixed buffer.
        let mut msg = *b"==fuzz== allocation over the limit: 0x0000000000000000 bytes\n";
        let hex = b"0123456789abcdef";
        for i in 0..16 {
            msg[38 + i] = hex[(size >> ((15 - i) * 4)) & 0xF];
        }
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
        return true;
    }
    false
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

/// Sets the allocation limit and installs the panic hook (once).
pub fn init(max_allocation: usize) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        MAX_ALLOCATION.store(max_allocation, Ordering::Relaxed);
        let seen = Mutex::new(HashSet::new());
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map_or_else(|| "unknown".to_string(), |l| l.to_string());
            if seen
                .lock()
                .map(|mut s| s.insert(at.clone()))
                .unwrap_or(false)
            {
                eprintln!("==fuzz== panic (caught unless a crash follows) at {at}: {info}");
            }
        }));
    });
}
