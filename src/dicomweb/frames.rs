//! WADO-RS pixel resources (PS3.18 10.4): `/frames/{list}` (as stored, or uncompressed),
//! `/rendered` and `/thumbnail` (JPEG or PNG). Decoding and encoding run on the blocking
//! pool; the pixel work itself is in [`super::pixels`].

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::VoiLutFunction;
use serde_json::json;

use super::multipart::split_params;
use super::pixels::{self, ImageFormat, PixelError, RenderParams};
use super::wado::{instances, Stored};
use super::DicomWeb;
use super::MULTIPART_OCTETS as OCTETS;
use crate::api::ApiError;

/// Frames are native `application/octet-stream` in Explicit VR Little Endian.
/// A rendered image.
const RENDERED: &str = "8-bit image (image/jpeg, or image/png per Accept). Query: \
    `window=center,width,linear|sigmoid` (default the stored window, else min/max), \
    `viewport=vw,vh` (fit, aspect kept), `quality=1..100` (JPEG)";

/// A thumbnail.
const THUMBNAIL: &str = "Like rendered, fitted into 128x128 unless `viewport` says otherwise";

const NATIVE_TS: &str = "1.2.840.10008.1.2.1";
/// Default bounding box of a thumbnail when no `viewport` is given.
const THUMBNAIL_SIZE: u32 = 128;
/// Largest viewport side accepted (bounds the memory a request can make us use).
const MAX_VIEWPORT: u32 = 8192;

fn not_acceptable(problem: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_ACCEPTABLE, "Not acceptable")
        .with_details(json!({ "field": "Accept", "problem": problem.into() }))
}

fn pixel_error(e: PixelError, field: &str) -> ApiError {
    match e {
        PixelError::NoPixelData | PixelError::OutOfRange(..) => {
            ApiError::invalid(field, e.to_string())
        }
        PixelError::Fragments(_) | PixelError::Decode(_) | PixelError::Encode(_) => {
            ApiError::internal("pixel data could not be processed", e)
        }
    }
}

async fn open(path: std::path::PathBuf) -> Result<DefaultDicomObject, ApiError> {
    tokio::task::spawn_blocking(move || {
        crate::dataset::open_file(&path, crate::dataset::Part::Whole)
    })
    .await
    .map_err(|e| ApiError::internal("pixel task failed", e))?
    .map_err(|e| ApiError::internal("stored file unreadable", e))
}

/// How frames are sent.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// The stored bytes, with the stored media type.
    AsStored,
    /// Decoded to native little endian (`application/octet-stream`).
    Native,
}

/// Picks the frames' representation from Accept (PS3.18 8.7.3): `*/*` (or none) is as
/// stored; `application/octet-stream` is uncompressed (decoded if stored compressed, as
/// stored with `transfer-syntax=*`); a compressed image type only if it is the stored one.
fn frames_delivery(headers: &HeaderMap, ts: &str) -> Result<Delivery, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Delivery::AsStored);
    };
    let stored_media = pixels::compressed_media_type(ts);
    for range in accept.split(',') {
        let params = split_params(range);
        let get = |k: &str| {
            params[1..].iter().find_map(|p| {
                p.split_once('=')
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
            })
        };
        let mut media = params[0].trim().to_ascii_lowercase();
        if media == "multipart/related" {
            media = get("type").unwrap_or_else(|| "*/*".into());
        }
        let want_ts = get("transfer-syntax");
        match media.as_str() {
            "*/*" | "multipart/*" => return Ok(Delivery::AsStored),
            "application/octet-stream" => match want_ts.as_deref() {
                None | Some(NATIVE_TS) => {
                    return Ok(if stored_media.is_some() {
                        Delivery::Native
                    } else {
                        Delivery::AsStored
                    })
                }
                Some("*") => return Ok(Delivery::AsStored),
                Some(_) => continue,
            },
            m if (Some(m) == stored_media || (m == "image/*" && stored_media.is_some()))
                && want_ts.as_deref().is_none_or(|t| t == "*" || t == ts) =>
            {
                return Ok(Delivery::AsStored)
            }
            _ => {}
        }
    }
    Err(not_acceptable(format!(
        "frames of this instance are available as {} (transfer syntax {ts}){}; frames are not re-encoded in another compressed syntax",
        pixels::compressed_media_type(ts).unwrap_or("application/octet-stream"),
        if pixels::compressed_media_type(ts).is_some() {
            " or application/octet-stream (decoded)"
        } else {
            ""
        }
    )))
}

/// `GET …/instances/{instance}/frames/{list}`: one part per frame, in the order asked for.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", responses(
    (status = 200, description = "One part per frame (1-based comma list): as stored \
        (application/octet-stream for native, the compressed media type such as image/jp2 or \
        image/dicom-rle for encapsulated), or decoded with Accept application/octet-stream", body = String, content_type = OCTETS),
    (status = 406, description = "The frames cannot be sent in an accepted media type"),
))]
pub async fn frames(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let wanted = pixels::parse_frame_list(&list).map_err(|p| ApiError::invalid("frames", p))?;
    let f = instances(&s, &study, Some(&series), Some(&sop))
        .await?
        .remove(0);
    if f.rows.is_none() {
        return Err(ApiError::invalid(
            "frames",
            format!("instance {} has no pixel data", f.sop),
        ));
    }
    let delivery = frames_delivery(&h, &f.transfer_syntax)?;
    let (media, ts) = match (&delivery, pixels::compressed_media_type(&f.transfer_syntax)) {
        (Delivery::AsStored, Some(m)) => (m, f.transfer_syntax.clone()),
        _ => ("application/octet-stream", NATIVE_TS.to_string()),
    };
    let obj = open(f.path.clone()).await?;
    let w = wanted.clone();
    let parts = tokio::task::spawn_blocking(move || match delivery {
        Delivery::AsStored => pixels::stored_frames(&obj, &w),
        Delivery::Native => pixels::decoded_frames(&obj, &w),
    })
    .await
    .map_err(|e| ApiError::internal("frames task failed", e))?
    .map_err(|e| pixel_error(e, "frames"))?;
    tracing::info!(study_uid = %f.study, sop_instance_uid = %f.sop, frames = parts.len(), media, "WADO-RS frames");
    Ok(super::multipart::related(
        media,
        &format!("{media}; transfer-syntax={ts}"),
        parts,
    ))
}

/// Rendered media type from Accept: JPEG unless PNG is preferred; 406 otherwise.
fn image_format(headers: &HeaderMap) -> Result<ImageFormat, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(ImageFormat::Jpeg);
    };
    for range in accept.split(',') {
        let params = split_params(range);
        match params[0].trim().to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/*" | "*/*" => return Ok(ImageFormat::Jpeg),
            "image/png" => return Ok(ImageFormat::Png),
            _ => {}
        }
    }
    Err(not_acceptable(
        "rendered images are available as image/jpeg or image/png",
    ))
}

/// Parses the PS3.18 8.3.5.1 query parameters of a rendered resource.
fn render_params(
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    thumbnail: bool,
) -> Result<RenderParams, ApiError> {
    let mut params = RenderParams {
        format: image_format(headers)?,
        window: None,
        viewport: thumbnail.then_some((THUMBNAIL_SIZE, THUMBNAIL_SIZE)),
        quality: 90,
    };
    for (k, v) in q {
        match k.as_str() {
            "quality" => {
                params.quality = v
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "quality",
                            format!("'{v}' is not an integer from 1 to 100"),
                        )
                    })?;
            }
            "window" => {
                let parts: Vec<&str> = v.split(',').map(str::trim).collect();
                let bad = |p: &str| ApiError::invalid("window", p.to_string());
                if parts.len() != 3 {
                    return Err(bad(
                        "expected center,width,function (function linear or sigmoid)",
                    ));
                }
                let c: f64 = parts[0]
                    .parse()
                    .ok()
                    .filter(|c: &f64| c.is_finite())
                    .ok_or_else(|| bad(&format!("center '{}' is not a number", parts[0])))?;
                let w: f64 = parts[1]
                    .parse()
                    .ok()
                    .filter(|w: &f64| w.is_finite() && *w > 0.0)
                    .ok_or_else(|| bad(&format!("width '{}' is not a number above 0", parts[1])))?;
                let f = match parts[2].to_ascii_lowercase().as_str() {
                    "linear" => VoiLutFunction::Linear,
                    "sigmoid" => VoiLutFunction::Sigmoid,
                    other => {
                        return Err(bad(&format!(
                            "function '{other}' is neither linear nor sigmoid"
                        )))
                    }
                };
                params.window = Some((c, w, f));
            }
            "viewport" => {
                let parts: Vec<&str> = v.split(',').map(str::trim).collect();
                if parts.len() != 2 {
                    return Err(ApiError::invalid(
                        "viewport",
                        "expected vw,vh (a source region sx,sy,sw,sh is not supported)",
                    ));
                }
                let side = |s: &str| {
                    s.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_VIEWPORT).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "viewport",
                                format!("'{s}' is not an integer from 1 to {MAX_VIEWPORT}"),
                            )
                        })
                };
                params.viewport = Some((side(parts[0])?, side(parts[1])?));
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "not a supported rendering parameter (quality, window, viewport)",
                ))
            }
        }
    }
    Ok(params)
}

async fn render_one(f: Stored, frame: u32, params: RenderParams) -> Result<Response, ApiError> {
    if f.rows.is_none() {
        return Err(ApiError::invalid(
            "instance",
            format!("instance {} has no pixel data to render", f.sop),
        ));
    }
    let media = params.format.media_type();
    let obj = open(f.path.clone()).await?;
    let bytes = tokio::task::spawn_blocking(move || pixels::render(&obj, frame, &params))
        .await
        .map_err(|e| ApiError::internal("render task failed", e))?
        .map_err(|e| pixel_error(e, "frames"))?;
    tracing::info!(study_uid = %f.study, sop_instance_uid = %f.sop, frame, media, "WADO-RS rendered");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, media)], bytes).into_response())
}

/// `GET …/instances/{instance}/rendered`: the first frame.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered", responses(
    (status = 200, description = RENDERED, body = String, content_type = "image/jpeg"),
))]
pub async fn instance_rendered(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = render_params(&h, &q, false)?;
    let f = instances(&s, &study, Some(&series), Some(&sop))
        .await?
        .remove(0);
    render_one(f, 1, params).await
}

/// `GET …/instances/{instance}/frames/{frame}/rendered`: one frame.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered", responses(
    (status = 200, description = RENDERED, body = String, content_type = "image/jpeg"),
))]
pub async fn frame_rendered(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let wanted = pixels::parse_frame_list(&list).map_err(|p| ApiError::invalid("frames", p))?;
    if wanted.len() != 1 {
        return Err(ApiError::invalid(
            "frames",
            "one frame at a time is rendered (an image, not a video)",
        ));
    }
    let params = render_params(&h, &q, false)?;
    let f = instances(&s, &study, Some(&series), Some(&sop))
        .await?
        .remove(0);
    render_one(f, wanted[0], params).await
}

/// The representative image of a set: the middle image (by instance number) of the first
/// series that has images, a received series before the node's own overlays (whose series
/// UIDs may sort first: a study's thumbnail shows what was acquired).
fn representative(files: Vec<Stored>) -> Option<Stored> {
    let any_received = files.iter().any(|f| f.rows.is_some() && !f.derived);
    let first_series = files
        .iter()
        .find(|f| f.rows.is_some() && !(any_received && f.derived))?
        .series
        .clone();
    let mut images: Vec<Stored> = files
        .into_iter()
        .filter(|f| f.rows.is_some() && f.series == first_series)
        .collect();
    let mid = images.len() / 2;
    Some(images.swap_remove(mid))
}

async fn thumbnail(
    s: &DicomWeb,
    h: &HeaderMap,
    q: &HashMap<String, String>,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Response, ApiError> {
    let params = render_params(h, q, true)?;
    let files = instances(s, study, series, sop).await?;
    let f = representative(files)
        .ok_or_else(|| ApiError::not_found("No image to make a thumbnail from"))?;
    render_one(f, 1, params).await
}

/// `GET /studies/{study}/thumbnail`.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/thumbnail", responses(
    (status = 200, description = THUMBNAIL, body = String, content_type = "image/jpeg"),
))]
pub async fn study_thumbnail(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path(study): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    thumbnail(&s, &h, &q, &study, None, None).await
}

/// `GET /studies/{study}/series/{series}/thumbnail`.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/thumbnail", responses(
    (status = 200, description = THUMBNAIL, body = String, content_type = "image/jpeg"),
))]
pub async fn series_thumbnail(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    thumbnail(&s, &h, &q, &study, Some(&series), None).await
}

/// `GET …/instances/{instance}/thumbnail`.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail", responses(
    (status = 200, description = THUMBNAIL, body = String, content_type = "image/jpeg"),
))]
pub async fn instance_thumbnail(
    State(s): State<DicomWeb>,
    h: HeaderMap,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    thumbnail(&s, &h, &q, &study, Some(&series), Some(&sop)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    fn stored(series: &str, sop: &str, rows: Option<i64>, derived: bool) -> Stored {
        Stored {
            study: "1.2".into(),
            series: series.into(),
            sop: sop.into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            rows,
            path: std::path::PathBuf::from(sop),
            rel: sop.into(),
            derived,
        }
    }

    #[test]
    fn a_study_thumbnail_shows_a_received_image_before_an_overlay() {
        // The overlay's series UID sorts first, as the index orders them.
        let files = vec![
            stored("1.2.1", "overlay", Some(512), true),
            stored("1.2.1", "sr", None, true),
            stored("1.2.9", "a", Some(256), false),
            stored("1.2.9", "b", Some(256), false),
            stored("1.2.9", "c", Some(256), false),
        ];
        assert_eq!(representative(files).unwrap().sop, "b");
        let only_outputs = vec![
            stored("1.2.1", "sr", None, true),
            stored("1.2.1", "overlay", Some(512), true),
        ];
        assert_eq!(representative(only_outputs).unwrap().sop, "overlay");
        assert!(representative(vec![stored("1.2.1", "sr", None, true)]).is_none());
    }

    #[test]
    fn frame_accept_negotiation() {
        let rle = "1.2.840.10008.1.2.5";
        let native = "1.2.840.10008.1.2.1";
        assert_eq!(
            frames_delivery(&HeaderMap::new(), rle).unwrap(),
            Delivery::AsStored
        );
        let any = accept("multipart/related; type=\"*/*\"");
        assert_eq!(frames_delivery(&any, rle).unwrap(), Delivery::AsStored);
        let octet = accept("multipart/related; type=\"application/octet-stream\"");
        assert_eq!(frames_delivery(&octet, rle).unwrap(), Delivery::Native);
        assert_eq!(frames_delivery(&octet, native).unwrap(), Delivery::AsStored);
        let rle_h = accept(
            "multipart/related; type=\"image/dicom-rle\"; transfer-syntax=1.2.840.10008.1.2.5",
        );
        assert_eq!(frames_delivery(&rle_h, rle).unwrap(), Delivery::AsStored);
        let jp2 = accept("multipart/related; type=\"image/jp2\"");
        let e = frames_delivery(&jp2, rle).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE);
        assert!(frames_delivery(&jp2, native).is_err());
        let other_ts = accept("multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.2");
        assert!(frames_delivery(&other_ts, native).is_err());
    }

    #[test]
    fn render_params_are_checked() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = render_params(
            &accept("image/png"),
            &q(&[("window", "40,400,SIGMOID"), ("viewport", "64,32")]),
            false,
        )
        .unwrap();
        assert_eq!(p.format, ImageFormat::Png);
        assert_eq!(p.window, Some((40.0, 400.0, VoiLutFunction::Sigmoid)));
        assert_eq!(p.viewport, Some((64, 32)));
        assert_eq!(
            render_params(&HeaderMap::new(), &q(&[]), true)
                .unwrap()
                .viewport,
            Some((128, 128))
        );
        for (k, v) in [
            ("quality", "0"),
            ("quality", "abc"),
            ("window", "1,2"),
            ("window", "1,0,linear"),
            ("window", "1,2,cubic"),
            ("viewport", "0,10"),
            ("viewport", "1,2,3,4,5,6"),
            ("annotation", "patient"),
        ] {
            let e = render_params(&HeaderMap::new(), &q(&[(k, v)]), false).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{k}={v}");
            assert_eq!(e.details.as_ref().unwrap()["field"], k, "{k}={v}");
        }
        assert_eq!(
            render_params(&accept("image/gif"), &q(&[]), false)
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
    }
}
