//! Any text frame: decoding never panics, and a request that decodes survives its own frame
//! (what the browser sends is what the server reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_app::model::RequestId;
use rally_app::protocol::decode_request;

fuzz_target!(|text: &str| {
    let Ok(request) = decode_request(text) else {
        return;
    };
    let id = request
        .request_id
        .clone()
        .unwrap_or_else(|| RequestId::parse("r").unwrap());
    let again = decode_request(&request.body.to_frame(&id)).expect("a request's own frame decodes");
    assert_eq!(again.body, request.body);
    assert_eq!(again.event_type, request.event_type);
});
