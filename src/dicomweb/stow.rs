//! STOW-RS (PS3.18 10.5): `POST /dicomweb/studies[/{study}]`.
//!
//! Each `application/dicom` part goes down the C-STORE path: its Part 10 file meta stands in
//! for the C-STORE command (SOP class, instance, transfer syntax), the data set streams into a
//! temporary file behind our own file meta, and [`Store::accept`] makes it durable and indexes
//! it. One request is one association for study completion: the study completes
//! `quiet_window_ms` after the response is ready, as after an A-RELEASE.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::json::tag_key;
use super::multipart::{parse_content_type, MultipartError, MultipartReader};
use super::DicomWeb;
use super::{base_url, DICOM_JSON};
use crate::api::ApiError;
use crate::auth::Principal;
use crate::domain::Uid;
use crate::ingest::dimse::status;
use crate::store::{FileMeta, IncomingFile, Source, StoreError, StoreOutcome};
use dicom_dictionary_std::tags;

/// The Source AE Title written into files received over STOW-RS (and their index rows).
pub const STOW_AE: &str = "STOW-RS";

/// The answer of a store.
const STORED: &str = "PS3.18 store response: ReferencedSOPSequence (and FailedSOPSequence); \
    every instance stored";

/// One part's outcome.
struct Failure {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    reason: u16,
    comment: String,
}

struct Stored {
    sop_class: String,
    sop_instance: String,
    study: String,
    series: String,
}

#[utoipa::path(post, path = "/dicomweb/studies", responses(
    (status = 200, description = STORED, body = Object, content_type = DICOM_JSON),
    (status = 202, description = "Some instances failed: FailedSOPSequence says which and why", body = Object, content_type = DICOM_JSON),
    (status = 409, description = "Every instance failed", body = Object, content_type = DICOM_JSON),
    (status = 415, description = "Not multipart/related; type=\"application/dicom\""),
    (status = 503, description = "Every instance failed for want of resources (disk full, object store unreachable); try again after Retry-After", body = Object, content_type = DICOM_JSON),
))]
pub async fn store_any(
    State(state): State<DicomWeb>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    store(state, principal, headers, None, body).await
}

#[utoipa::path(post, path = "/dicomweb/studies/{study}", responses(
    (status = 200, description = STORED, body = Object, content_type = DICOM_JSON),
    (status = 202, description = "Some instances failed: FailedSOPSequence says which and why", body = Object, content_type = DICOM_JSON),
    (status = 409, description = "Every instance failed", body = Object, content_type = DICOM_JSON),
    (status = 415, description = "Not multipart/related; type=\"application/dicom\""),
    (status = 503, description = "Every instance failed for want of resources (disk full, object store unreachable); try again after Retry-After", body = Object, content_type = DICOM_JSON),
))]
pub async fn store_study(
    State(state): State<DicomWeb>,
    principal: Principal,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let study = crate::api::error::valid_uid("study", &study)?;
    store(state, principal, headers, Some(study), body).await
}

fn unsupported(problem: String) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("Unsupported Content-Type: {problem}"),
    )
    .with_details(json!({ "field": "Content-Type", "problem": problem }))
}

async fn store(
    state: DicomWeb,
    principal: Principal,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unsupported("missing; send multipart/related; type=\"application/dicom\"".into())
        })?;
    let related = parse_content_type(ct).map_err(unsupported)?;
    match related.root_type.as_deref() {
        None | Some("application/dicom") => {}
        Some(other) => {
            return Err(unsupported(format!(
                "type=\"{other}\" is not supported; only type=\"application/dicom\" is"
            )))
        }
    }
    let association_id = format!("stow-{}", uuid::Uuid::new_v4().simple());
    let base = base_url(&state.dicomweb, &headers);
    let limit = state.app.http_limits.max_body_bytes;
    let mut reader = MultipartReader::new(body.into_data_stream(), &related.boundary, limit);
    let mut stored: Vec<Stored> = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    let outcome = async {
        while let Some(part) = reader.next_part().await? {
            let part_type = part.get("content-type").map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
            if let Some(t) = part_type.filter(|t| t != "application/dicom") {
                failed.push(Failure {
                    sop_class: None,
                    sop_instance: None,
                    reason: status::CANNOT_UNDERSTAND,
                    comment: format!("part of type {t} is not application/dicom"),
                });
                continue;
            }
            match store_part(&state, &mut reader, study.as_deref(), &association_id).await? {
                Ok(s) => stored.push(s),
                Err(f) => failed.push(f),
            }
        }
        Ok::<_, MultipartError>(())
    }
    .await;
    // The request is over whatever happened: the "association" is released.
    state.app.tracker.association_ended(&association_id, true);
    match outcome {
        Ok(()) => {}
        Err(MultipartError::TooLarge(max)) => {
            tracing::warn!(stored = stored.len(), "STOW-RS body over the size limit");
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                .with_details(json!({
                    "max_body_bytes": max,
                    "stored_before_the_limit": stored.iter().map(|s| &s.sop_instance).collect::<Vec<_>>(),
                })));
        }
        Err(e) => {
            tracing::warn!(error = %e, stored = stored.len(), "STOW-RS body unreadable");
            return Err(ApiError::invalid("body", e.to_string()).with_details(json!({
                "field": "body",
                "problem": e.to_string(),
                "stored_before_the_error": stored.iter().map(|s| &s.sop_instance).collect::<Vec<_>>(),
            })));
        }
    }
    if stored.is_empty() && failed.is_empty() {
        return Err(ApiError::invalid("body", "the multipart body has no parts"));
    }
    for f in &failed {
        state
            .dicomweb
            .store
            .record_failure(
                f.sop_instance.as_deref(),
                f.sop_class.as_deref(),
                STOW_AE,
                f.reason,
                &f.comment,
            )
            .await;
    }
    tracing::info!(
        association_id,
        subject = %principal.subject,
        stored = stored.len(),
        failed = failed.len(),
        "STOW-RS request done"
    );
    Ok(response(&base, study.as_deref(), &stored, &failed))
}

fn response(base: &str, study: Option<&str>, stored: &[Stored], failed: &[Failure]) -> Response {
    // Nothing stored for want of resources alone (a full disk, an unreachable object store):
    // the server's trouble, and worth trying again, not a conflict in what was sent.
    let unavailable = stored.is_empty()
        && !failed.is_empty()
        && failed
            .iter()
            .all(|f| f.reason & 0xFF00 == status::OUT_OF_RESOURCES);
    let code = if failed.is_empty() {
        StatusCode::OK
    } else if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else if stored.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = serde_json::Map::new();
    let study_url = study
        .or_else(|| stored.first().map(|s| s.study.as_str()))
        .filter(|s| stored.iter().all(|x| x.study == *s))
        .map(|s| format!("{base}/studies/{s}"));
    if let Some(u) = study_url {
        body.insert(tag_key(tags::RETRIEVE_URL), json!({"vr":"UR","Value":[u]}));
    }
    if !stored.is_empty() {
        let items: Vec<Value> = stored
            .iter()
            .map(|s| {
                json!({
                    "00081150": {"vr":"UI","Value":[s.sop_class]},
                    "00081155": {"vr":"UI","Value":[s.sop_instance]},
                    "00081190": {"vr":"UR","Value":[format!(
                        "{base}/studies/{}/series/{}/instances/{}", s.study, s.series, s.sop_instance)]},
                })
            })
            .collect();
        body.insert(
            tag_key(tags::REFERENCED_SOP_SEQUENCE),
            json!({"vr":"SQ","Value":items}),
        );
    }
    if !failed.is_empty() {
        let items: Vec<Value> = failed
            .iter()
            .map(|f| {
                let mut m = serde_json::Map::new();
                let ui = |v: &Option<String>| match v {
                    Some(v) => json!({"vr":"UI","Value":[v]}),
                    None => json!({"vr":"UI"}),
                };
                m.insert("00081150".into(), ui(&f.sop_class));
                m.insert("00081155".into(), ui(&f.sop_instance));
                m.insert("00081197".into(), json!({"vr":"US","Value":[f.reason]}));
                Value::Object(m)
            })
            .collect();
        for f in failed {
            tracing::warn!(status = format!("{:04X}", f.reason), reason = %f.comment,
                sop_instance_uid = f.sop_instance.as_deref().unwrap_or("?"), "STOW-RS part refused");
        }
        body.insert(
            tag_key(tags::FAILED_SOP_SEQUENCE),
            json!({"vr":"SQ","Value":items}),
        );
    }
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    )
        .into_response();
    if unavailable {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    resp
}

/// Reads one part into the store. The outer error stops the whole body; the inner one is
/// this part's failure.
async fn store_part<S, E>(
    state: &DicomWeb,
    reader: &mut MultipartReader<S>,
    study: Option<&str>,
    association_id: &str,
) -> Result<Result<Stored, Failure>, MultipartError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let dw = &state.dicomweb;
    // Collect the preamble and file meta group, read leniently (odd lengths, a missing
    // transfer syntax); the store writes a correct meta group of its own.
    let mut head: Vec<u8> = Vec::new();
    let meta = loop {
        match crate::dataset::meta::read(&head) {
            Ok(Some(meta)) => break meta,
            Ok(None) => {}
            Err(problem) => {
                skip(reader).await?;
                return Ok(Err(fail(
                    None,
                    None,
                    status::CANNOT_UNDERSTAND,
                    problem.to_string(),
                )));
            }
        }
        match reader.chunk().await? {
            Some(c) => head.extend_from_slice(&c),
            None => {
                return Ok(Err(fail(
                    None,
                    None,
                    status::CANNOT_UNDERSTAND,
                    "the part ends before its DICOM file meta group does".into(),
                )))
            }
        }
    };
    let meta_end = meta.data_set_offset;
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let class = trim(meta.sop_class_uid.as_deref().unwrap_or_default());
    let sop = trim(meta.sop_instance_uid.as_deref().unwrap_or_default());
    let ts = trim(meta.transfer_syntax.as_deref().unwrap_or_default());
    let (class_o, sop_o) = (Some(class.clone()), Some(sop.clone()));
    let checks = || -> Result<(), (u16, String)> {
        Uid::parse("MediaStorageSOPClassUID", &class)
            .map_err(|e| (status::DATA_SET_MISMATCH, e.to_string()))?;
        Uid::parse("MediaStorageSOPInstanceUID", &sop)
            .map_err(|e| (status::DATA_SET_MISMATCH, e.to_string()))?;
        if !dw.abstract_syntaxes.contains(&class) {
            return Err((
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {class} is not accepted"),
            ));
        }
        if !dw.transfer_syntaxes.contains(&ts.as_str()) {
            return Err((
                status::CANNOT_UNDERSTAND,
                format!("transfer syntax {ts} cannot be read"),
            ));
        }
        dw.store
            .check_room()
            .map_err(|e| (status::OUT_OF_RESOURCES, e.to_string()))
    };
    if let Err((st, comment)) = checks() {
        skip(reader).await?;
        return Ok(Err(fail(class_o, sop_o, st, comment)));
    }
    let file_meta = FileMeta {
        sop_class_uid: class.clone(),
        sop_instance_uid: sop.clone(),
        transfer_syntax: ts,
        source_ae: STOW_AE.into(),
        receiving_ae: state.app.ae_title.clone(),
    };
    // Claimed before the upload so the index lookup overlaps it.
    let reservation = dw.store.reserve(&file_meta.sop_instance_uid).await;
    let mut file: IncomingFile = match dw.store.files.begin(&file_meta).await {
        Ok(f) => f,
        Err(e) => {
            skip(reader).await?;
            return Ok(Err(fail(
                class_o,
                sop_o,
                status::OUT_OF_RESOURCES,
                e.to_string(),
            )));
        }
    };
    let mut write_error = None;
    let mut pending = Some(Bytes::copy_from_slice(&head[meta_end..]));
    loop {
        let chunk = match pending.take() {
            Some(c) => c,
            None => match reader.chunk().await? {
                Some(c) => c,
                None => break,
            },
        };
        if write_error.is_none() && !chunk.is_empty() {
            if let Err(e) = file.write(&chunk).await {
                write_error = Some(e.to_string());
            }
        }
    }
    if let Some(e) = write_error {
        return Ok(Err(fail(class_o, sop_o, status::OUT_OF_RESOURCES, e)));
    }
    let size = file.len();
    let source = Source {
        calling_ae: STOW_AE,
        association_id,
        expected_study: study,
    };
    match dw
        .store
        .accept(reservation, file, &file_meta, &source)
        .await
    {
        Ok(outcome) => {
            let (study_uid, series) = match &outcome {
                StoreOutcome::Stored(o) => {
                    state
                        .app
                        .tracker
                        .instance_stored(&o.study_uid, association_id);
                    (o.study_uid.clone(), None)
                }
                StoreOutcome::DuplicateKept { study_uid } => (study_uid.clone(), None::<String>),
            };
            state.app.metrics.instance_stored(size);
            let series = match series {
                Some(s) => s,
                None => series_of(state, &sop).await.unwrap_or_default(),
            };
            tracing::debug!(study_uid, sop_instance_uid = %sop, "stored over STOW-RS");
            Ok(Ok(Stored {
                sop_class: class,
                sop_instance: sop,
                study: study_uid,
                series,
            }))
        }
        Err(e) => {
            let st = match &e {
                StoreError::Resources(_) => status::OUT_OF_RESOURCES,
                StoreError::Mismatch(_) => status::DATA_SET_MISMATCH,
                StoreError::Unparseable(_) => status::CANNOT_UNDERSTAND,
            };
            state.app.metrics.store_failed(st);
            Ok(Err(fail(class_o, sop_o, st, e.to_string())))
        }
    }
}

async fn series_of(state: &DicomWeb, sop: &str) -> Option<String> {
    crate::store::index::find_instance(&state.app.db, sop)
        .await
        .ok()
        .flatten()
        .map(|f| f.series_uid)
}

fn fail(
    sop_class: Option<String>,
    sop_instance: Option<String>,
    reason: u16,
    comment: String,
) -> Failure {
    Failure {
        sop_class,
        sop_instance,
        reason,
        comment,
    }
}

async fn skip<S, E>(reader: &mut MultipartReader<S>) -> Result<(), MultipartError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while reader.chunk().await?.is_some() {}
    Ok(())
}
