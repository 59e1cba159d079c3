//! ORU^R01 (HL7 v2.5.1) from a result's FHIR resources, so the message carries exactly the
//! codes, values and statuses the FHIR push and the SR carry.
//!
//! Segments: MSH, PID, PV1, ORC, OBR, NTE (disclaimer, then each model's validation status),
//! one OBX per finding (CWE: Present/Absent, the probability in OBX-9, abnormal flag `A` when
//! present, `N` when absent; OBX-3 the finding's SNOMED CT code), one OBX per measurement (NM with its
//! UCUM unit), and one OBX with the triage urgency (CWE, local code system `99RSURG`).
//! Result status (OBR-25, OBX-11): `F`, or `P` when `[fhir] report_status = "preliminary"`,
//! `C` for a version that supersedes an earlier one.

use serde_json::Value;

/// MSH-3..6 and MSH-12 of a destination.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub version: String,
}

/// What the DICOM header says about the order and the visit (not in the FHIR resources).
#[derive(Debug, Clone, Default)]
pub struct OrderFacts {
    pub accession_number: Option<String>,
    /// DICOM PN.
    pub referring_physician: Option<String>,
    pub study_description: Option<String>,
    pub patient_id: Option<String>,
    /// DICOM PN.
    pub patient_name: Option<String>,
    /// DICOM DA.
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    /// The result version (1 for the first): a later one supersedes (corrects) the earlier.
    pub result_version: i64,
    pub study_uid: String,
}

/// Escapes field content (HL7 v2 §2.7.4): the delimiters `| ^ ~ \ &` become `\F\ \S\ \R\
/// \E\ \T\`; line breaks become `\.br\`; other control characters are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            '\n' => out.push_str("\\.br\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A DICOM PN (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`, alphabetic group only) as an XPN/XCN
/// value: each component escaped, joined with `^`.
fn person_name(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or_default();
    alphabetic
        .split('^')
        .map(|c| escape(c.trim()))
        .collect::<Vec<_>>()
        .join("^")
        .trim_end_matches('^')
        .to_string()
}

/// An RFC 3339 time as HL7 DTM (`YYYYMMDDHHMMSS+ZZZZ`); a date alone (`YYYY-MM-DD`) as
/// `YYYYMMDD`.
fn dtm(rfc3339: &str) -> String {
    if rfc3339.len() == 10 && rfc3339.as_bytes().get(4) == Some(&b'-') {
        return rfc3339.replace('-', "");
    }
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day][hour][minute][second][offset_hour sign:mandatory][offset_minute]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// A coding as CWE: `code^display^system`, the system as HL7 table 0396 names it.
fn cwe(coding: &Value) -> String {
    let system = match coding["system"].as_str().unwrap_or_default() {
        "http://snomed.info/sct" => "SCT".to_string(),
        "http://loinc.org" => "LN".to_string(),
        "http://dicom.nema.org/resources/ontology/DCM" => "DCM".to_string(),
        "http://unitsofmeasure.org" => "UCUM".to_string(),
        // Our own code systems (measurement keys): local, as table 0396 asks (99zzz).
        _ => "99RSMEAS".to_string(),
    };
    format!(
        "{}^{}^{}",
        escape(coding["code"].as_str().unwrap_or_default()),
        escape(coding["display"].as_str().unwrap_or_default()),
        system
    )
}

/// The coding of a CodeableConcept to send: the first standard one (SNOMED CT, LOINC, DCM),
/// else the first.
fn best_coding(concept: &Value) -> Option<&Value> {
    let codings = concept["coding"].as_array()?;
    codings
        .iter()
        .find(|c| {
            matches!(
                c["system"].as_str(),
                Some(
                    "http://snomed.info/sct"
                        | "http://loinc.org"
                        | "http://dicom.nema.org/resources/ontology/DCM"
                )
            )
        })
        .or_else(|| codings.first())
}

fn number(v: &Value) -> String {
    v.as_f64().map(|f| format!("{f}")).unwrap_or_default()
}

/// Builds the message; `control_id` goes in MSH-10 (and comes back in MSA-2), `now` in
/// MSH-7 (RFC 3339). `None` when the Bundle holds no DiagnosticReport.
pub fn oru_r01(
    bundle: &Value,
    order: &OrderFacts,
    env: &Envelope,
    control_id: &str,
    now: &str,
    preliminary: bool,
) -> Option<String> {
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let of = |t: &'static str| {
        resources
            .iter()
            .copied()
            .filter(move |r| r["resourceType"] == t)
    };
    let report = of("DiagnosticReport").next()?;
    let status = if order.result_version > 1 {
        "C"
    } else if preliminary {
        "P"
    } else {
        "F"
    };
    let text = |v: Option<&str>| escape(v.unwrap_or_default().trim());
    let mut segs: Vec<String> = Vec::new();
    segs.push(format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ORU^R01^ORU_R01|{}|P|{}|||AL|NE",
        escape(&env.sending_application),
        escape(&env.sending_facility),
        escape(&env.receiving_application),
        escape(&env.receiving_facility),
        dtm(now),
        escape(control_id),
        escape(&env.version),
    ));
    let sex = match order.patient_sex.as_deref().map(str::trim) {
        Some("F") => "F",
        Some("M") => "M",
        Some("O") => "O",
        _ => "U",
    };
    let birth = order
        .patient_birth_date
        .as_deref()
        .map(str::trim)
        .filter(|d| d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_default();
    segs.push(format!(
        "PID|1||{}^^^^MR||{}||{}|{}",
        text(order.patient_id.as_deref()),
        person_name(order.patient_name.as_deref().unwrap_or_default()),
        birth,
        sex
    ));
    let referrer = order
        .referring_physician
        .as_deref()
        .map(|pn| format!("^{}", person_name(pn)))
        .filter(|s| s != "^")
        .unwrap_or_default();
    // Patient class U (unknown): the DICOM header does not say.
    segs.push(format!("PV1|1|U||||||{referrer}"));
    let accession = text(order.accession_number.as_deref());
    let filler = format!(
        "{}^{}",
        escape(&order.study_uid),
        escape(&env.sending_application)
    );
    let placer = if accession.is_empty() {
        String::new()
    } else {
        format!("{accession}^{}", escape(&env.receiving_application))
    };
    // ORC-1 RE: observations to follow; ORC-5 CM: order complete.
    segs.push(format!("ORC|RE|{placer}|{filler}||CM"));
    let exam = best_coding(&report["code"]).map(cwe).unwrap_or_else(|| {
        format!(
            "{}^{}^99RSEXAM",
            "EXAM",
            text(
                order
                    .study_description
                    .as_deref()
                    .or(report["code"]["text"].as_str())
            )
        )
    });
    let effective = dtm(report["effectiveDateTime"].as_str().unwrap_or_default());
    let issued = dtm(report["issued"].as_str().unwrap_or_default());
    segs.push(format!(
        "OBR|1|{placer}|{filler}|{exam}|||{effective}|||||||||{referrer}||{accession}||||{issued}||RAD|{status}"
    ));
    let mut notes: Vec<String> = vec![
        "AI result, unverified: not a diagnosis. To be read by a physician with the images."
            .to_string(),
    ];
    for d in of("Device") {
        for n in d["note"].as_array().into_iter().flatten() {
            if let Some(t) = n["text"].as_str() {
                let name = d["deviceName"][0]["name"].as_str().unwrap_or("model");
                notes.push(format!("{name}: {t}"));
            }
        }
    }
    for (i, n) in notes.iter().enumerate() {
        segs.push(format!("NTE|{}|L|{}", i + 1, escape(n)));
    }
    let device = report["performer"][0]["identifier"]["value"]
        .as_str()
        .unwrap_or_default();
    let mut set_id = 0;
    for obs in of("Observation") {
        set_id += 1;
        let code = best_coding(&obs["code"]).map(cwe).unwrap_or_default();
        let equipment = obs["device"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("Device/"))
            .unwrap_or(device);
        let segment = if let Some(presence) = obs["valueCodeableConcept"]["coding"].get(0) {
            // A finding: Present/Absent, flagged abnormal when present, with the probability
            // in OBX-9 (the probability of a categorical result being true).
            let present = presence["code"] == "52101004";
            let probability = number(&obs["component"][0]["valueQuantity"]["value"]);
            format!(
                "OBX|{set_id}|CWE|{code}||{}|||{}|{probability}||{status}|||{effective}||||{}",
                cwe(presence),
                if present { "A" } else { "N" },
                escape(equipment)
            )
        } else {
            let q = &obs["valueQuantity"];
            let unit = q["code"].as_str().unwrap_or_default();
            format!(
                "OBX|{set_id}|NM|{code}||{}|{}^{}^UCUM|||||{status}|||{effective}||||{}",
                number(&q["value"]),
                escape(unit),
                escape(unit),
                escape(equipment)
            )
        };
        segs.push(segment);
    }
    let urgency = report["conclusion"]
        .as_str()
        .and_then(|c| c.strip_prefix("Urgency: "))
        .and_then(|c| c.split('.').next())
        .unwrap_or_default();
    set_id += 1;
    segs.push(format!(
        "OBX|{set_id}|CWE|URGENCY^AI triage urgency^99RSURG||{u}^{u}^99RSURG||||||{status}|||{effective}||||{}",
        escape(device),
        u = escape(urgency),
    ));
    Some(segs.join("\r") + "\r")
}

/// What an ACK said (MSA-1, MSA-2, MSA-3 or ERR-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `AA`, `AE` or `AR` (or the `C` forms of enhanced mode).
    pub code: String,
    pub control_id: String,
    pub text: String,
}

/// Reads the MSA (and ERR) of an ACK; `None` when there is no MSA.
pub fn parse_ack(message: &str) -> Option<Ack> {
    let segments: Vec<&str> = message.split(['\r', '\n']).collect();
    let field_sep = segments
        .iter()
        .find(|s| s.starts_with("MSH"))
        .and_then(|s| s.chars().nth(3))
        .unwrap_or('|');
    let msa: Vec<&str> = segments
        .iter()
        .find(|s| s.starts_with("MSA"))?
        .split(field_sep)
        .collect();
    let err_text = segments
        .iter()
        .find(|s| s.starts_with("ERR"))
        .and_then(|s| s.split(field_sep).nth(8).map(str::to_string))
        .filter(|t| !t.is_empty());
    let text = msa
        .get(3)
        .map(|s| s.to_string())
        .filter(|t| !t.is_empty())
        .or(err_text)
        .unwrap_or_default();
    Some(Ack {
        code: msa.get(1).unwrap_or(&"").to_string(),
        control_id: msa.get(2).unwrap_or(&"").to_string(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delimiters_are_escaped() {
        assert_eq!(escape("a|b^c~d\\e&f"), "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f");
        assert_eq!(escape("x\ny\u{7}"), "x\\.br\\y");
        assert_eq!(person_name("O'NEIL^MARY&ANN^^"), "O'NEIL^MARY\\T\\ANN");
    }

    #[test]
    fn acks_are_read() {
        let ack = "MSH|^~\\&|R|F|S|F|20260101||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|ctl-1|bad PID\r";
        let a = parse_ack(ack).unwrap();
        assert_eq!(
            (a.code.as_str(), a.control_id.as_str(), a.text.as_str()),
            ("AE", "ctl-1", "bad PID")
        );
        let err = "MSH|^~\\&|R\rMSA|AR|c\rERR|||207^Application internal error^HL70357|E||||rejected here\r";
        assert_eq!(parse_ack(err).unwrap().text, "rejected here");
        assert!(parse_ack("MSH|^~\\&|R\r").is_none());
    }

    #[test]
    fn a_superseding_version_is_a_correction() {
        let bundle = json!({"entry": [{"resource": {
            "resourceType": "DiagnosticReport",
            "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]},
            "effectiveDateTime": "2026-11-22T12:00:00Z", "issued": "2026-11-22T12:01:00Z",
            "conclusion": "Urgency: critical. Findings present.",
            "performer": [{"identifier": {"value": "cxr-demo"}}]}}]});
        let env = Envelope {
            sending_application: "RADSTREAM".into(),
            sending_facility: "AI".into(),
            receiving_application: "RIS".into(),
            receiving_facility: "HOSP".into(),
            version: "2.5.1".into(),
        };
        let mut order = OrderFacts {
            result_version: 1,
            accession_number: Some("A|1".into()),
            study_uid: "1.2.3".into(),
            ..Default::default()
        };
        let first = oru_r01(&bundle, &order, &env, "c1", "2026-11-22T12:02:00Z", false).unwrap();
        assert!(first.contains("|RAD|F\r"), "{first}");
        assert!(
            first.contains("ORC|RE|A\\F\\1^RIS|1.2.3^RADSTREAM||CM"),
            "{first}"
        );
        assert!(first.contains("36643-5^XR Chest 2 Views^LN"), "{first}");
        assert!(first.contains("critical^critical^99RSURG"), "{first}");
        order.result_version = 2;
        let second = oru_r01(&bundle, &order, &env, "c2", "2026-11-22T12:02:00Z", true).unwrap();
        assert!(second.contains("|RAD|C\r"), "{second}");
    }
}
