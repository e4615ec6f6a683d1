#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iiptran_ike::wire::fuzz::ike_message(data);
});
