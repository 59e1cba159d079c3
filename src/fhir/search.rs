//! Search parameters: what each resource type supports (the CapabilityStatement lists exactly
//! this table), parsing a query into [`Search`], and `date` comparisons.

use super::error::FhirError;
use super::resources::parse_patient_reference;

/// The resource types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    DiagnosticReport,
    Observation,
    ImagingStudy,
    Patient,
    Device,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::DiagnosticReport,
        ResourceType::Observation,
        ResourceType::ImagingStudy,
        ResourceType::Patient,
        ResourceType::Device,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::DiagnosticReport => "DiagnosticReport",
            ResourceType::Observation => "Observation",
            ResourceType::ImagingStudy => "ImagingStudy",
            ResourceType::Patient => "Patient",
            ResourceType::Device => "Device",
        }
    }
}

/// One supported search parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    /// FHIR search parameter type.
    pub kind: &'static str,
    pub documentation: &'static str,
}

const fn p(name: &'static str, kind: &'static str, documentation: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        kind,
        documentation,
    }
}

const PATIENT: ParamSpec = p("patient", "reference", "The patient: Patient/pt-N or pt-N");
const SUBJECT: ParamSpec = p(
    "subject",
    "reference",
    "Same as patient (the subject is always a Patient)",
);
const STUDY_IDENTIFIER: ParamSpec = p(
    "identifier",
    "token",
    "The Study Instance UID: urn:dicom:uid|urn:oid:<uid>, or the UID alone",
);

const REPORT: [ParamSpec; 5] = [
    PATIENT,
    SUBJECT,
    STUDY_IDENTIFIER,
    p(
        "date",
        "date",
        "The exam date (effectiveDateTime); prefixes eq, ne, gt, lt, ge, le; repeat for a range",
    ),
    p(
        "status",
        "token",
        "final, preliminary or entered-in-error (superseded versions); comma = or",
    ),
];
const OBSERVATION: [ParamSpec; 3] = [
    PATIENT,
    SUBJECT,
    p(
        "derived-from",
        "reference",
        "The ImagingStudy: ImagingStudy/<Study Instance UID>",
    ),
];
const IMAGING_STUDY: [ParamSpec; 2] = [PATIENT, STUDY_IDENTIFIER];
const PATIENT_PARAMS: [ParamSpec; 1] = [p(
    "identifier",
    "token",
    "The DICOM Patient ID (no system), e.g. identifier=12345",
)];

/// Paging parameters, on every search.
pub const PAGING: [ParamSpec; 2] = [
    p("_count", "number", "Entries per page, 0..=500 (default 20)"),
    p(
        "_offset",
        "number",
        "Entries to skip (the next link sets it)",
    ),
];

/// The search parameters of a resource type (besides [`PAGING`]).
pub fn params(rt: ResourceType) -> &'static [ParamSpec] {
    match rt {
        ResourceType::DiagnosticReport => &REPORT,
        ResourceType::Observation => &OBSERVATION,
        ResourceType::ImagingStudy => &IMAGING_STUDY,
        ResourceType::Patient => &PATIENT_PARAMS,
        ResourceType::Device => &[],
    }
}

pub const DEFAULT_COUNT: usize = 20;
pub const MAX_COUNT: usize = 500;

/// A date search prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// `date=<prefix><value>`: the value as the epoch-ms range its precision implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParam {
    pub prefix: Prefix,
    pub start: i64,
    pub end: i64,
}

impl DateParam {
    /// Whether a target range `[start, end)` matches (FHIR's range semantics).
    pub fn matches(&self, start: i64, end: i64) -> bool {
        let eq = self.start <= start && end <= self.end;
        let gt = end > self.end;
        let lt = start < self.start;
        match self.prefix {
            Prefix::Eq => eq,
            Prefix::Ne => !eq,
            Prefix::Gt => gt,
            Prefix::Lt => lt,
            Prefix::Ge => gt || eq,
            Prefix::Le => lt || eq,
        }
    }
}

/// Parses `ge2024-01-31`, `2024`, `2024-01`, `lt2024-01-31T10:00:00Z`…
pub fn parse_date(name: &str, raw: &str) -> Result<DateParam, FhirError> {
    let (prefix, value) = match raw.get(..2) {
        Some("eq") => (Prefix::Eq, &raw[2..]),
        Some("ne") => (Prefix::Ne, &raw[2..]),
        Some("gt") => (Prefix::Gt, &raw[2..]),
        Some("lt") => (Prefix::Lt, &raw[2..]),
        Some("ge") => (Prefix::Ge, &raw[2..]),
        Some("le") => (Prefix::Le, &raw[2..]),
        Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(FhirError::invalid(
                name,
                format!("prefix '{p}' is not supported (eq, ne, gt, lt, ge, le)"),
            ))
        }
        _ => (Prefix::Eq, raw),
    };
    let bad = || {
        FhirError::invalid(
            name,
            format!("'{value}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with zone)"),
        )
    };
    let day_ms = |y: i32, m: u8, d: u8| -> Result<i64, FhirError> {
        let month = time::Month::try_from(m).map_err(|_| bad())?;
        let date = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
        Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
    };
    let num = |s: &str| -> Result<i32, FhirError> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (start, end) = match value.len() {
        4 => {
            let y = num(value)?;
            (day_ms(y, 1, 1)?, day_ms(y + 1, 1, 1)?)
        }
        7 if value.as_bytes()[4] == b'-' => {
            let y = num(&value[..4])?;
            let m = u8::try_from(num(&value[5..7])?).map_err(|_| bad())?;
            let start = day_ms(y, m, 1)?;
            let end = if m == 12 {
                day_ms(y + 1, 1, 1)?
            } else {
                day_ms(y, m + 1, 1)?
            };
            (start, end)
        }
        10 => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            let d = time::Date::parse(value, format).map_err(|_| bad())?;
            let start = d.midnight().assume_utc().unix_timestamp() * 1000;
            (start, start + 86_400_000)
        }
        _ => {
            let ms = crate::clock::parse_rfc3339_ms(value).ok_or_else(bad)?;
            // Second precision: the value names that second.
            (ms, ms + 1000)
        }
    };
    Ok(DateParam { prefix, start, end })
}

/// The DiagnosticReport status codes a `status` search may name.
const REPORT_STATUSES: [&str; 10] = [
    "registered",
    "partial",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "appended",
    "cancelled",
    "entered-in-error",
    "unknown",
];

/// A parsed search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    pub count: usize,
    pub offset: usize,
    /// Patient key from `patient`/`subject`.
    pub patient: Option<i64>,
    /// A parameter that can match nothing (a reference to something not ours, an identifier
    /// of another system): the answer is an empty page.
    pub matches_nothing: bool,
    /// Study UID (reports, studies) or Patient ID (patients) from `identifier`.
    pub identifier: Option<String>,
    pub dates: Vec<DateParam>,
    pub status: Option<Vec<String>>,
    /// Study UID from `derived-from`.
    pub derived_from: Option<String>,
    /// The query as given (minus paging), for the `self` and `next` links.
    pub echo: Vec<(String, String)>,
}

fn number(name: &str, raw: &str, max: usize) -> Result<usize, FhirError> {
    let n: usize = raw
        .parse()
        .map_err(|_| FhirError::invalid(name, format!("'{raw}' is not a non-negative integer")))?;
    if n > max {
        return Err(FhirError::invalid(name, format!("at most {max}")));
    }
    Ok(n)
}

/// The Study UID of a token `urn:dicom:uid|urn:oid:<uid>`, `|urn:oid:<uid>`, `urn:oid:<uid>`
/// or `<uid>`; `None` for another system.
fn study_token(value: &str) -> Option<String> {
    let (system, v) = match value.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, value),
    };
    if system.is_some_and(|s| !s.is_empty() && s != super::codes::DICOM_UID) {
        return None;
    }
    Some(v.strip_prefix("urn:oid:").unwrap_or(v).to_string())
}

/// Parses the query pairs of a search on `rt`. Unknown parameters (and any modifier) are
/// refused, naming the parameter; empty values are ignored, as FHIR asks.
pub fn parse(rt: ResourceType, pairs: &[(String, String)]) -> Result<Search, FhirError> {
    let mut s = Search {
        count: DEFAULT_COUNT,
        ..Search::default()
    };
    let allowed = params(rt);
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let known = allowed.iter().any(|p| p.name == name)
            || PAGING.iter().any(|p| p.name == name)
            || name == "_format";
        if !known {
            return Err(FhirError::UnknownParameter(name.clone()));
        }
        if value.is_empty() {
            continue;
        }
        if name != "date" {
            if seen.contains(&name.as_str()) {
                return Err(FhirError::invalid(name, "given more than once"));
            }
            seen.push(name);
        }
        match name.as_str() {
            "_count" => s.count = number(name, value, MAX_COUNT)?,
            "_offset" => s.offset = number(name, value, usize::MAX)?,
            "_format"
                if !matches!(
                    value.as_str(),
                    "json" | "application/json" | "application/fhir+json"
                ) =>
            {
                return Err(FhirError::invalid(name, "only json is served"));
            }
            _ => {}
        }
        if name.starts_with('_') {
            continue;
        }
        s.echo.push((name.clone(), value.clone()));
        match (rt, name.as_str()) {
            (_, "patient") | (_, "subject") => {
                if s.patient.is_some() {
                    return Err(FhirError::invalid(name, "give either patient or subject"));
                }
                match parse_patient_reference(value) {
                    Some(pk) => s.patient = Some(pk),
                    None => s.matches_nothing = true,
                }
            }
            (ResourceType::Patient, "identifier") => {
                match value.split_once('|') {
                    // Our Patient identifiers have no system.
                    Some(("", v)) => s.identifier = Some(v.to_string()),
                    Some(_) => s.matches_nothing = true,
                    None => s.identifier = Some(value.clone()),
                }
            }
            (_, "identifier") => match study_token(value) {
                Some(uid) => s.identifier = Some(uid),
                None => s.matches_nothing = true,
            },
            (_, "date") => s.dates.push(parse_date(name, value)?),
            (_, "status") => {
                let list: Vec<String> = value.split(',').map(|v| v.trim().to_string()).collect();
                if let Some(bad) = list.iter().find(|v| !REPORT_STATUSES.contains(&v.as_str())) {
                    return Err(FhirError::invalid(
                        name,
                        format!("'{bad}' is not a DiagnosticReport status"),
                    ));
                }
                s.status = Some(list);
            }
            (_, "derived-from") => match value.rsplit_once("ImagingStudy/") {
                Some((_, uid)) if !uid.is_empty() => s.derived_from = Some(uid.to_string()),
                _ => s.matches_nothing = true,
            },
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn unknown_parameters_and_modifiers_are_named() {
        for name in ["foo", "identifier:exact", "code"] {
            let e = parse(ResourceType::DiagnosticReport, &q(&[(name, "x")])).unwrap_err();
            assert!(
                matches!(&e, FhirError::UnknownParameter(n) if n == name),
                "{e}"
            );
        }
        let e = parse(ResourceType::Patient, &q(&[("date", "2024")])).unwrap_err();
        assert!(matches!(e, FhirError::UnknownParameter(n) if n == "date"));
    }

    #[test]
    fn references_and_tokens() {
        let s = parse(
            ResourceType::DiagnosticReport,
            &q(&[
                ("subject", "Patient/pt-7"),
                ("identifier", "urn:dicom:uid|urn:oid:1.2.3"),
                ("status", "final,entered-in-error"),
            ]),
        )
        .unwrap();
        assert_eq!(s.patient, Some(7));
        assert_eq!(s.identifier.as_deref(), Some("1.2.3"));
        assert_eq!(s.status.unwrap(), vec!["final", "entered-in-error"]);
        assert!(!s.matches_nothing);
        assert_eq!(s.count, DEFAULT_COUNT);

        let s = parse(ResourceType::ImagingStudy, &q(&[("identifier", "1.2.3")])).unwrap();
        assert_eq!(s.identifier.as_deref(), Some("1.2.3"));
        let s = parse(
            ResourceType::ImagingStudy,
            &q(&[("identifier", "other|1.2.3")]),
        )
        .unwrap();
        assert!(s.matches_nothing);
        let s = parse(ResourceType::Observation, &q(&[("patient", "Device/x")])).unwrap();
        assert!(s.matches_nothing);
        let s = parse(
            ResourceType::Observation,
            &q(&[("derived-from", "ImagingStudy/1.2.840.1")]),
        )
        .unwrap();
        assert_eq!(s.derived_from.as_deref(), Some("1.2.840.1"));
        let s = parse(ResourceType::Patient, &q(&[("identifier", "|PID-1")])).unwrap();
        assert_eq!(s.identifier.as_deref(), Some("PID-1"));
        let s = parse(ResourceType::Patient, &q(&[("identifier", "sys|PID-1")])).unwrap();
        assert!(s.matches_nothing);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (name, value) in [
            ("status", "done"),
            ("date", "2024-13-01"),
            ("date", "sa2024"),
            ("date", "yesterday"),
            ("_count", "-1"),
            ("_count", "501"),
            ("_offset", "x"),
            ("_format", "xml"),
        ] {
            let e = parse(ResourceType::DiagnosticReport, &q(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&e, FhirError::InvalidParameter { name: n, .. } if n == name),
                "{name}={value}: {e}"
            );
        }
        let e = parse(
            ResourceType::DiagnosticReport,
            &q(&[("patient", "pt-1"), ("patient", "pt-2")]),
        )
        .unwrap_err();
        assert!(matches!(e, FhirError::InvalidParameter { .. }));
    }

    #[test]
    fn empty_values_are_ignored_and_paging_parsed() {
        let s = parse(
            ResourceType::DiagnosticReport,
            &q(&[("patient", ""), ("_count", "5"), ("_offset", "10")]),
        )
        .unwrap();
        assert_eq!((s.patient, s.count, s.offset), (None, 5, 10));
        assert!(s.echo.is_empty());
    }

    #[test]
    fn date_ranges_follow_precision_and_prefix() {
        let day = 86_400_000;
        let jan31 = parse_date("date", "2024-01-31").unwrap();
        assert_eq!(jan31.end - jan31.start, day);
        assert_eq!(jan31.prefix, Prefix::Eq);
        let y = parse_date("date", "2024").unwrap();
        assert_eq!(y.end - y.start, 366 * day);
        let dec = parse_date("date", "2023-12").unwrap();
        assert_eq!(dec.end - dec.start, 31 * day);
        let t = parse_date("date", "ge2024-01-31T10:00:00+01:00").unwrap();
        assert_eq!(t.prefix, Prefix::Ge);
        assert_eq!(t.start, jan31.start + 9 * 3_600_000);

        // A target day (the exam date) against each prefix.
        let (s, e) = (jan31.start, jan31.end);
        let m = |raw: &str| parse_date("date", raw).unwrap().matches(s, e);
        assert!(m("2024-01-31") && m("2024-01") && m("2024"));
        assert!(!m("2024-02-01") && !m("ne2024-01-31") && m("ne2024-02"));
        assert!(m("ge2024-01-31") && m("ge2024-01-30") && !m("ge2024-02-01"));
        assert!(m("le2024-01-31") && m("le2024-02-01") && !m("le2024-01-30"));
        assert!(m("gt2024-01-30") && !m("gt2024-01-31"));
        assert!(m("lt2024-02-01") && !m("lt2024-01-31"));
    }
}
