//! Who may take a seat: holders of a token from the token file, or anyone when the
//! server runs without one (local trials; the server says so in its log). One identity,
//! one connection: a second connection with a token already in use is refused.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::ServeError;

/// The admission policy.
#[derive(Clone, Debug)]
pub struct Admission {
    /// SHA-256 of each allowed token; `None` admits everyone.
    tokens: Option<HashSet<[u8; 32]>>,
}

/// Who a connection is, once admitted.
pub type Identity = [u8; 32];

impl Admission {
    /// Admits everyone.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// Admits the holders of the tokens in `path`: one per line, blank lines and lines
    /// starting with `#` ignored.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::io(path, e))?;
        let tokens: HashSet<[u8; 32]> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(digest).collect();
        if tokens.is_empty() {
            return Err(ServeError::Config(format!("{} holds no tokens", path.display())));
        }
        Ok(Self { tokens: Some(tokens) })
    }

    /// Whether anyone may join.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// The identity of a client presenting `token` and `client_identity`, or why it is
    /// refused. With a token file the token is the identity; without one the client's
    /// own random identity is.
    pub fn admit(&self, token: &str, client_identity: &[u8; 16]) -> Result<Identity, String> {
        match &self.tokens {
            None => Ok(digest(&format!("anonymous:{}", hex(client_identity)))),
            Some(tokens) => {
                let d = digest(token);
                if token.is_empty() {
                    Err("a token is required".into())
                } else if tokens.contains(&d) {
                    Ok(d)
                } else {
                    Err("unknown token".into())
                }
            }
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_admits_only_listed_tokens() {
        let dir = std::env::temp_dir().join(format!("privagg-admission-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "# clients\nalpha\n\n  beta  \n").unwrap();
        let a = Admission::from_file(&path).unwrap();
        assert!(!a.is_open());
        assert!(a.admit("alpha", &[0; 16]).is_ok());
        assert_eq!(a.admit("beta", &[1; 16]), a.admit("beta", &[2; 16]));
        assert_eq!(a.admit("gamma", &[0; 16]), Err("unknown token".into()));
        assert_eq!(a.admit("", &[0; 16]), Err("a token is required".into()));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(Admission::from_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_admission_tells_clients_apart_by_their_identity() {
        let a = Admission::open();
        assert!(a.is_open());
        assert_ne!(a.admit("", &[1; 16]), a.admit("", &[2; 16]));
        assert_eq!(a.admit("x", &[1; 16]), a.admit("y", &[1; 16]));
    }
}
