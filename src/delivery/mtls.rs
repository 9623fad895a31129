//! Client certificates for mutual TLS (SPEC §13 `tls_client_certificate`):
//! checked when a destination is created or changed (so a stored one always
//! loads), and turned into the rustls identity the destination's client
//! presents.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the API shows of a client certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The leaf certificate's subject (`CN=...`).
    pub subject: String,
    /// Its `notAfter`, in Unix ms.
    pub not_after_ms: i64,
}

/// Why a certificate or key was refused; `field` is `cert_pem` or `key_pem`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CertError {
    pub field: &'static str,
    pub message: String,
}

fn fail(field: &'static str, message: impl Into<String>) -> CertError {
    CertError {
        field,
        message: message.into(),
    }
}

/// The certificate chain and private key, parsed.
pub fn identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("cert_pem", format!("is not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail("cert_pem", "holds no certificate"));
    }
    // The error text of a key parser may quote key material: never shown.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        fail(
            "key_pem",
            "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    Ok((certs, key))
}

/// Checks that `cert_pem` and `key_pem` make a usable client identity (the
/// key is one rustls can sign with, and it belongs to the certificate) and
/// reads what the API shows.
pub fn check(cert_pem: &str, key_pem: &str) -> Result<CertInfo, CertError> {
    if cert_pem.len() > 64 * 1024 {
        return Err(fail("cert_pem", "must be at most 64 KiB"));
    }
    if key_pem.len() > 16 * 1024 {
        return Err(fail("key_pem", "must be at most 16 KiB"));
    }
    let (certs, key) = identity(cert_pem, key_pem)?;
    let provider = crate::http::tls::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| fail("key_pem", "is not a key type TLS can sign with"))?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(fail("key_pem", "does not belong to the certificate")),
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|e| fail("cert_pem", format!("is not an X.509 certificate: {e}")))?;
    Ok(CertInfo {
        subject: leaf.subject().to_string(),
        not_after_ms: leaf.validity().not_after.timestamp().saturating_mul(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_pair_is_read_and_a_foreign_key_refused() {
        let mut params = rcgen::CertificateParams::new(vec!["client.invalid".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing-relay");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = check(&cert.pem(), &key.serialize_pem()).unwrap();
        assert!(
            info.subject.contains("CN=billing-relay"),
            "{}",
            info.subject
        );
        assert!(info.not_after_ms > crate::model::time::now_ms());

        let other = rcgen::KeyPair::generate().unwrap();
        assert_eq!(
            check(&cert.pem(), &other.serialize_pem())
                .unwrap_err()
                .field,
            "key_pem"
        );
        assert_eq!(
            check("nope", &key.serialize_pem()).unwrap_err().field,
            "cert_pem"
        );
        assert_eq!(check(&cert.pem(), "nope").unwrap_err().field, "key_pem");
    }
}
