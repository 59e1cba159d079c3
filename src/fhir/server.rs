//! Reads, searches, the CapabilityStatement and [`report_bundle`]: the FHIR behaviour, with
//! no HTTP in it (the routes in `api::routes::fhir` call these).

use serde_json::{json, Value};

use super::data::{self, StoredResult, StudyInfo};
use super::error::FhirError;
use super::resources::{self as res, DeviceInfo, ReportContext};
use super::search::{self, ResourceType, Search};
use super::settings::FhirSettings;
use crate::db::Database;
use crate::inference::ModelInfo;

/// What serving FHIR needs: the database, the installed models (for Device), the settings
/// and the base URL the answers name.
pub struct Fhir<'a> {
    pub db: &'a Database,
    pub models: Vec<ModelInfo>,
    pub settings: &'a FhirSettings,
    /// e.g. `http://127.0.0.1:8080/fhir`, no trailing slash.
    pub base: String,
}

/// A resource with the DICOM Patient ID it concerns (for the audit log).
pub struct Served {
    pub body: Value,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
}

/// A report version loaded with everything its resources are built from.
struct Loaded {
    stored: StoredResult,
    study: StudyInfo,
    superseded_by: Option<i64>,
}

impl Loaded {
    fn ctx<'b>(&'b self, settings: &FhirSettings) -> ReportContext<'b> {
        ReportContext {
            result: &self.stored.result,
            study: &self.study,
            configured: settings.report_status,
            superseded_by: self.superseded_by,
        }
    }

    fn patient_id(&self) -> Option<String> {
        Some(self.stored.result.metadata.patient_id.clone()).filter(|p| !p.is_empty())
    }
}

async fn load(db: &Database, result_id: i64) -> Result<Option<Loaded>, FhirError> {
    let Some(stored) = data::result(db, result_id).await? else {
        return Ok(None);
    };
    let Some(study) = data::study(db, &stored.result.study_instance_uid).await? else {
        return Ok(None);
    };
    let superseded_by = if stored.superseded() {
        data::latest_result_id(db, &study.uid).await?
    } else {
        None
    };
    Ok(Some(Loaded {
        stored,
        study,
        superseded_by,
    }))
}

/// How [`report_bundle`] packs the resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// `transaction` with an idempotent `PUT Type/id` per entry: push it to a FHIR server's
    /// base URL; sending it again updates the same resources.
    Transaction,
    /// `collection`: the same resources, no requests.
    Collection,
}

/// The DiagnosticReport of one result (its table id) with everything it references: its
/// Observations, the ImagingStudy, the Patient and the algorithm's Device. `base` becomes
/// the entries' `fullUrl` prefix. `None` when the result (or its study) does not exist.
pub async fn report_bundle(
    db: &Database,
    models: &[ModelInfo],
    settings: &FhirSettings,
    result_id: i64,
    base: &str,
    kind: BundleKind,
) -> Result<Option<Value>, FhirError> {
    let Some(loaded) = load(db, result_id).await? else {
        return Ok(None);
    };
    let ctx = loaded.ctx(settings);
    let mut resources = vec![res::diagnostic_report(&ctx)];
    resources.extend(res::observations(&ctx));
    // Pushing the current version withdraws the earlier ones at the server too: their
    // reports and observations go again, as entered-in-error, under the same ids.
    if kind == BundleKind::Transaction && loaded.superseded_by.is_none() {
        let study_uid = loaded.stored.result.study_instance_uid.as_str();
        for earlier in crate::result::store::summaries(db, Some(study_uid)).await? {
            if earlier.id == result_id || earlier.version >= loaded.stored.result.version {
                continue;
            }
            if let Some(old) = load(db, earlier.id).await? {
                let old_ctx = old.ctx(settings);
                resources.push(res::diagnostic_report(&old_ctx));
                resources.extend(res::observations(&old_ctx));
            }
        }
    }
    resources.push(res::imaging_study(&loaded.study));
    if let Some(p) = data::patient(db, loaded.study.patient_pk).await? {
        resources.push(res::patient(&p));
    }
    // Every model that ran: the measurement Observations reference theirs.
    for m in loaded.stored.result.validations() {
        let mut d = device_info(models, &m.id, &m.version, Some(&m.name));
        if !d.installed {
            d.validation_status = m.status.clone();
            d.trained_on = m.trained_on.clone();
        }
        resources.push(res::device(&d));
    }
    let base = base.trim_end_matches('/');
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let path = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            let mut e = json!({ "fullUrl": format!("{base}/{path}"), "resource": r });
            if kind == BundleKind::Transaction {
                e["request"] = json!({ "method": "PUT", "url": path });
            }
            e
        })
        .collect();
    Ok(Some(json!({
        "resourceType": "Bundle",
        "type": match kind { BundleKind::Transaction => "transaction", BundleKind::Collection => "collection" },
        "timestamp": crate::clock::format_ms(crate::clock::now_ms()),
        "entry": entries,
    })))
}

/// The Device of a model: from the installed manifest when it is installed, else from what
/// the results recorded.
fn device_info(models: &[ModelInfo], id: &str, version: &str, name: Option<&str>) -> DeviceInfo {
    match models.iter().find(|m| m.id == id && m.version == version) {
        Some(m) => DeviceInfo {
            model_id: m.id.clone(),
            version: m.version.clone(),
            name: m.name.clone(),
            manufacturer: Some(m.manufacturer.clone()),
            not_for_clinical_use: m.not_for_clinical_use,
            installed: true,
            validation_status: m.validation.status.clone(),
            trained_on: m.validation.trained_on.clone(),
            validated_on: m.validation.validated_on.clone(),
        },
        None => DeviceInfo {
            model_id: id.to_string(),
            version: version.to_string(),
            name: name.unwrap_or(id).to_string(),
            manufacturer: None,
            not_for_clinical_use: false,
            installed: false,
            validation_status: crate::inference::manifest::VALIDATION_UNKNOWN.into(),
            trained_on: String::new(),
            validated_on: String::new(),
        },
    }
}

fn page<T>(items: Vec<T>, s: &Search) -> Vec<T> {
    items.into_iter().skip(s.offset).take(s.count).collect()
}

impl Fhir<'_> {
    async fn devices(&self) -> Result<Vec<DeviceInfo>, FhirError> {
        let mut v: Vec<DeviceInfo> = self
            .models
            .iter()
            .map(|m| device_info(&self.models, &m.id, &m.version, None))
            .collect();
        for (id, version) in data::result_models(self.db).await? {
            if !v.iter().any(|d| d.model_id == id && d.version == version) {
                v.push(device_info(&self.models, &id, &version, None));
            }
        }
        v.sort_by_key(|d| res::device_id(&d.model_id, &d.version));
        Ok(v)
    }

    /// `GET /fhir/<type>/<id>`.
    pub async fn read(&self, rt: ResourceType, id: &str) -> Result<Served, FhirError> {
        let missing = || FhirError::not_found(rt.as_str(), id);
        match rt {
            ResourceType::DiagnosticReport => {
                let n = res::parse_report_id(id).ok_or_else(missing)?;
                let l = load(self.db, n).await?.ok_or_else(missing)?;
                Ok(Served {
                    body: res::diagnostic_report(&l.ctx(self.settings)),
                    patient_id: l.patient_id(),
                    study_uid: Some(l.study.uid.clone()),
                })
            }
            ResourceType::Observation => {
                let (n, segment) = res::parse_observation_id(id).ok_or_else(missing)?;
                let l = load(self.db, n).await?.ok_or_else(missing)?;
                let body = res::observation_by_segment(&l.ctx(self.settings), &segment)
                    .ok_or_else(missing)?;
                Ok(Served {
                    body,
                    patient_id: l.patient_id(),
                    study_uid: Some(l.study.uid.clone()),
                })
            }
            ResourceType::ImagingStudy => {
                let study = data::study(self.db, id).await?.ok_or_else(missing)?;
                let patient = data::patient(self.db, study.patient_pk).await?;
                Ok(Served {
                    body: res::imaging_study(&study),
                    patient_id: patient.and_then(|p| p.patient_id),
                    study_uid: Some(study.uid),
                })
            }
            ResourceType::Patient => {
                let pk = res::parse_patient_id(id).ok_or_else(missing)?;
                let p = data::patient(self.db, pk).await?.ok_or_else(missing)?;
                Ok(Served {
                    body: res::patient(&p),
                    patient_id: p.patient_id,
                    study_uid: None,
                })
            }
            ResourceType::Device => {
                let d = self
                    .devices()
                    .await?
                    .into_iter()
                    .find(|d| res::device_id(&d.model_id, &d.version) == id)
                    .ok_or_else(missing)?;
                Ok(Served {
                    body: res::device(&d),
                    patient_id: None,
                    study_uid: None,
                })
            }
        }
    }

    /// `GET /fhir/<type>?…`: a searchset Bundle with `total` and paging links.
    pub async fn search(&self, rt: ResourceType, s: &Search) -> Result<Value, FhirError> {
        let (total, resources) = if s.matches_nothing {
            (0, Vec::new())
        } else {
            match rt {
                ResourceType::DiagnosticReport => self.search_reports(s).await?,
                ResourceType::Observation => self.search_observations(s).await?,
                ResourceType::ImagingStudy => {
                    let uids =
                        data::study_uids(self.db, s.patient, s.identifier.as_deref()).await?;
                    let total = uids.len();
                    let mut v = Vec::new();
                    for uid in page(uids, s) {
                        if let Some(study) = data::study(self.db, &uid).await? {
                            v.push(res::imaging_study(&study));
                        }
                    }
                    (total, v)
                }
                ResourceType::Patient => {
                    let all = data::patients(self.db, s.identifier.as_deref()).await?;
                    let total = all.len();
                    (total, page(all, s).iter().map(res::patient).collect())
                }
                ResourceType::Device => {
                    let all = self.devices().await?;
                    let total = all.len();
                    (total, page(all, s).iter().map(res::device).collect())
                }
            }
        };
        Ok(self.searchset(rt, s, total, resources))
    }

    async fn search_reports(&self, s: &Search) -> Result<(usize, Vec<Value>), FhirError> {
        let rows = data::result_rows(self.db, s.patient, s.identifier.as_deref()).await?;
        let configured = self.settings.report_status.as_str();
        let matching: Vec<i64> = rows
            .iter()
            .filter(|r| {
                let status = if r.version < r.latest_version {
                    "entered-in-error"
                } else {
                    configured
                };
                let (_, start, end) = res::effective(r.study_date.as_deref(), r.first_received_at);
                s.status
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|x| x == status))
                    && s.dates.iter().all(|d| d.matches(start, end))
            })
            .map(|r| r.id)
            .collect();
        let total = matching.len();
        let mut v = Vec::new();
        for id in page(matching, s) {
            if let Some(l) = load(self.db, id).await? {
                v.push(res::diagnostic_report(&l.ctx(self.settings)));
            }
        }
        Ok((total, v))
    }

    async fn search_observations(&self, s: &Search) -> Result<(usize, Vec<Value>), FhirError> {
        let rows = data::result_rows(self.db, s.patient, s.derived_from.as_deref()).await?;
        let mut all = Vec::new();
        for r in rows {
            if let Some(l) = load(self.db, r.id).await? {
                all.extend(res::observations(&l.ctx(self.settings)));
            }
        }
        let total = all.len();
        Ok((total, page(all, s)))
    }

    fn link(&self, rt: ResourceType, s: &Search, offset: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &s.echo {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &s.count.to_string());
        q.append_pair("_offset", &offset.to_string());
        format!("{}/{}?{}", self.base, rt.as_str(), q.finish())
    }

    fn searchset(
        &self,
        rt: ResourceType,
        s: &Search,
        total: usize,
        resources: Vec<Value>,
    ) -> Value {
        let mut links = vec![json!({ "relation": "self", "url": self.link(rt, s, s.offset) })];
        if s.count > 0 && s.offset + s.count < total {
            links.push(json!({ "relation": "next", "url": self.link(rt, s, s.offset + s.count) }));
        }
        if s.offset > 0 {
            let prev = s.offset.saturating_sub(s.count.max(1));
            links.push(json!({ "relation": "previous", "url": self.link(rt, s, prev) }));
        }
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|r| {
                json!({
                    "fullUrl": format!(
                        "{}/{}/{}",
                        self.base,
                        r["resourceType"].as_str().unwrap_or_default(),
                        r["id"].as_str().unwrap_or_default()
                    ),
                    "resource": r,
                    "search": { "mode": "match" },
                })
            })
            .collect();
        let mut b = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "timestamp": crate::clock::format_ms(crate::clock::now_ms()),
            "total": total,
            "link": links,
        });
        if !entries.is_empty() {
            b["entry"] = json!(entries);
        }
        b
    }

    /// `GET /fhir/metadata`: exactly the interactions and search parameters served.
    pub fn capability_statement(&self) -> Value {
        let resources: Vec<Value> = ResourceType::ALL
            .iter()
            .map(|rt| {
                let params: Vec<Value> = search::params(*rt)
                    .iter()
                    .chain(search::PAGING.iter())
                    .map(|p| json!({ "name": p.name, "type": p.kind, "documentation": p.documentation }))
                    .collect();
                json!({
                    "type": rt.as_str(),
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": params,
                })
            })
            .collect();
        json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": crate::clock::format_ms(crate::clock::now_ms()),
            "publisher": "radstream",
            "kind": "instance",
            "software": { "name": "radstream", "version": env!("CARGO_PKG_VERSION") },
            "implementation": {
                "description": "radstream AI results as FHIR R4 (read-only)",
                "url": self.base,
            },
            "fhirVersion": super::FHIR_VERSION,
            "format": [super::CONTENT_TYPE, "json"],
            "rest": [{
                "mode": "server",
                "documentation": "Read-only. Errors are OperationOutcome; unknown search \
                    parameters are refused with 400.",
                "security": {
                    "description": "Every request needs a credential with scope results:read: \
                        Authorization: Bearer <JWT or API key>, or x-api-key. Refusals \
                        (401, 403, 429) use radstream's error envelope.",
                },
                "resource": resources,
            }],
        })
    }
}
