#![no_main]

#[path = "../harness/common.rs"]
mod common;
#[path = "../harness/support.rs"]
mod support;
#[path = "../harness/image_decode.rs"]
mod target;

#[global_allocator]
static ALLOCATOR: support::Limited = support::Limited;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::init(support::DECODER_LIMIT);
    target::run(data);
});
