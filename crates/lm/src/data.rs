//! The corpus: Tiny Shakespeare split by speaking role into non-IID clients, as LEAF's
//! Shakespeare task does, with held-out text for testing.
//!
//! A *speech* is a header line `NAME:` (a line that ends in `:` and holds only a name)
//! and the lines after it up to the next blank line. Every speech belongs to its
//! speaker's *role*. The text is cut at the first speech that starts at or after
//! `1 − test_fraction` of its length: the speeches before the cut are the training
//! text, grouped by role; the ones after it are the test text, which no client sees.
//! Roles of the same name in different plays are one role here (the file has no play
//! boundaries).
//!
//! Every role with enough training text is a client of the population, as in LEAF; a
//! federated round trains a sample of them ([`sample_roles`]), one per seat.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};

use crate::LmError;
use crate::vocab::Vocab;

/// Tiny Shakespeare (public domain; karpathy/char-rnn's `input.txt`, 1,115,394 bytes),
/// shipped with the crate so nothing is downloaded at run time.
pub const TINY_SHAKESPEARE: &str = include_str!("../data/tinyshakespeare.txt");

/// One speech: the speaker and the text (header line included, trailing newline kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Speech {
    /// The speaking role, as written in the header without the colon.
    pub role: String,
    /// The speech's text, from its header line to its last line, each line ending in `\n`.
    pub text: String,
}

/// How the corpus becomes clients and a test set.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitOptions {
    /// Roles with fewer training characters than this are left out of the population.
    pub min_chars: usize,
    /// At most this many roles (the largest) make the population; `None`: all.
    pub max_clients: Option<usize>,
    /// Fraction of the text (from the end) held out for testing, in (0, 1).
    pub test_fraction: f64,
    /// Characters of held-out text to keep (the first ones after the cut); `None`: all.
    pub test_chars: Option<usize>,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self { min_chars: 2000, max_clients: None, test_fraction: 0.1, test_chars: Some(50_000) }
    }
}

/// One client's data: one role's training speeches, concatenated and encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientData {
    /// The role.
    pub role: String,
    /// Token ids of the role's training speeches, in the order of the text.
    pub tokens: Vec<u32>,
}

/// The federated dataset: clients (one a role) and the held-out test text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedData {
    /// The character vocabulary of the whole corpus.
    pub vocab: Vocab,
    /// Clients, largest role first.
    pub clients: Vec<ClientData>,
    /// Token ids of the held-out text.
    pub test: Vec<u32>,
}

/// Whether `line` is a speaker header: a name of letters, spaces and `'` `,` `.` `-`
/// followed by a colon, and nothing else.
fn header(line: &str) -> Option<&str> {
    let name = line.strip_suffix(':')?;
    let first = name.chars().next()?;
    let ok = first.is_ascii_alphabetic()
        && name.chars().all(|c| c.is_ascii_alphabetic() || matches!(c, ' ' | '\'' | ',' | '.' | '-'));
    ok.then_some(name)
}

/// Splits `text` into speeches. Lines before the first header are skipped.
pub fn speeches(text: &str) -> Vec<Speech> {
    let mut out: Vec<Speech> = Vec::new();
    let mut current: Option<Speech> = None;
    for line in text.lines() {
        if let Some(name) = header(line) {
            out.extend(current.take());
            current = Some(Speech { role: name.to_owned(), text: format!("{line}\n") });
        } else if line.trim().is_empty() {
            out.extend(current.take());
        } else if let Some(speech) = current.as_mut() {
            speech.text.push_str(line);
            speech.text.push('\n');
        }
    }
    out.extend(current);
    out
}

/// Splits `text` into role clients and held-out test text (see the module docs).
///
/// Errors: no speech in the text, no role with training text, or `test_fraction`
/// outside (0, 1).
pub fn split(text: &str, options: &SplitOptions) -> Result<FederatedData, LmError> {
    if !(options.test_fraction > 0.0 && options.test_fraction < 1.0) {
        return Err(LmError::Config(format!("test fraction {} is not in (0, 1)", options.test_fraction)));
    }
    let vocab = Vocab::from_text(text)?;
    let all = speeches(text);
    if all.is_empty() {
        return Err(LmError::Data("the text has no speech (no `NAME:` header line)".into()));
    }
    let total: usize = all.iter().map(|s| s.text.len()).sum();
    let cut_at = ((1.0 - options.test_fraction) * total as f64) as usize;
    let mut seen = 0usize;
    let cut = all
        .iter()
        .position(|s| {
            let here = seen;
            seen += s.text.len();
            here >= cut_at
        })
        .unwrap_or(all.len());
    let (train, held_out) = all.split_at(cut);

    let mut roles: BTreeMap<&str, String> = BTreeMap::new();
    for s in train {
        roles.entry(s.role.as_str()).or_default().push_str(&s.text);
    }
    let mut roles: Vec<(&str, String)> = roles.into_iter().collect();
    // Largest first; the name breaks ties, so the order is a function of the text alone.
    roles.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let clients = roles
        .into_iter()
        .filter(|(_, t)| t.len() >= options.min_chars)
        .take(options.max_clients.unwrap_or(usize::MAX))
        .map(|(role, t)| Ok(ClientData { role: role.to_owned(), tokens: vocab.encode(&t)? }))
        .collect::<Result<Vec<_>, LmError>>()?;
    if clients.is_empty() {
        return Err(LmError::Data(format!("no role has {} characters of training text", options.min_chars)));
    }
    let mut test_text: String = held_out.iter().map(|s| s.text.as_str()).collect();
    if let Some(n) = options.test_chars {
        let end = test_text.char_indices().nth(n).map_or(test_text.len(), |(i, _)| i);
        test_text.truncate(end);
    }
    let test = vocab.encode(&test_text)?;
    Ok(FederatedData { vocab, clients, test })
}

/// The roles that `seats` seats train in round `round`: distinct indices into a
/// population of `population` roles, drawn uniformly without replacement from `seed` and
/// the round (LEAF's client sampling; every seat a different role). Errors when there
/// are fewer roles than seats.
pub fn sample_roles(population: usize, seats: usize, round: u64, seed: u64) -> Result<Vec<usize>, LmError> {
    if seats > population {
        return Err(LmError::Config(format!("{seats} seats need at least as many roles; the text has {population}")));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut all: Vec<usize> = (0..population).collect();
    // A partial Fisher–Yates shuffle: the first `seats` entries are the sample.
    for i in 0..seats {
        let j = rng.random_range(i..population);
        all.swap(i, j);
    }
    all.truncate(seats);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAY: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n\
MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?\n\n\
First Citizen:\nWe are undone already.\n\nMENENIUS:\nI tell you, friends, most charitable care\n";

    #[test]
    fn speeches_follow_headers_and_blank_lines() {
        let s = speeches(PLAY);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].role, "First Citizen");
        assert_eq!(s[0].text, "First Citizen:\nBefore we proceed any further, hear me speak.\n");
        assert_eq!(s[4].role, "MENENIUS");
        assert!(s[4].text.ends_with("Will you undo yourselves?\n"));
    }

    #[test]
    fn headers_are_names_only() {
        assert_eq!(header("KING RICHARD II:"), Some("KING RICHARD II"));
        assert_eq!(header("Second Servingman:"), Some("Second Servingman"));
        assert_eq!(header("Speak, speak:"), Some("Speak, speak"));
        assert_eq!(header("What say you: no"), None);
        assert_eq!(header(":"), None);
        assert_eq!(header("  ROMEO:"), None);
    }

    #[test]
    fn roles_become_clients_with_their_own_text_only() {
        let options = SplitOptions { min_chars: 1, max_clients: None, test_fraction: 0.2, test_chars: None };
        let data = split(PLAY, &options).expect("split");
        let roles: Vec<&str> = data.clients.iter().map(|c| c.role.as_str()).collect();
        assert_eq!(roles, ["First Citizen", "MENENIUS", "All"], "largest role first");
        let first = data.vocab.decode(&data.clients[0].tokens);
        assert!(first.starts_with("First Citizen:\nBefore"));
        assert!(!first.contains("MENENIUS") && !first.contains("All:"), "one role per client");
        // The last speech is held out and is in no client.
        let test = data.vocab.decode(&data.test);
        assert!(test.starts_with("MENENIUS:\nI tell you"));
        assert!(data.clients.iter().all(|c| !data.vocab.decode(&c.tokens).contains("charitable")));
    }

    #[test]
    fn the_real_corpus_is_non_iid_and_its_test_text_is_held_out() {
        let data = split(TINY_SHAKESPEARE, &SplitOptions::default()).expect("split");
        assert_eq!(data.vocab.len(), 65);
        assert!(data.clients.len() >= 50, "{} roles", data.clients.len());
        assert!(data.clients.iter().all(|c| c.tokens.len() >= 2000));
        assert!(data.clients.windows(2).all(|w| w[0].tokens.len() >= w[1].tokens.len()));
        assert_eq!(data.test.len(), 50_000);
        // Held out: a long stretch of test text occurs in no client's text.
        let test = data.vocab.decode(&data.test[1000..1200]);
        assert!(data.clients.iter().all(|c| !data.vocab.decode(&c.tokens).contains(&test)));
        // Non-IID: clients' character distributions differ (total variation between the
        // two largest roles' unigram distributions is far from zero).
        let unigram = |t: &[u32]| {
            let mut f = vec![0f64; data.vocab.len()];
            t.iter().for_each(|&i| f[i as usize] += 1.0 / t.len() as f64);
            f
        };
        let (a, b) = (unigram(&data.clients[0].tokens), unigram(&data.clients[1].tokens));
        let tv: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / 2.0;
        assert!(tv > 0.02, "total variation {tv}");
        // Each client's text starts with its own header.
        for c in &data.clients {
            assert!(data.vocab.decode(&c.tokens[..c.role.len() + 1]).starts_with(&format!("{}:", c.role)));
        }
    }

    #[test]
    fn a_round_samples_distinct_roles() {
        let a = sample_roles(50, 8, 3, 7).expect("sample");
        assert_eq!(a.len(), 8);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "distinct");
        assert!(a.iter().all(|&i| i < 50));
        assert_eq!(a, sample_roles(50, 8, 3, 7).expect("sample"), "a function of seed and round");
        assert_ne!(a, sample_roles(50, 8, 4, 7).expect("sample"), "another round, another sample");
        assert!(sample_roles(5, 8, 0, 0).is_err());
    }

    #[test]
    fn a_bad_test_fraction_is_refused() {
        let options = SplitOptions { test_fraction: 1.0, ..SplitOptions::default() };
        assert!(matches!(split(PLAY, &options), Err(LmError::Config(_))));
    }
}
