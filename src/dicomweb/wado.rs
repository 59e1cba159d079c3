//! WADO-RS (PS3.18 10.4): instances as stored (`multipart/related; type="application/dicom"`,
//! streamed file by file), their metadata as DICOM JSON with `BulkDataURI`s, and top-level
//! bulk data values.
//!
//! Files are found through the index only (`instances.file_path` under the data folder; with
//! a bucket, fetched into it first when this node has no copy).
//! Without a `transfer-syntax` parameter (or with `*`) instances go out as stored; asked for
//! another one of [`transcode::TARGETS`], each is rewritten on the blocking pool as it is
//! sent; any other is answered 406.

use std::path::PathBuf;

use async_stream::stream;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::value::Value as DicomValue;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio_util::io::ReaderStream;

use super::json::{self as dj, tag_key};
use super::multipart::split_params;
use super::transcode;
use super::DicomWeb;
use super::{base_url, DICOM_JSON, MULTIPART_DICOM as INSTANCES, MULTIPART_OCTETS as OCTETS};
use crate::api::error::valid_uid;
use crate::api::ApiError;

/// One stored instance, from the index.
pub(super) struct Stored {
    pub(super) study: String,
    pub(super) series: String,
    pub(super) sop: String,
    pub(super) transfer_syntax: String,
    pub(super) rows: Option<i64>,
    /// Where the file is on this node; with a bucket, fetched there by [`instances`] (not by
    /// [`listed`]).
    pub(super) path: PathBuf,
    /// The path the index names (relative to the data folder; the object's key).
    pub(super) rel: String,
    /// One of the node's own outputs (SR, overlay), not a received instance.
    pub(super) derived: bool,
}

/// The stored instances a retrieve names, each with its file on this node (fetched from the
/// bucket when only there).
pub(super) async fn instances(
    state: &DicomWeb,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Vec<Stored>, ApiError> {
    let listed = listed(state, study, series, sop).await?;
    let files = &state.app.files;
    futures::stream::iter(listed.into_iter().map(|mut f| async move {
        f.path = local_copy(files, &f.rel).await?;
        Ok(f)
    }))
    .buffered(FETCH_AT_ONCE)
    .try_collect()
    .await
}

/// The stored instances a retrieve names, from the index alone (their files not fetched).
pub(super) async fn listed(
    state: &DicomWeb,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Vec<Stored>, ApiError> {
    let study = valid_uid("study", study)?;
    let series = series.map(|s| valid_uid("series", s)).transpose()?;
    let sop = sop.map(|s| valid_uid("instance", s)).transpose()?;
    let rows =
        crate::store::index::retrievable(&state.app.db, &study, series.as_deref(), sop.as_deref())
            .await?;
    if rows.is_empty() {
        let what = match (&series, &sop) {
            (_, Some(i)) => format!("Instance {i} not found"),
            (Some(s), None) => format!("Series {s} not found"),
            _ => format!("Study {study} not found"),
        };
        return Err(ApiError::not_found(what));
    }
    let files = &state.app.files;
    Ok(rows
        .into_iter()
        .map(|r| Stored {
            derived: r.is_derived(),
            path: files.absolute(std::path::Path::new(&r.file_path)),
            rel: r.file_path,
            study: r.study_uid,
            series: r.series_uid,
            sop: r.sop_instance_uid,
            transfer_syntax: r.transfer_syntax,
            rows: r.rows,
        })
        .collect())
}

/// Bytes fetched from the bucket for a header alone; most headers end well before this.
const HEADER_RANGE: u64 = 256 << 10;

/// The header (everything before Pixel Data) of an indexed file. One that is only in the
/// bucket is read with one ranged GET of its first [`HEADER_RANGE`] bytes, and fetched whole
/// only when its header is longer.
pub(super) async fn stored_header(
    files: &crate::store::FileStore,
    rel: &str,
) -> Result<dicom_object::DefaultDicomObject, ApiError> {
    let open = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            crate::dataset::open_file(&path, crate::dataset::Part::Header)
        })
        .await
        .map_err(|e| ApiError::internal("header task failed", e))
    };
    let local = files.absolute(std::path::Path::new(rel));
    let only_in_bucket =
        files.bucket().is_some() && !tokio::fs::try_exists(&local).await.unwrap_or(false);
    if only_in_bucket {
        if let Ok(prefix) = files
            .read_prefix(std::path::Path::new(rel), HEADER_RANGE)
            .await
        {
            let tmp = crate::store::objects::download_name(files.tmp_dir());
            if tokio::fs::write(&tmp, &prefix).await.is_ok() {
                let header = open(tmp.clone()).await;
                let _ = tokio::fs::remove_file(&tmp).await;
                if let Ok(Ok(obj)) = header {
                    return Ok(obj);
                }
            }
        }
    }
    let path = if only_in_bucket {
        local_copy(files, rel).await?
    } else {
        local
    };
    open(path)
        .await?
        .map_err(|e| ApiError::internal("stored file unreadable", e))
}

/// Files fetched from the bucket at once for one request.
const FETCH_AT_ONCE: usize = 8;

/// The local path of an indexed file, fetched from the bucket when this node has no copy. One
/// the bucket does not have either is answered as a missing file always was (by its reader);
/// a bucket that cannot be reached is a 503.
pub(super) async fn local_copy(
    files: &crate::store::FileStore,
    rel: &str,
) -> Result<PathBuf, ApiError> {
    let rel = std::path::Path::new(rel);
    match files.local_copy(rel).await {
        Ok(p) => Ok(p),
        Err(crate::store::FileError::Object(e)) if e.is_not_found() => Ok(files.absolute(rel)),
        Err(e) => {
            tracing::error!(file = %rel.display(), error = %e, "cannot fetch an instance from the object store");
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The object store holding the instance cannot be reached",
            );
            err.retry_after_secs = Some(5);
            Err(err)
        }
    }
}

/// Picks the transfer syntax of a retrieve of instances from Accept: `application/dicom`,
/// `multipart/related` of it, or a wildcard. `None`: each as stored (no `transfer-syntax`, or
/// `*`, or the stored one of every instance); `Some(ts)`: rewritten in `ts` where stored
/// otherwise. Ranges are taken in the order given.
fn target_syntax(headers: &HeaderMap, files: &[Stored]) -> Result<Option<String>, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let mut problem = None;
    for range in accept.split(',') {
        let params = split_params(range);
        let media = params[0].to_ascii_lowercase();
        let get = |k: &str| {
            params[1..].iter().find_map(|p| {
                p.split_once('=')
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.trim().trim_matches('"').to_string())
            })
        };
        let dicom = match media.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => {
                get("type").is_none_or(|t| t.eq_ignore_ascii_case("application/dicom"))
            }
            "application/dicom" => true,
            _ => false,
        };
        if !dicom {
            continue;
        }
        match get("transfer-syntax") {
            None => return Ok(None),
            Some(ts) if ts == "*" => return Ok(None),
            Some(ts) if files.iter().all(|f| f.transfer_syntax == ts) => return Ok(None),
            Some(ts) if transcode::can_write(&ts) => return Ok(Some(ts)),
            Some(ts) => {
                problem = Some(format!(
                    "instances can be sent as stored (transfer-syntax=*) or in {}; not in {ts}",
                    transcode::TARGETS.join(", ")
                ));
            }
        }
    }
    Err(ApiError::new(StatusCode::NOT_ACCEPTABLE, "Not acceptable").with_details(json!({
        "field": "Accept",
        "problem": problem.unwrap_or_else(|| "instances are served as multipart/related; type=\"application/dicom\"".into()),
    })))
}

/// One instance's part: the stored file streamed as it is, or its rewritten bytes.
enum Part {
    Stored(Stored),
    Rewritten { ts: String, bytes: Vec<u8> },
}

impl Part {
    fn header(&self, boundary: &str) -> Bytes {
        let ts = match self {
            Part::Stored(f) => &f.transfer_syntax,
            Part::Rewritten { ts, .. } => ts,
        };
        Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={ts}\r\n\r\n"
        ))
    }
}

/// `f` ready to send in `target` (as stored when `None` or when already in it).
async fn prepare(f: Stored, target: Option<&str>) -> Result<Part, ApiError> {
    let Some(ts) = target.filter(|&ts| ts != f.transfer_syntax) else {
        return Ok(Part::Stored(f));
    };
    let (path, want) = (f.path.clone(), ts.to_string());
    let bytes = tokio::task::spawn_blocking(move || transcode::transcode(&path, &want))
        .await
        .map_err(|e| ApiError::internal("transcoding task failed", e))?
        .map_err(|e| {
            tracing::warn!(sop_instance_uid = %f.sop, transfer_syntax = ts, error = %e, "transcoding failed");
            ApiError::new(StatusCode::NOT_ACCEPTABLE, "Not acceptable").with_details(json!({
                "field": "Accept",
                "problem": format!("instance {} (stored in {}) cannot be sent in {ts}: {e}", f.sop, f.transfer_syntax),
            }))
        })?;
    Ok(Part::Rewritten {
        ts: ts.to_string(),
        bytes,
    })
}

/// The multipart answer. The first part is prepared before the status is sent, so a
/// single-instance retrieve that cannot be transcoded still gets its 406; a later failure
/// can only end the stream (and is logged).
async fn multipart(files: Vec<Stored>, target: Option<String>) -> Result<Response, ApiError> {
    let mut files = files.into_iter();
    let first = match files.next() {
        Some(f) => Some(prepare(f, target.as_deref()).await?),
        None => None,
    };
    let boundary = format!("radstream-{}", uuid::Uuid::new_v4().simple());
    let b = boundary.clone();
    let body = stream! {
        let mut next = first;
        loop {
            let part = match next.take() {
                Some(p) => p,
                None => match files.next() {
                    None => break,
                    Some(f) => match prepare(f, target.as_deref()).await {
                        Ok(p) => p,
                        Err(_) => {
                            yield Err(std::io::Error::other("transcoding failed"));
                            return;
                        }
                    },
                },
            };
            yield Ok(part.header(&b));
            match part {
                Part::Rewritten { bytes, .. } => yield Ok(Bytes::from(bytes)),
                Part::Stored(f) => {
                    let file = match tokio::fs::File::open(&f.path).await {
                        Ok(file) => file,
                        Err(e) => {
                            tracing::error!(error = %e, sop_instance_uid = %f.sop, "stored file missing");
                            yield Err(std::io::Error::other("stored file missing"));
                            return;
                        }
                    };
                    let mut chunks = ReaderStream::with_capacity(file, 256 * 1024);
                    while let Some(c) = futures::StreamExt::next(&mut chunks).await {
                        yield c;
                    }
                }
            }
            yield Ok(Bytes::from_static(b"\r\n"));
        }
        yield Ok(Bytes::from(format!("--{b}--\r\n")));
    };
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

async fn retrieve(
    state: &DicomWeb,
    headers: &HeaderMap,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Response, ApiError> {
    let files = instances(state, study, series, sop).await?;
    let target = target_syntax(headers, &files)?;
    tracing::info!(
        study_uid = study,
        instances = files.len(),
        transfer_syntax = target.as_deref().unwrap_or("as stored"),
        "WADO-RS retrieve"
    );
    multipart(files, target).await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}", responses(
    (status = 200, description = "The study's instances as stored", body = String, content_type = INSTANCES),
))]
pub async fn study(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    retrieve(&s, &h, &study, None, None).await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}", responses(
    (status = 200, description = "The series' instances as stored", body = String, content_type = INSTANCES),
))]
pub async fn series(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    retrieve(&s, &h, &study, Some(&series), None).await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}", responses(
    (status = 200, description = "The instance as stored", body = String, content_type = INSTANCES),
))]
pub async fn instance(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    retrieve(&s, &h, &study, Some(&series), Some(&sop)).await
}

async fn metadata(
    state: &DicomWeb,
    headers: &HeaderMap,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Response, ApiError> {
    let files = listed(state, study, series, sop).await?;
    let base = base_url(&state.dicomweb, headers);
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let inst_url = format!(
            "{base}/studies/{}/series/{}/instances/{}",
            f.study, f.series, f.sop
        );
        let obj = stored_header(&state.app.files, &f.rel).await?;
        let mut m = dj::dataset(&obj, Some(&inst_url));
        if f.rows.is_some() {
            // Pixel Data was not read (header only): point to it.
            let vr = if f.transfer_syntax.starts_with("1.2.840.10008.1.2.4")
                || f.transfer_syntax == "1.2.840.10008.1.2.5"
            {
                "OB"
            } else {
                let bits = obj
                    .get(tags::BITS_ALLOCATED)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .unwrap_or(16);
                if bits > 8 {
                    "OW"
                } else {
                    "OB"
                }
            };
            m.insert(
                tag_key(tags::PIXEL_DATA),
                json!({ "vr": vr, "BulkDataURI": format!("{inst_url}/bulkdata/{}", tag_key(tags::PIXEL_DATA)) }),
            );
        }
        out.push(Value::Object(m));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        serde_json::to_vec(&out).unwrap_or_default(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/metadata", responses(
    (status = 200, description = "Metadata of each instance, with BulkDataURIs", body = Vec<Object>, content_type = DICOM_JSON),
))]
pub async fn study_metadata(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    metadata(&s, &h, &study, None, None).await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/metadata", responses(
    (status = 200, description = "Metadata of each instance, with BulkDataURIs", body = Vec<Object>, content_type = DICOM_JSON),
))]
pub async fn series_metadata(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    metadata(&s, &h, &study, Some(&series), None).await
}

#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", responses(
    (status = 200, description = "Metadata of the instance, with BulkDataURIs", body = Vec<Object>, content_type = DICOM_JSON),
))]
pub async fn instance_metadata(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    metadata(&s, &h, &study, Some(&series), Some(&sop)).await
}

/// A top-level bulk value as `multipart/related; type="application/octet-stream"`: one part,
/// or one part per fragment of encapsulated pixel data.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}", responses(
    (status = 200, description = "The value (one part per fragment for encapsulated pixel data)", body = String, content_type = OCTETS),
))]
pub async fn bulkdata(
    State(s): State<DicomWeb>,
    Path((study, series, sop, tag)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let t = (tag.len() == 8)
        .then(|| {
            Some(Tag(
                u16::from_str_radix(&tag[..4], 16).ok()?,
                u16::from_str_radix(&tag[4..], 16).ok()?,
            ))
        })
        .flatten()
        .ok_or_else(|| ApiError::invalid("tag", format!("'{tag}' is not GGGGEEEE")))?;
    let files = instances(&s, &study, Some(&series), Some(&sop)).await?;
    let path = files[0].path.clone();
    let parts = tokio::task::spawn_blocking(move || -> Result<Option<Vec<Vec<u8>>>, String> {
        let obj = crate::dataset::open_file(&path, crate::dataset::Part::Whole)
            .map_err(|e| e.to_string())?;
        let Some(elem) = obj.get(t) else {
            return Ok(None);
        };
        Ok(Some(match elem.value() {
            DicomValue::PixelSequence(seq) => seq.fragments().iter().map(|f| f.to_vec()).collect(),
            DicomValue::Primitive(p) => vec![p.to_bytes().into_owned()],
            DicomValue::Sequence(_) => return Ok(None),
        }))
    })
    .await
    .map_err(|e| ApiError::internal("bulk data task failed", e))?
    .map_err(|e| ApiError::internal("stored file unreadable", e))?
    .ok_or_else(|| ApiError::not_found(format!("No bulk data {tag} in instance {sop}")))?;
    Ok(super::multipart::related(
        "application/octet-stream",
        "application/octet-stream",
        parts,
    ))
}
