//! `[dicom]`: the DICOM listener's address, AE title, limits, time-outs, peers and SOP classes.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[dicom]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DicomSettings {
    /// Address the SCP binds to.
    pub host: IpAddr,
    /// TCP port of the SCP (0 picks a free one).
    pub port: u16,
    /// Our AE title: associations calling another title are rejected (reason 7).
    pub ae_title: String,
    /// Whether the called AE title must equal `ae_title`.
    pub check_called_ae: bool,
    /// Largest PDU we accept, in bytes (dicom-rs's default is 16 KiB).
    pub max_pdu_length: u32,
    /// Associations served at once; further ones are rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// Associations served at once for one peer address; further ones are rejected likewise.
    pub max_associations_per_peer: usize,
    /// Connections that have not yet sent a whole A-ASSOCIATE-RQ; further ones are closed.
    /// They hold no association slot.
    pub max_pending_connections: usize,
    /// Seconds from the TCP connection (and TLS handshake) to a whole A-ASSOCIATE-RQ (ARTIM).
    #[serde(alias = "artim_timeout_secs")]
    pub pre_association_timeout_secs: u64,
    /// Seconds to wait for the next fragment of a DIMSE message.
    pub dimse_timeout_secs: u64,
    /// Seconds an established association may stay silent between messages.
    pub idle_timeout_secs: u64,
    /// Calling AE titles allowed to associate; empty allows any.
    pub allowed_peers: Vec<PeerRule>,
    /// SOP classes accepted besides (or, with `sop_class_mode = "allow"`, instead of) the
    /// standard storage classes.
    pub sop_classes: Vec<String>,
    /// `all_storage`: every standard storage SOP class plus `sop_classes`;
    /// `allow`: only `sop_classes`; `deny`: every storage class except `sop_classes`.
    pub sop_class_mode: SopClassMode,
    /// The DICOM TLS listener (`[dicom.tls]`).
    pub tls: DicomTlsSettings,
}

/// `[dicom.tls]`: a second port speaking DICOM over TLS (PS3.15 B.1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DicomTlsSettings {
    pub enabled: bool,
    /// TCP port of the TLS listener (0 picks a free one); same address as the plain one.
    pub port: u16,
    /// PEM certificate chain of the node.
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate` (a secret: never logged).
    pub private_key: Option<PathBuf>,
    /// PEM CA: when set, clients must present a certificate that chains to it.
    pub client_ca: Option<PathBuf>,
}

impl Default for DicomTlsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 2762,
            certificate: None,
            private_key: None,
            client_ca: None,
        }
    }
}

/// One entry of the calling-AE allow-list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRule {
    /// Calling AE title.
    pub ae_title: String,
    /// When set, the association must also come from this address.
    #[serde(default)]
    pub host: Option<IpAddr>,
    /// When set, the association must come over TLS with a client certificate whose subject
    /// common name is this (needs `dicom.tls.client_ca`).
    #[serde(default)]
    pub certificate_subject: Option<String>,
}

/// See [`DicomSettings::sop_class_mode`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SopClassMode {
    AllStorage,
    Allow,
    Deny,
}

impl Default for DicomSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 11112,
            ae_title: "RADSTREAM".into(),
            check_called_ae: true,
            max_pdu_length: 262_144,
            max_associations: 64,
            max_associations_per_peer: 16,
            max_pending_connections: 256,
            pre_association_timeout_secs: 5,
            dimse_timeout_secs: 60,
            idle_timeout_secs: 300,
            allowed_peers: Vec::new(),
            sop_classes: Vec::new(),
            sop_class_mode: SopClassMode::AllStorage,
            tls: DicomTlsSettings::default(),
        }
    }
}

impl DicomSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let invalid = |field, problem: &str| Err((field, problem.to_string()));
        let ae = &self.ae_title;
        if ae.trim().is_empty() || ae.len() > 16 || !ae.chars().all(|c| c.is_ascii() && c != '\\') {
            return invalid(
                "dicom.ae_title",
                "must be 1 to 16 ASCII characters without a backslash",
            );
        }
        for p in &self.allowed_peers {
            if p.ae_title.trim().is_empty() || p.ae_title.len() > 16 {
                return invalid("dicom.allowed_peers.ae_title", "must be 1 to 16 characters");
            }
        }
        if !(4096..=16_777_216).contains(&self.max_pdu_length) {
            return invalid(
                "dicom.max_pdu_length",
                "must be between 4096 and 16777216 bytes",
            );
        }
        if self.max_associations == 0 {
            return invalid("dicom.max_associations", "must be at least 1");
        }
        if self.max_associations_per_peer == 0 {
            return invalid("dicom.max_associations_per_peer", "must be at least 1");
        }
        if self.max_pending_connections == 0 {
            return invalid("dicom.max_pending_connections", "must be at least 1");
        }
        let tls = &self.tls;
        if tls.enabled && (tls.certificate.is_none() || tls.private_key.is_none()) {
            return invalid(
                "dicom.tls",
                "enabled = true needs certificate and private_key (PEM files)",
            );
        }
        if self
            .allowed_peers
            .iter()
            .any(|p| p.certificate_subject.is_some())
            && !(tls.enabled && tls.client_ca.is_some())
        {
            return invalid(
                "dicom.allowed_peers.certificate_subject",
                "needs dicom.tls.enabled and dicom.tls.client_ca (client certificates)",
            );
        }
        if self.pre_association_timeout_secs == 0
            || self.dimse_timeout_secs == 0
            || self.idle_timeout_secs == 0
        {
            return invalid(
                "dicom.*_timeout_secs",
                "time-outs must be at least 1 second",
            );
        }
        if self.sop_class_mode == SopClassMode::Allow && self.sop_classes.is_empty() {
            return invalid(
                "dicom.sop_classes",
                "sop_class_mode = \"allow\" needs at least one SOP class UID",
            );
        }
        Ok(())
    }
}
