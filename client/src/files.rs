//! A client's identity read from files, the way the `privagg client` command and the
//! Python SDK take it: an admission token file (or `PRIVAGG_TOKEN`), a certificate and its
//! key, and the enrollment authority's root. One implementation, so that every front end
//! reads, trims and refuses the same way.

use std::path::{Path, PathBuf};

use crate::client::{ClientOptions, PrivateKey};
use crate::error::SdkError;

/// The environment variable the admission token may come from when no token file is given.
pub const TOKEN_ENV: &str = "PRIVAGG_TOKEN";

/// Paths of a client's identity; every field is optional (see
/// [`ClientOptions::load_identity`]).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct IdentityFiles {
    /// A file holding the admission token (surrounding whitespace is ignored).
    pub token_file: Option<PathBuf>,
    /// This client's certificate (DER, `NAME.der` from `privagg ca issue`).
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PKCS#8 DER, `NAME.key`).
    pub key: Option<PathBuf>,
    /// The enrollment authority's root certificate (DER, `ca.der`).
    pub client_ca: Option<PathBuf>,
}

impl IdentityFiles {
    /// No files: a client admitted without a token or certificate (or by `PRIVAGG_TOKEN`).
    pub fn new() -> Self {
        Self::default()
    }
}

impl ClientOptions {
    /// Reads the identity `files` name into the options: the token from `token_file`, else
    /// from [`TOKEN_ENV`] if set (never from anywhere else), and the certificate, key and
    /// root from theirs. A certificate needs its key and a key its certificate.
    ///
    /// Errors ([`SdkError::Identity`]) name the file and the failure, never the token.
    /// On error the options are left unchanged.
    pub fn load_identity(&mut self, files: &IdentityFiles) -> Result<(), SdkError> {
        if files.cert.is_some() != files.key.is_some() {
            return Err(SdkError::Identity("a client certificate and its key go together".into()));
        }
        let token = load_token(files.token_file.as_deref())?;
        let cert = files.cert.as_deref().map(|p| read_identity_file("client certificate", p)).transpose()?;
        let key = files.key.as_deref().map(|p| read_identity_file("client key", p)).transpose()?;
        let client_ca = files.client_ca.as_deref().map(|p| read_identity_file("authority root", p)).transpose()?;
        self.token = token;
        self.cert = cert;
        self.key = key.map(PrivateKey::from_pkcs8_der);
        self.client_ca = client_ca;
        Ok(())
    }
}

/// The admission token: the content of `file` with surrounding whitespace removed, else
/// the value of [`TOKEN_ENV`] if it is set, else `None`. An empty token is an error.
/// Errors never contain the token.
pub fn load_token(file: Option<&Path>) -> Result<Option<String>, SdkError> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SdkError::Identity(format!("cannot read the token file {}: {e}", path.display())))?;
            Some(text.trim().to_owned())
        }
        None => std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_owned()),
    };
    match token {
        Some(t) if t.is_empty() => Err(SdkError::Identity(match file {
            Some(path) => format!("the token file {} is empty", path.display()),
            None => format!("{TOKEN_ENV} is set but empty"),
        })),
        other => Ok(other),
    }
}

/// Reads one identity file (`what`, e.g. "client certificate", names it in the error).
fn read_identity_file(what: &str, path: &Path) -> Result<Vec<u8>, SdkError> {
    std::fs::read(path).map_err(|e| SdkError::Identity(format!("cannot read the {what} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    fn options() -> ClientOptions {
        ClientOptions::new("127.0.0.1:7000".parse().unwrap(), vec![1, 2, 3])
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_an_empty_one_refused_without_echoing_it() {
        let dir = std::env::temp_dir().join(format!("privagg-files-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "  alpha-secret\n").unwrap();
        let mut o = options();
        o.load_identity(&IdentityFiles { token_file: Some(path.clone()), ..IdentityFiles::new() }).unwrap();
        assert_eq!(o.token.as_deref(), Some("alpha-secret"));
        std::fs::write(&path, " \n").unwrap();
        let err = load_token(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let missing = dir.join("missing");
        let err = load_token(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing") && !err.contains("alpha"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_and_the_options_are_unchanged() {
        let mut o = options();
        let files = IdentityFiles { cert: Some("c.der".into()), ..IdentityFiles::new() };
        assert!(matches!(o.load_identity(&files), Err(SdkError::Identity(_))));
        assert!(o.cert.is_none() && o.key.is_none());
        let files = IdentityFiles {
            cert: Some("/nonexistent/c.der".into()),
            key: Some("/nonexistent/c.key".into()),
            ..IdentityFiles::new()
        };
        let err = o.load_identity(&files).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/c.der"), "{err}");
    }
}
