//! Association policy: which peers may associate, with the A-ASSOCIATE-RJ reason PS3.8 gives.

use std::net::IpAddr;

use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use super::settings::PeerRule;
use crate::tls::PeerCertificate;

/// Access control for one incoming connection (the peer address is known per connection,
/// which dicom-ul's trait does not pass in).
#[derive(Debug, Clone)]
pub struct PeerPolicy<'a> {
    pub check_called_ae: bool,
    pub allowed_peers: &'a [PeerRule],
    pub peer_ip: IpAddr,
    /// The verified client certificate of a TLS connection (`None` for plain TCP).
    pub peer_certificate: Option<PeerCertificate>,
}

impl PeerPolicy<'_> {
    /// Whether a calling AE from this connection's address is on the allow-list.
    pub fn calling_allowed(&self, calling_ae: &str) -> bool {
        if self.allowed_peers.is_empty() {
            return true;
        }
        let calling = calling_ae.trim();
        let cn = self
            .peer_certificate
            .as_ref()
            .and_then(PeerCertificate::common_name);
        self.allowed_peers.iter().any(|r| {
            r.ae_title.trim() == calling
                && r.host.is_none_or(|h| same_ip(h, self.peer_ip))
                && r.certificate_subject
                    .as_deref()
                    .is_none_or(|want| cn.as_deref() == Some(want))
        })
    }
}

/// Compares addresses, treating an IPv4-mapped IPv6 address as its IPv4 form.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

impl dicom_ul::association::server::AccessControl for PeerPolicy<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        // The AE titles are logged here, where they are known: the rejection's own log line
        // (the listener's) has only the peer's address.
        if self.check_called_ae && this_ae_title.trim() != called_ae_title.trim() {
            tracing::warn!(
                calling_ae = calling_ae_title.trim(),
                called_ae = called_ae_title.trim(),
                "association rejected: called AE title is not this node's (dicom.ae_title)"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.calling_allowed(calling_ae_title) {
            tracing::warn!(
                calling_ae = calling_ae_title.trim(),
                called_ae = called_ae_title.trim(),
                "association rejected: no dicom.allowed_peers rule matches the calling AE title, host and certificate"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::association::server::AccessControl;

    fn rules() -> Vec<PeerRule> {
        vec![
            PeerRule {
                ae_title: "MODALITY".into(),
                ..Default::default()
            },
            PeerRule {
                ae_title: "PACS".into(),
                host: Some("10.0.0.5".parse().unwrap()),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn called_and_calling_titles_are_checked_with_their_reasons() {
        let r = rules();
        let p = PeerPolicy {
            check_called_ae: true,
            allowed_peers: &r,
            peer_ip: "127.0.0.1".parse().unwrap(),
            peer_certificate: None,
        };
        assert!(p
            .check_access("RADSTREAM", "MODALITY", "RADSTREAM", None)
            .is_ok());
        assert_eq!(
            p.check_access("RADSTREAM", "MODALITY", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        assert_eq!(
            p.check_access("RADSTREAM", "STRANGER", "RADSTREAM", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        // PACS is only allowed from its own host.
        assert!(p
            .check_access("RADSTREAM", "PACS", "RADSTREAM", None)
            .is_err());
        let p2 = PeerPolicy {
            peer_ip: "::ffff:10.0.0.5".parse().unwrap(),
            ..p.clone()
        };
        assert!(p2
            .check_access("RADSTREAM", "PACS", "RADSTREAM", None)
            .is_ok());
    }

    #[test]
    fn a_certificate_subject_rule_needs_that_verified_client_certificate() {
        let r = vec![PeerRule {
            ae_title: "MODALITY".into(),
            certificate_subject: Some("mod1.example".into()),
            ..Default::default()
        }];
        let policy = |peer_certificate| PeerPolicy {
            check_called_ae: true,
            allowed_peers: &r,
            peer_ip: "10.0.0.9".parse().unwrap(),
            peer_certificate,
        };
        assert!(
            policy(Some(PeerCertificate::with_common_name("mod1.example")))
                .calling_allowed("MODALITY")
        );
        assert!(
            !policy(Some(PeerCertificate::with_common_name("mod2.example")))
                .calling_allowed("MODALITY")
        );
        assert!(!policy(Some(PeerCertificate::default())).calling_allowed("MODALITY"));
        assert!(!policy(None).calling_allowed("MODALITY"));
    }

    #[test]
    fn empty_allow_list_accepts_any_caller() {
        let p = PeerPolicy {
            check_called_ae: false,
            allowed_peers: &[],
            peer_ip: "127.0.0.1".parse().unwrap(),
            peer_certificate: None,
        };
        assert!(p.check_access("RADSTREAM", "ANY", "WHATEVER", None).is_ok());
    }
}
