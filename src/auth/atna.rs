//! The audit log in the DICOM audit message format (PS3.15 A.5, the RFC 3881 schema with
//! DICOM's extensions), for an audit repository or a SIEM. Each row becomes one
//! `AuditMessage`: the event (a coded EventID from DCM), who asked (the principal and its
//! address), the node as audit source, and the participant objects the row names (study,
//! patient, query).
//!
//! Event mapping: searches → Query (110112, action E); DICOMweb retrieval of instances,
//! frames, renderings and bulk data → Export (110106, R: data leaves the node); reading the
//! audit log → Audit Log Used (110101, R); every other read → DICOM Instances Accessed
//! (110103, R). HTTP status → EventOutcomeIndicator: 2xx/3xx 0, 4xx 4 (minor failure), 5xx 8.

use crate::xml::escape;
use base64::Engine as _;

use super::audit::AuditRecord;
use crate::clock::format_ms;

/// Study Root Query/Retrieve Information Model - FIND: the SOP class a QIDO-RS search is.
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

/// A coded value: (code, scheme, meaning).
type Code = (&'static str, &'static str, &'static str);

const QUERY: Code = ("110112", "DCM", "Query");
const EXPORT: Code = ("110106", "DCM", "Export");
const ACCESSED: Code = ("110103", "DCM", "DICOM Instances Accessed");
const AUDIT_LOG_USED: Code = ("110101", "DCM", "Audit Log Used");
const SOURCE_ROLE: Code = ("110153", "DCM", "Source Role ID");
const DESTINATION_ROLE: Code = ("110152", "DCM", "Destination Role ID");
const STUDY_UID: Code = ("110180", "DCM", "Study Instance UID");
const SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID");
const PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number");
const URI: Code = ("12", "RFC-3881", "URI");

/// The event a row stands for, with its action code.
fn event(action: &str) -> (Code, &'static str) {
    let retrieve = ["dicomweb.wado.", "dicomweb.frames."];
    if action.ends_with(".search") || action.starts_with("dicomweb.qido.") {
        (QUERY, "E")
    } else if retrieve.iter().any(|p| action.starts_with(p)) {
        (EXPORT, "R")
    } else if action.starts_with("audit.") {
        (AUDIT_LOG_USED, "R")
    } else {
        (ACCESSED, "R")
    }
}

fn outcome(status: Option<i64>) -> &'static str {
    match status {
        Some(s) if s >= 500 => "8",
        Some(s) if s >= 400 => "4",
        _ => "0",
    }
}

fn coded(element: &str, (code, scheme, meaning): Code) -> String {
    format!(r#"<{element} csd-code="{code}" codeSystemName="{scheme}" originalText="{meaning}"/>"#)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// One row as an `AuditMessage` reported by `source_id` (the node's AE title).
pub fn message(row: &AuditRecord, source_id: &str) -> String {
    let (event_id, action_code) = event(&row.action);
    let export = event_id == EXPORT;
    let mut x = String::from("<AuditMessage>");
    x.push_str(&format!(
        r#"<EventIdentification EventActionCode="{action_code}" EventDateTime="{}" EventOutcomeIndicator="{}">{}</EventIdentification>"#,
        format_ms(row.at),
        outcome(row.status),
        coded("EventID", event_id),
    ));
    // Who asked: the principal, from its address (the port is not part of it).
    let ip = row.remote_addr.as_deref().map(|a| {
        a.rsplit_once(':')
            .map_or(a, |(h, _)| h)
            .trim_matches(['[', ']'])
    });
    let access_point = ip.map_or(String::new(), |ip| {
        format!(
            r#" NetworkAccessPointID="{}" NetworkAccessPointTypeCode="2""#,
            escape(ip)
        )
    });
    x.push_str(&format!(
        r#"<ActiveParticipant UserID="{}" AlternativeUserID="{}" UserIsRequestor="true"{access_point}>{}</ActiveParticipant>"#,
        escape(&row.principal),
        escape(&row.auth_method),
        if export { coded("RoleIDCode", DESTINATION_ROLE) } else { String::new() },
    ));
    x.push_str(&format!(
        r#"<ActiveParticipant UserID="{}" UserIsRequestor="false">{}</ActiveParticipant>"#,
        escape(source_id),
        if export {
            coded("RoleIDCode", SOURCE_ROLE)
        } else {
            String::new()
        },
    ));
    x.push_str(&format!(
        r#"<AuditSourceIdentification AuditSourceID="{}"><AuditSourceTypeCode csd-code="4"/></AuditSourceIdentification>"#,
        escape(source_id)
    ));
    // Every object carries a name (or, for a query, the query itself): PS3.15's schema
    // requires one of the two. The request id travels as a detail of each.
    let detail = row.request_id.as_deref().map_or(String::new(), |r| {
        format!(
            r#"<ParticipantObjectDetail type="RequestID" value="{}"/>"#,
            b64(r)
        )
    });
    if let Some(pid) = row.patient_id.as_deref().filter(|p| !p.is_empty()) {
        x.push_str(&format!(
            r#"<ParticipantObjectIdentification ParticipantObjectID="{p}" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">{}<ParticipantObjectName>{p}</ParticipantObjectName>{detail}</ParticipantObjectIdentification>"#,
            coded("ParticipantObjectIDTypeCode", PATIENT_NUMBER),
            p = escape(pid),
        ));
    }
    if let Some(uid) = row.study_uid.as_deref().filter(|u| !u.is_empty()) {
        x.push_str(&format!(
            r#"<ParticipantObjectIdentification ParticipantObjectID="{u}" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3">{}<ParticipantObjectName>{u}</ParticipantObjectName>{detail}<ParticipantObjectDescription><ParticipantObjectContainsStudy><StudyIDs UID="{u}"/></ParticipantObjectContainsStudy></ParticipantObjectDescription></ParticipantObjectIdentification>"#,
            coded("ParticipantObjectIDTypeCode", STUDY_UID),
            u = escape(uid),
        ));
    }
    if event_id == QUERY {
        let (id_type, id) = if row.action.starts_with("dicomweb.qido.") {
            (SOP_CLASS_UID, STUDY_ROOT_FIND.to_string())
        } else {
            (URI, row.action.clone())
        };
        x.push_str(&format!(
            r#"<ParticipantObjectIdentification ParticipantObjectID="{}" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="24">{}<ParticipantObjectQuery>{}</ParticipantObjectQuery><ParticipantObjectDetail type="QueryEncoding" value="{}"/>{detail}</ParticipantObjectIdentification>"#,
            escape(&id),
            coded("ParticipantObjectIDTypeCode", id_type),
            b64(row.query.as_deref().unwrap_or("")),
            b64("UTF-8"),
        ));
    }
    x.push_str("</AuditMessage>");
    x
}

/// Rows as one XML document: `<AuditMessages>` holding one PS3.15 `AuditMessage` per row.
pub fn document(rows: &[AuditRecord], source_id: &str) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AuditMessages count=\"{}\">\n",
        rows.len()
    );
    for r in rows {
        x.push_str(&message(r, source_id));
        x.push('\n');
    }
    x.push_str("</AuditMessages>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: &str, status: i64) -> AuditRecord {
        AuditRecord {
            id: 1,
            at: 1_795_338_000_123,
            principal: "dr <who>".into(),
            auth_method: "jwt".into(),
            action: action.into(),
            patient_id: Some("PID&1".into()),
            study_uid: Some("1.2.3".into()),
            remote_addr: Some("[::1]:5000".into()),
            request_id: Some("req".into()),
            status: Some(status),
            query: Some("PatientID=PID%261".into()),
        }
    }

    #[test]
    fn rows_map_to_events_outcomes_and_escaped_participants() {
        let q = message(&row("dicomweb.qido.studies", 200), "RADSTREAM");
        assert!(q.contains(r#"csd-code="110112""#) && q.contains(r#"EventActionCode="E""#));
        assert!(q.contains(STUDY_ROOT_FIND) && q.contains("<ParticipantObjectQuery>"));
        assert!(q.contains(r#"UserID="dr &lt;who&gt;""#), "{q}");
        assert!(q.contains(r#"ParticipantObjectID="PID&amp;1""#));
        assert!(q.contains(r#"NetworkAccessPointID="::1""#), "{q}");
        assert!(
            q.contains(r#"EventDateTime="2026-11-22T09:00:00.123Z""#),
            "{q}"
        );

        let e = message(&row("dicomweb.wado.study", 404), "RADSTREAM");
        assert!(e.contains(r#"csd-code="110106""#) && e.contains(r#"EventOutcomeIndicator="4""#));
        assert!(e.contains(r#"csd-code="110153""#) && e.contains(r#"csd-code="110152""#));
        assert!(!e.contains("<ParticipantObjectQuery>"));

        let a = message(&row("results.read", 500), "RADSTREAM");
        assert!(a.contains(r#"csd-code="110103""#) && a.contains(r#"EventOutcomeIndicator="8""#));
        assert!(message(&row("audit.read", 200), "X").contains(r#"csd-code="110101""#));
        assert!(message(&row("fhir.DiagnosticReport.search", 200), "X").contains("110112"));
        assert!(document(&[], "X").contains(r#"count="0""#));
    }
}
