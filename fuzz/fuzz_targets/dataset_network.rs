#![no_main]

#[path = "../harness/support.rs"]
mod support;
#[path = "../harness/dataset_network.rs"]
mod target;

#[global_allocator]
static ALLOCATOR: support::Limited = support::Limited;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::init(support::PARSER_LIMIT);
    target::run(data);
});
