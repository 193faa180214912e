//! Feeds arbitrary bytes to both protocol decoders. Any panic, or an allocation beyond
//! the limits (caught by `-rss_limit_mb`), is a bug. Whatever decodes must re-encode to
//! the same bytes.
//!
//! `cargo fuzz run decode` from the repository root (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privagg_protocol::{ClientMessage, Limits, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_app_data: 1 << 20, ..Limits::default() };
    if let Ok(m) = ServerMessage::decode(data, &limits) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(m) = ClientMessage::decode(data, &limits) {
        assert_eq!(m.encode(), data);
    }
});
