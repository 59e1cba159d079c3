//! `[export]` and `[[export.destinations]]`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::domain::Urgency;

/// `[export]`
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// Generate the SR and overlay of each result (and deliver them, when destinations exist).
    pub enabled: bool,
    /// Deliveries tried before a row is dead-lettered (a destination may override it).
    pub max_attempts: u32,
    /// Tries at building a result's SR and overlays before they are marked failed.
    pub generate_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often the workers look for due work when nothing woke them.
    pub poll_ms: u64,
    /// Seconds a claimed row stays with one worker (another node may take it afterwards).
    pub lease_secs: u64,
    /// Network time-out per delivery, in seconds.
    pub timeout_secs: u64,
    pub destinations: Vec<Destination>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            enabled: true,
            max_attempts: 10,
            generate_attempts: 5,
            retry_base_ms: 5_000,
            retry_max_ms: 600_000,
            poll_ms: 1_000,
            lease_secs: 120,
            timeout_secs: 30,
            destinations: Vec::new(),
        }
    }
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// C-STORE SCU to `ae_title`@`host`:`port`.
    Dicom,
    /// DICOMweb STOW-RS POST to `url` (`.../studies`).
    Stow,
    /// FHIR R4 transaction Bundle POSTed to the server's base `url`.
    Fhir,
    /// HL7 v2 ORU^R01 over MLLP to `host`:`port`, one message per result version.
    Hl7,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Dicom => "dicom",
            DestinationKind::Stow => "stow",
            DestinationKind::Fhir => "fhir",
            DestinationKind::Hl7 => "hl7",
        }
    }

    /// The outputs this kind can carry (and sends when `outputs` is left out).
    pub fn carries(self) -> &'static [OutputKind] {
        match self {
            DestinationKind::Dicom | DestinationKind::Stow => {
                &[OutputKind::Sr, OutputKind::Overlay, OutputKind::Seg]
            }
            DestinationKind::Fhir | DestinationKind::Hl7 => &[OutputKind::Report],
        }
    }
}

/// Which outputs a destination receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    Sr,
    Overlay,
    /// The DICOM Segmentation of the lung fields (one per image a segmentation model analysed).
    Seg,
    /// The FHIR DiagnosticReport with its Observations, ImagingStudy, Patient and Device.
    Report,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Sr => "sr",
            OutputKind::Overlay => "overlay",
            OutputKind::Seg => "seg",
            OutputKind::Report => "report",
        }
    }
}

/// One `[[export.destinations]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Unique name, shown in the outbox.
    pub name: String,
    pub kind: DestinationKind,
    /// `dicom`: the peer's AE title, host and port.
    #[serde(default)]
    pub ae_title: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// `hl7`: MSH-3/4 (default `RADSTREAM`/empty) and MSH-5/6 (default empty).
    #[serde(default)]
    pub sending_application: Option<String>,
    #[serde(default)]
    pub sending_facility: Option<String>,
    #[serde(default)]
    pub receiving_application: Option<String>,
    #[serde(default)]
    pub receiving_facility: Option<String>,
    /// `hl7`: MSH-12 (default `2.5.1`).
    #[serde(default)]
    pub version: Option<String>,
    /// `dicom`: our calling AE title (default: `dicom.ae_title`).
    #[serde(default)]
    pub calling_ae: Option<String>,
    /// `dicom`, `hl7`: TLS; the peer's certificate must chain to this PEM CA file and name
    /// `host`.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// `dicom` with `tls_ca`: our PEM certificate and private key, for mutual TLS.
    #[serde(default)]
    pub tls_certificate: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tls_private_key: Option<std::path::PathBuf>,
    /// `stow`: the STOW-RS URL, e.g. `https://pacs/dicom-web/studies`; `fhir`: the server's
    /// base URL, e.g. `https://ehr/fhir` (the transaction Bundle is POSTed there).
    #[serde(default)]
    pub url: Option<String>,
    /// `stow`, `fhir`: the whole `Authorization` header value (`Bearer ...`, `Basic ...`); never logged.
    #[serde(default, serialize_with = "redact")]
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub authorization: Option<SecretString>,
    /// `dicom`/`stow`: `sr`, `overlay` and/or `seg`; `fhir`: `report`. Empty or left out: all the
    /// kind carries.
    #[serde(default)]
    pub outputs: Vec<OutputKind>,
    /// Only studies sent by one of these calling AE titles (empty: any).
    #[serde(default)]
    pub calling_aes: Vec<String>,
    /// Only studies with one of these modalities (empty: any).
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Only results at least this urgent (`low`, `standard`, `urgent`, `critical`).
    #[serde(default)]
    pub min_urgency: Option<Urgency>,
    /// Overrides `export.max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// `dicom`: ask for Storage Commitment (PS3.4 Annex J) after each C-STORE; the export is
    /// sent only once the peer reports it committed.
    #[serde(default)]
    pub storage_commitment: bool,
}

fn redact<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

/// What routing looks at.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    pub calling_aes: Vec<String>,
    pub modalities: Vec<String>,
    pub urgency: Option<Urgency>,
}

impl Destination {
    /// Whether a result with these facts goes to this destination.
    pub fn routes(&self, f: &RouteFacts) -> bool {
        let any = |rule: &[String], facts: &[String]| {
            rule.is_empty()
                || facts
                    .iter()
                    .any(|v| rule.iter().any(|r| r.eq_ignore_ascii_case(v.trim())))
        };
        any(&self.calling_aes, &f.calling_aes)
            && any(&self.modalities, &f.modalities)
            && match (self.min_urgency, f.urgency) {
                (None, _) => true,
                (Some(min), Some(u)) => u >= min,
                (Some(_), None) => false,
            }
    }

    /// The TLS files of a `dicom` destination with `tls_ca`.
    pub fn tls_files(&self) -> Option<crate::tls::ClientTlsFiles> {
        self.tls_ca.as_ref().map(|ca| crate::tls::ClientTlsFiles {
            ca: ca.clone(),
            certificate: self.tls_certificate.clone(),
            private_key: self.tls_private_key.clone(),
        })
    }

    /// Whether this destination receives `kind` outputs.
    pub fn sends(&self, kind: OutputKind) -> bool {
        if self.outputs.is_empty() {
            self.kind.carries().contains(&kind)
        } else {
            self.outputs.contains(&kind)
        }
    }

    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_ref().map(|s| s.expose_secret())
    }
}

impl ExportSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 {
            return Err(("export.max_attempts", "must be at least 1".into()));
        }
        if self.generate_attempts == 0 {
            return Err(("export.generate_attempts", "must be at least 1".into()));
        }
        if self.lease_secs == 0 || self.timeout_secs == 0 {
            return Err((
                "export.lease_secs",
                "lease and time-out must be at least 1 second".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            if d.name.trim().is_empty() || d.name.len() > 64 {
                return Err((
                    "export.destinations.name",
                    "must be 1 to 64 characters".into(),
                ));
            }
            if !names.insert(d.name.as_str()) {
                return Err((
                    "export.destinations.name",
                    format!("'{}' is used twice", d.name),
                ));
            }
            if let Some(o) = d.outputs.iter().find(|o| !d.kind.carries().contains(o)) {
                return Err((
                    "export.destinations.outputs",
                    format!(
                        "destination '{}' of kind '{}' cannot carry '{}'",
                        d.name,
                        d.kind.as_str(),
                        o.as_str()
                    ),
                ));
            }
            if d.storage_commitment && d.kind != DestinationKind::Dicom {
                return Err((
                    "export.destinations.storage_commitment",
                    format!(
                        "destination '{}': only a dicom destination can ask for it",
                        d.name
                    ),
                ));
            }
            if d.max_attempts == Some(0) {
                return Err((
                    "export.destinations.max_attempts",
                    "must be at least 1".into(),
                ));
            }
            let ae_ok = |ae: &str| {
                !ae.trim().is_empty() && ae.len() <= 16 && ae.is_ascii() && !ae.contains('\\')
            };
            match d.kind {
                DestinationKind::Hl7 => {
                    if d.host.as_deref().is_none_or(|h| h.trim().is_empty()) {
                        return Err((
                            "export.destinations.host",
                            format!("destination '{}' needs a host", d.name),
                        ));
                    }
                    if d.port.is_none_or(|p| p == 0) {
                        return Err((
                            "export.destinations.port",
                            format!("destination '{}' needs a port", d.name),
                        ));
                    }
                    if let Some(Err(e)) = d.tls_files().map(|f| f.client_config()) {
                        return Err((
                            "export.destinations.tls_ca",
                            format!("destination '{}': {e}", d.name),
                        ));
                    }
                    let hd_ok = |v: &Option<String>| {
                        v.as_deref().is_none_or(|v| {
                            v.len() <= 227 && !v.contains(['|', '^', '~', '\\', '&', '\r'])
                        })
                    };
                    if ![
                        &d.sending_application,
                        &d.sending_facility,
                        &d.receiving_application,
                        &d.receiving_facility,
                        &d.version,
                    ]
                    .into_iter()
                    .all(hd_ok)
                    {
                        return Err((
                            "export.destinations.sending_application",
                            format!(
                                "destination '{}': MSH names may not hold HL7 delimiters",
                                d.name
                            ),
                        ));
                    }
                }
                DestinationKind::Dicom => {
                    if !d.ae_title.as_deref().is_some_and(ae_ok) {
                        return Err((
                            "export.destinations.ae_title",
                            format!(
                                "destination '{}' needs an AE title of 1 to 16 ASCII characters",
                                d.name
                            ),
                        ));
                    }
                    if d.tls_ca.is_none()
                        && (d.tls_certificate.is_some() || d.tls_private_key.is_some())
                    {
                        return Err((
                            "export.destinations.tls_ca",
                            format!(
                                "destination '{}': a client certificate needs tls_ca",
                                d.name
                            ),
                        ));
                    }
                    // Missing or unreadable files stop the node at start, not at first delivery.
                    if let Some(Err(e)) = d.tls_files().map(|f| f.client_config()) {
                        return Err((
                            "export.destinations.tls_ca",
                            format!("destination '{}': {e}", d.name),
                        ));
                    }
                    if d.calling_ae.as_deref().is_some_and(|a| !ae_ok(a)) {
                        return Err((
                            "export.destinations.calling_ae",
                            format!("destination '{}': must be 1 to 16 ASCII characters", d.name),
                        ));
                    }
                    if d.host.as_deref().is_none_or(|h| h.trim().is_empty()) {
                        return Err((
                            "export.destinations.host",
                            format!("destination '{}' needs a host", d.name),
                        ));
                    }
                    if d.port.is_none_or(|p| p == 0) {
                        return Err((
                            "export.destinations.port",
                            format!("destination '{}' needs a port", d.name),
                        ));
                    }
                }
                DestinationKind::Stow | DestinationKind::Fhir => {
                    let ok = d
                        .url
                        .as_deref()
                        .and_then(|u| url::Url::parse(u).ok())
                        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
                    if !ok {
                        return Err((
                            "export.destinations.url",
                            format!("destination '{}' needs an http(s) URL", d.name),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Delay before attempt `attempts + 1`, after `attempts` failures.
    pub fn backoff_ms(&self, attempts: i64) -> i64 {
        let exp = attempts.clamp(1, 30) - 1;
        let d = self
            .retry_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.retry_max_ms);
        i64::try_from(d).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(toml_src: &str) -> Destination {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn routing_rules() {
        let d = dest(
            "name='p'\nkind='dicom'\nae_title='PACS'\nhost='h'\nport=104\ncalling_aes=['MOD1']\nmodalities=['CR','DX']\nmin_urgency='urgent'",
        );
        let mut f = RouteFacts {
            calling_aes: vec!["MOD1".into()],
            modalities: vec!["DX".into()],
            urgency: Some(Urgency::Critical),
        };
        assert!(d.routes(&f));
        f.urgency = Some(Urgency::Standard);
        assert!(!d.routes(&f));
        f.urgency = Some(Urgency::Urgent);
        f.calling_aes = vec!["OTHER".into()];
        assert!(!d.routes(&f));
        f.calling_aes = vec!["mod1".into()];
        f.modalities = vec!["CT".into()];
        assert!(!d.routes(&f));
        let open = dest("name='o'\nkind='stow'\nurl='http://x/studies'");
        assert!(open.routes(&RouteFacts::default()));
        assert!(open.sends(OutputKind::Sr) && open.sends(OutputKind::Overlay));
        assert!(!open.sends(OutputKind::Report));
        let fhir = dest("name='f'\nkind='fhir'\nurl='http://ehr/fhir'");
        assert!(fhir.sends(OutputKind::Report) && !fhir.sends(OutputKind::Sr));
        let hl7 = dest("name='h'\nkind='hl7'\nhost='ris'\nport=2575");
        assert!(hl7.sends(OutputKind::Report) && !hl7.sends(OutputKind::Sr));
        let sr_only =
            dest("name='s'\nkind='dicom'\nae_title='P'\nhost='h'\nport=1\noutputs=['sr']");
        assert!(sr_only.sends(OutputKind::Sr) && !sr_only.sends(OutputKind::Overlay));
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = ExportSettings::default();
        s.destinations
            .push(dest("name='p'\nkind='dicom'\nhost='h'\nport=104"));
        assert_eq!(s.validate().unwrap_err().0, "export.destinations.ae_title");
        s.destinations[0] = dest("name='p'\nkind='stow'\nurl='ftp://x'");
        assert_eq!(s.validate().unwrap_err().0, "export.destinations.url");
        s.destinations[0] = dest("name='p'\nkind='fhir'\nurl='https://ehr/fhir'\noutputs=['sr']");
        let (field, problem) = s.validate().unwrap_err();
        assert_eq!(field, "export.destinations.outputs");
        assert!(problem.contains("cannot carry 'sr'"), "{problem}");
        s.destinations[0] = dest("name='p'\nkind='hl7'\nhost='ris'");
        assert_eq!(s.validate().unwrap_err().0, "export.destinations.port");
        s.destinations[0] =
            dest("name='p'\nkind='hl7'\nhost='ris'\nport=1\nsending_facility='A|B'");
        assert_eq!(
            s.validate().unwrap_err().0,
            "export.destinations.sending_application"
        );
        s.destinations[0] =
            dest("name='p'\nkind='hl7'\nhost='ris'\nport=1\nstorage_commitment=true");
        assert_eq!(
            s.validate().unwrap_err().0,
            "export.destinations.storage_commitment"
        );
        s.destinations[0] = dest("name='p'\nkind='fhir'\nurl='not a url'");
        assert_eq!(s.validate().unwrap_err().0, "export.destinations.url");
        s.destinations[0] =
            dest("name='p'\nkind='stow'\nurl='https://x/studies'\nauthorization='Bearer t'");
        s.validate().unwrap();
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("Bearer t") && shown.contains("[redacted]"));
        s.destinations[0] =
            dest("name='p'\nkind='fhir'\nurl='https://ehr/fhir'\nauthorization='Bearer f'");
        s.validate().unwrap();
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("Bearer f") && shown.contains("[redacted]"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = ExportSettings {
            retry_base_ms: 100,
            retry_max_ms: 1000,
            ..Default::default()
        };
        assert_eq!(s.backoff_ms(1), 100);
        assert_eq!(s.backoff_ms(2), 200);
        assert_eq!(s.backoff_ms(3), 400);
        assert_eq!(s.backoff_ms(10), 1000);
    }
}
