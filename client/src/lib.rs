//! # privagg-client
//!
//! The SDK a training loop calls to take part in privagg's secure, differentially
//! private federated averaging. It does the whole client side: it clips, rotates,
//! quantizes and noises the update (`privagg-dp`), masks it and runs every protocol
//! phase (`privagg-protocol`, driven by `privagg-service`'s client session) over QUIC,
//! with the server's certificate pinned.
//!
//! ```no_run
//! # async fn example(update: ndarray::Array1<f32>) -> Result<(), privagg_client::SdkError> {
//! use privagg_client::{Client, ClientOptions};
//! let cert = std::fs::read("state/cert.der").expect("the server's certificate");
//! let mut options = ClientOptions::new("127.0.0.1:7000".parse().expect("address"), cert);
//! options.token = Some("secret-token".into());
//! let mut client = Client::connect(options).await?;
//! // One round with one update…
//! let report = client.submit(update.view(), 1.0).await?;
//! println!("round {} summed {} inputs", report.round, report.inputs);
//! // …or every round until the session ends, training on the current model.
//! client.run(|model| Ok::<_, String>(model.mapv(|w| -0.01 * w))).await?;
//! # Ok(()) }
//! ```
//!
//! The DP parameters come from the server; the client checks them against its own
//! [`PrivacyPolicy`] ([`ClientOptions::privacy`]) before it encodes anything: DP on
//! unless it opted out, noise at least its floor, counted its own way. With DP off, [`Client::submit`]'s weight travels masked inside the vector,
//! so the server learns only the total weight and the weighted mean.
//!
//! If the connection drops in the middle of a round, the client reconnects with the
//! same identity and gets its seat back while the phase lasts; whatever the server had
//! not received is sent again.
//!
//! The `testing` feature adds fault injection for tests, demos and benchmarks:
//! [`ClientOptions::drop_point`] makes a client vanish at a chosen point of a round, and
//! with [`ClientOptions::stall`] go silent there instead (holding the server in a phase).

mod client;
mod error;
mod files;
mod link;
mod memory;

pub use client::{Client, ClientOptions, Interrupt, PrivateKey, RoundContext, RoundReport};
pub use error::SdkError;
pub use files::{IdentityFiles, TOKEN_ENV, load_token};
pub use memory::default_state_dir;
pub use privagg_log::VerifierKey;
#[cfg(feature = "testing")]
pub use privagg_protocol::DropPoint;
pub use privagg_protocol::{AbortCode, AdversaryClass, ClientPolicy};
pub use privagg_service::privacy::{DEFAULT_MAX_EPSILON, DEFAULT_MIN_NOISE_MULTIPLIER};
pub use privagg_service::round_log::LogRefusal;
pub use privagg_service::{EndReason, PrivacyPolicy, RoundError, RoundSettings};
