//! # privagg-ca
//!
//! The enrollment authority of a privagg deployment: it makes a root certificate and
//! issues each client an X.509 certificate for an Ed25519 key (RFC 8410), for client
//! authentication. The aggregation server and the clients trust the root; the root's
//! private key must stay where the clients are enrolled — never on the aggregation
//! server, which could otherwise mint identities and sit next to any client.
//!
//! `privagg ca init --dir DIR` writes `DIR/ca.der` and `DIR/ca.key` (mode 0600);
//! `privagg ca issue --dir DIR --name NAME --out OUT` writes `OUT/NAME.der` and
//! `OUT/NAME.key` (mode 0600). Certificates are made with rcgen and checked, by the server
//! in mutual TLS and by clients for every peer, with rustls-webpki.

use std::path::{Path, PathBuf};

use privagg_service::durable::{Access, write_atomically};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The common name in a certificate's subject (the NAME `privagg ca issue` was given), if
/// the certificate parses and has one: how round records name certificate holders.
pub fn subject_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_owned())
}

/// Why a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// rcgen refused to make or parse a certificate or key.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A file could not be read or written (the OS error is in the message, not a
    /// `source`, so that a report of the error chain does not repeat it).
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A file exists that would be overwritten.
    #[error("{} exists; an authority's key is never overwritten", .0.display())]
    Exists(PathBuf),
    /// A client name that cannot be a file name.
    #[error("client name {0:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")]
    BadName(String),
}

/// A certificate and its private key (PKCS#8 DER; wiped on drop).
pub struct Credential {
    /// The certificate (DER).
    pub cert: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("cert", &self.cert.len()).finish_non_exhaustive()
    }
}

impl Credential {
    /// Writes `DIR/NAME.der` and `DIR/NAME.key` (owner-only); returns their paths.
    pub fn save(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CaError> {
        check_name(name)?;
        std::fs::create_dir_all(dir).map_err(|error| CaError::Io { path: dir.to_owned(), error })?;
        let (cert, key) = (dir.join(format!("{name}.der")), dir.join(format!("{name}.key")));
        write(&key, &self.key, Access::Private)?;
        write(&cert, &self.cert, Access::Shared)?;
        Ok((cert, key))
    }
}

/// An enrollment authority: its root certificate and the key that signs client
/// certificates.
pub struct Authority {
    root: Credential,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new authority named `name` whose root is valid for `days` days.
    pub fn create(name: &str, days: u32) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        let root = Credential { cert: cert.der().to_vec(), key: Zeroizing::new(key.serialize_der()) };
        Ok(Self { root, issuer: Issuer::new(params, key) })
    }

    /// The authority kept in `dir` (`ca.der`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert = read(&dir.join("ca.der"))?;
        let key = Zeroizing::new(read(&dir.join("ca.key"))?);
        let pair = KeyPair::try_from(key.as_slice())?;
        let issuer = Issuer::from_ca_cert_der(&cert.as_slice().into(), pair)?;
        Ok(Self { root: Credential { cert, key }, issuer })
    }

    /// Writes `dir/ca.der` and `dir/ca.key` (owner-only), refusing to overwrite either.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        for file in ["ca.der", "ca.key"] {
            if dir.join(file).exists() {
                return Err(CaError::Exists(dir.join(file)));
            }
        }
        self.root.save(dir, "ca").map(|_| ())
    }

    /// The root certificate (DER): what servers and clients trust.
    pub fn root_der(&self) -> &[u8] {
        &self.root.cert
    }

    /// A certificate for client `name` and a fresh Ed25519 key, valid for `days` days
    /// (from an hour ago, for clocks a little behind), for client authentication.
    pub fn issue(&self, name: &str, days: u32) -> Result<Credential, CaError> {
        check_name(name)?;
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Credential { cert: cert.der().to_vec(), key: Zeroizing::new(key.serialize_der()) })
    }
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

fn check_name(name: &str) -> Result<(), CaError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(CaError::BadName(name.to_owned()));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(path).map_err(|error| CaError::Io { path: path.to_owned(), error })
}

fn write(path: &Path, bytes: &[u8], access: Access) -> Result<(), CaError> {
    write_atomically(path, bytes, access).map_err(|error| CaError::Io { path: path.to_owned(), error })
}

#[cfg(test)]
mod tests {
    use privagg_crypto::identity::{IdentityKey, TrustRoot};

    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn issued_certificates_verify_against_the_saved_and_reloaded_root() {
        let dir = std::env::temp_dir().join(format!("privagg-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Authority::create("privagg test authority", 30).unwrap();
        ca.save(&dir).unwrap();
        assert!(matches!(ca.save(&dir), Err(CaError::Exists(_))), "a root is never overwritten");
        let reloaded = Authority::load(&dir).unwrap();
        let root = TrustRoot::from_der(reloaded.root_der()).unwrap();
        for authority in [&ca, &reloaded] {
            let client = authority.issue("hospital-7", 10).unwrap();
            let (cert, key) = client.save(&dir.join("clients"), "hospital-7").unwrap();
            let key = IdentityKey::from_pkcs8(&std::fs::read(key).unwrap()).unwrap();
            let cert = std::fs::read(cert).unwrap();
            let certified = root.verify(&cert, now()).unwrap();
            certified.verify_signature(b"hello", &key.sign(b"hello")).unwrap();
            // Ten days later it has expired.
            assert!(root.verify(&client.cert, now() + 11 * 86_400).is_err());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [dir.join("ca.key"), dir.join("clients/hospital-7.key")] {
                assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        for bad in ["", "../etc/passwd", ".hidden", "a b", &"x".repeat(65)] {
            assert!(matches!(ca.issue(bad, 1), Err(CaError::BadName(_))), "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_certificate_names_its_holder() {
        let ca = Authority::create("privagg test authority", 30).unwrap();
        assert_eq!(subject_name(&ca.issue("clinic-3", 1).unwrap().cert).as_deref(), Some("clinic-3"));
        assert_eq!(subject_name(b"not a certificate"), None);
    }
}
