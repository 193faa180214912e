//! A `Config`'s application payload, as a client decodes it. Never panics; whatever
//! decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privagg_service::RoundSettings;

fuzz_target!(|data: &[u8]| {
    if let Ok(settings) = RoundSettings::decode(data) {
        let again = RoundSettings::decode(&settings.encode().expect("decoded settings encode")).expect("round trip");
        assert_eq!(again, settings);
    }
});
