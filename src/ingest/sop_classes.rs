//! Which abstract and transfer syntaxes the SCP accepts.

use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::settings::{DicomSettings, SopClassMode};
use crate::commitment::PUSH_MODEL_SOP_CLASS;
pub use crate::dataset::storage_classes::{standard_storage_classes, STORAGE_SOP_CLASSES};
use crate::mpps::MPPS_SOP_CLASS;

/// Verification (C-ECHO) is always accepted.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// The abstract syntaxes to offer, per `sop_class_mode`.
pub fn accepted_abstract_syntaxes(settings: &DicomSettings) -> Vec<String> {
    let listed = |uid: &str| settings.sop_classes.iter().any(|s| s == uid);
    // MPPS N-CREATE/N-SET are always taken: they are evidence for study completion.
    // Storage Commitment Push Model: the reports of PACS confirming our exports arrive here,
    // the PACS taking the SCP role (see [`CommitmentRoles`]).
    let mut out: Vec<String> = vec![
        VERIFICATION.to_string(),
        MPPS_SOP_CLASS.to_string(),
        PUSH_MODEL_SOP_CLASS.to_string(),
    ];
    match settings.sop_class_mode {
        SopClassMode::AllStorage => {
            out.extend(standard_storage_classes().map(String::from));
            out.extend(settings.sop_classes.iter().cloned());
        }
        SopClassMode::Allow => out.extend(settings.sop_classes.iter().cloned()),
        SopClassMode::Deny => out.extend(
            standard_storage_classes()
                .filter(|u| !listed(u))
                .map(String::from),
        ),
    }
    out.sort();
    out.dedup();
    out
}

/// SCP/SCU role selection (PS3.7 D.3.3.4): a PACS sending a Storage Commitment report on a
/// new association proposes the SCP role for itself; that is accepted for the Push Model
/// class only (every other class keeps the default roles).
pub struct CommitmentRoles;

impl dicom_ul::association::server::Negotiation for CommitmentRoles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<dicom_ul::pdu::RequestorRoles> {
        (sop_class_uid.trim_end_matches(['\0', ' ']) == PUSH_MODEL_SOP_CLASS).then_some(
            dicom_ul::pdu::RequestorRoles {
                scu: scu_role,
                scp: scp_role,
            },
        )
    }
}

/// Every transfer syntax the registry can parse data sets of. Data sets are stored exactly as
/// received, so a pixel codec is not needed to accept a syntax.
pub fn accepted_transfer_syntaxes() -> Vec<&'static str> {
    TransferSyntaxRegistry
        .iter()
        .filter(|ts| !ts.is_unsupported())
        .map(|ts| ts.uid())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_include_cr_dx_sr_and_exclude_commitment() {
        let s: Vec<_> = standard_storage_classes().collect();
        assert!(s.contains(&"1.2.840.10008.5.1.4.1.1.1"));
        assert!(s.contains(&"1.2.840.10008.5.1.4.1.1.1.1"));
        assert!(s.contains(&"1.2.840.10008.5.1.4.1.1.88.34"));
        assert!(!s.contains(&"1.2.840.10008.1.20.1"));
        assert!(s.len() > 100);
    }

    #[test]
    fn deny_mode_removes_listed_classes() {
        let settings = DicomSettings {
            sop_class_mode: SopClassMode::Deny,
            sop_classes: vec!["1.2.840.10008.5.1.4.1.1.1".into()],
            ..Default::default()
        };
        let a = accepted_abstract_syntaxes(&settings);
        assert!(!a.iter().any(|u| u == "1.2.840.10008.5.1.4.1.1.1"));
        assert!(a.iter().any(|u| u == VERIFICATION));
    }

    #[test]
    fn common_transfer_syntaxes_are_accepted() {
        let ts = accepted_transfer_syntaxes();
        for uid in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.203",
        ] {
            assert!(ts.contains(&uid), "{uid} missing");
        }
    }
}
