//! The request parser, as the pipeline drives it on stdin: bounded read, JSON with
//! upm's own checks (UTF-8, depth, integers wider than 64 bits), the request_id a
//! refusal echoes, then the shape and names. Nothing may panic, and what is accepted
//! must carry names the rest of upm may trust.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upm::request;

fuzz_target!(|data: &[u8]| {
    // The pipeline's cap, and one small enough that the fuzzer crosses it.
    for cap in [request::DEFAULT_MAX_REQUEST_BYTES, 64] {
        let Ok(bytes) = request::read_bounded(data, cap) else {
            continue;
        };
        assert!(bytes.len() as u64 <= cap);
        let Ok(doc) = request::parse_json(&bytes, false) else {
            continue;
        };
        if let Some(id) = request::peek_request_id(&doc) {
            assert!(request::valid_request_id(&id));
        }
        if let Ok(req) = request::from_value(doc) {
            assert!(request::valid_name(&req.plugin), "{:?}", req.plugin);
            assert!(request::valid_name(&req.method), "{:?}", req.method);
            assert!(!req.method.starts_with('_'));
            if let Some(id) = &req.request_id {
                assert!(request::valid_request_id(id));
            }
        }
    }
    // `args` given on the command line goes through the same parser.
    let _ = request::parse_json(data, true);
});
