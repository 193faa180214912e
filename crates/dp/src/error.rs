//! The crate's one error type.

/// Every way an operation of this crate can fail. Errors never carry update values or
/// noise, only indices, sizes and public parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpError {
    /// An input coordinate is NaN or infinite.
    #[error("coordinate {index} is NaN or infinite")]
    NonFinite {
        /// Position of the first offending coordinate.
        index: usize,
    },
    /// A parameter is outside its documented range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A vector has the wrong length.
    #[error("vector has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Length the parameters require.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// A coordinate does not fit the integer domain (scaled value beyond ±2^62, or a
    /// word not below 2^b).
    #[error("coordinate {index} is out of range for the integer encoding")]
    OutOfRange {
        /// Position of the first offending coordinate.
        index: usize,
    },
    /// Conditional randomized rounding found no vector within the norm bound.
    #[error("conditional rounding exceeded the norm bound in all {attempts} attempts")]
    RoundingRetriesExhausted {
        /// Number of attempts made.
        attempts: u32,
    },
    /// An exact sampler reached the limit of its 128-bit arithmetic. The parameter
    /// checks make this reachable only with probability below 2^-300; the sampler fails
    /// closed instead of returning an inexact sample.
    #[error("exact sampler arithmetic overflow")]
    SamplerOverflow,
    /// The operating system's random number generator failed.
    #[error("operating-system RNG failed: {0}")]
    Rng(String),
    /// The bit width cannot hold the clients' sum: `2^(2b) < n k^2` or `2^b < n`.
    #[error("{bits} bits cannot hold the sum of {clients} clients at {k_stddevs} standard deviations")]
    TooFewBits {
        /// Bit width b.
        bits: u32,
        /// Number of clients summed.
        clients: usize,
        /// Standard deviations that must fit.
        k_stddevs: f64,
    },
    /// No scale γ keeps k standard deviations of the aggregate inside `2^b`.
    #[error("no scale keeps {k_stddevs} standard deviations of the aggregate within {bits} bits")]
    WrapAroundRisk {
        /// Bit width b.
        bits: u32,
        /// Standard deviations that must fit.
        k_stddevs: f64,
    },
    /// The minimum number of survivors minus tolerated colluders leaves no honest noise.
    #[error("n_min = {n_min} with {colluders} tolerated colluders leaves no honest client")]
    NoHonestClients {
        /// Smallest accepted survivor count.
        n_min: usize,
        /// Tolerated colluding clients.
        colluders: usize,
    },
    /// The minimum survivor count is larger than the cohort.
    #[error("n_min = {n_min} exceeds the cohort size {clients}")]
    NMinAboveCohort {
        /// Smallest accepted survivor count.
        n_min: usize,
        /// Cohort size.
        clients: usize,
    },
    /// No noise multiplier in the search range reaches the target ε.
    #[error("target epsilon {target} is unreachable (best {best} at the largest noise multiplier)")]
    EpsilonUnreachable {
        /// Requested ε.
        target: f64,
        /// Smallest ε found.
        best: f64,
    },
    /// Fewer clients survived than the round's minimum: it must release nothing.
    #[error("only {survivors} clients survived, the round needs n_min = {n_min}")]
    TooFewSurvivors {
        /// Clients whose updates are in the sum.
        survivors: usize,
        /// Smallest survivor count the noise calibration allows.
        n_min: usize,
    },
    /// The next round would take ε above the configured budget.
    #[error("privacy budget exceeded: epsilon would be {projected} > {max_epsilon}")]
    BudgetExceeded {
        /// ε after the next round.
        projected: f64,
        /// Configured maximum ε.
        max_epsilon: f64,
    },
    /// The PLD accountant has no sound analysis of this mechanism (see
    /// `accountant::pld`); account it with RDP.
    #[error("the PLD accountant has no sound analysis of the {mechanism} mechanism")]
    PldUnsupported {
        /// The mechanism.
        mechanism: &'static str,
    },
    /// The PLD grid would need more points than the accountant allows.
    #[error("the PLD grid needs {len} points, above the limit of {max}: use a coarser value_discretization_interval")]
    PldGridTooLarge {
        /// Points needed (`u64::MAX` when not even representable).
        len: u64,
        /// The limit, `accountant::pld::MAX_GRID_LEN`.
        max: u64,
    },
}

/// Shorthand for an [`DpError::InvalidParameter`].
pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> DpError {
    DpError::InvalidParameter { name, reason: reason.into() }
}
