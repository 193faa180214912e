//! The character vocabulary: every distinct character of the corpus, in code-point
//! order, numbered from 0.

use crate::LmError;

/// A character vocabulary (ids are indices into the sorted distinct characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    /// The vocabulary of `text`: its distinct characters, sorted. Errors on empty text.
    pub fn from_text(text: &str) -> Result<Self, LmError> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err(LmError::Data("the text is empty".into()));
        }
        Ok(Self { chars })
    }

    /// Number of characters (the model's input and output size).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (never, for one made by [`Vocab::from_text`]).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The ids of `text`'s characters; errors on a character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LmError> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map(|i| i as u32)
                    .map_err(|_| LmError::Data(format!("character {c:?} is not in the vocabulary")))
            })
            .collect()
    }

    /// The text of `ids`; ids outside the vocabulary become `�`.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{fffd}')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let v = Vocab::from_text("hello world").expect("vocab");
        assert_eq!(v.len(), 8);
        let ids = v.encode("low hell").expect("encode");
        assert_eq!(v.decode(&ids), "low hell");
        assert!(v.encode("xyz").is_err());
        assert!(Vocab::from_text("").is_err());
    }
}
