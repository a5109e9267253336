//! Any text as a browser's SDP: the relay's checks never panic, a summary never counts more
//! sending sections than media sections, and rewriting candidates keeps every other line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally::media::sdp::{announce_public_ip, check};

fuzz_target!(|sdp: &str| {
    if let Ok(summary) = check(sdp) {
        assert!(summary.sending <= summary.media_sections);
        assert!(summary.sending_tracks.len() <= summary.sending);
    }
    let public = std::net::IpAddr::from([203, 0, 113, 7]);
    let rewritten = announce_public_ip(sdp, public);
    assert_eq!(rewritten.lines().count(), sdp.lines().count());
});
