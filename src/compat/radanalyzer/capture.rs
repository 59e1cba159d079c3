//! Picture-of-picture over `/v3`: `POST /v3/corners`, `/v3/rectify` and `/v3/preprocess`
//! (free utilities on [`crate::capture`]), the capture sessions of [`super::pop_session`], and
//! [`predict_photo`]: a prediction that first finds a screen in the photo and, when there is
//! one, predicts on the rectified radiograph (`pop_detected: true`).
//!
//! `model_version` in these answers is the landmark model's, as everywhere on `/v3`.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use image::{GrayImage, RgbImage};
use serde_json::{json, Map, Value};

use super::outcome::{PredictError, PredictOutcome};
use super::request::decode;
use super::RadAnalyzer;
use super::{
    model_facts, pop_session, predict_one, RadError, RadErrorBody, RadKey, KEY_HEADER,
    MAX_IMAGE_BYTES, PHOTO_BODY,
};
use crate::api::{spec, Access, Routes};
use crate::auth::Scope;
use crate::capture::{self, CaptureError, Point, Quad};
use crate::telemetry::spawn_blocking_with_tracing;

/// The document's 422 for `/v3/corners` and `/v3/preprocess`.
pub const CORNERS_FAILED: &str = "Corner detection failed";
/// Body limit of the one-image capture routes: 10 MiB in base64 plus 1 MiB for the rest.
pub const CAPTURE_BODY_BYTES: usize = MAX_IMAGE_BYTES.div_ceil(3) * 4 + (1 << 20);
/// JPEG quality of rectified images.
const JPEG_QUALITY: u8 = 90;

pub fn routes() -> Routes<RadAnalyzer> {
    let write = Access::Scope(Scope::InferenceWrite);
    let route = |path: &'static str, summary: &'static str| {
        spec(Method::POST, path, write, summary).with_body_limit(CAPTURE_BODY_BYTES)
    };
    vec![
        (
            route(
                "/v3/corners",
                "RadAnalyzer V3: the four corners of a radiograph screen in a photo",
            ),
            post(corners),
        ),
        (
            route(
                "/v3/rectify",
                "RadAnalyzer V3: perspective correction of a photo from four corners",
            ),
            post(rectify),
        ),
        (
            route(
                "/v3/preprocess",
                "RadAnalyzer V3: corner detection and rectification in one call",
            ),
            post(preprocess),
        ),
        (
            route(
                "/v3/pop-session/start",
                "RadAnalyzer V3: start a picture-of-picture capture session",
            ),
            post(pop_session::start),
        ),
        (
            route(
                "/v3/pop-session",
                "RadAnalyzer V3: send one frame to a capture session",
            ),
            post(pop_session::frame),
        ),
    ]
}

/// The JSON object of a request body (an empty body is an empty object).
pub(crate) fn body_object(body: &[u8]) -> Result<Map<String, Value>, RadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RadError::field(
            "body",
            "Request body must be a JSON object",
        )),
        Err(e) => Err(RadError::field(
            "body",
            format!("Request body is not valid JSON: {e}"),
        )),
    }
}

/// The `image` member: base64 JPEG or PNG (400 naming `image`, 413 over 10 MiB).
pub(crate) fn image_field(obj: &mut Map<String, Value>) -> Result<Vec<u8>, RadError> {
    match obj.remove("image") {
        None | Some(Value::Null) => Err(RadError::missing("image")),
        Some(Value::String(s)) => decode("image", &s)?.map_err(|p| p.to_error()),
        Some(_) => Err(RadError::field(
            "image",
            "Invalid field image: must be a base64-encoded string",
        )),
    }
}

/// Decodes a photo off the runtime; an undecodable one is a 400 naming `image`.
pub(crate) async fn decode_photo(bytes: Vec<u8>) -> Result<RgbImage, RadError> {
    spawn_blocking_with_tracing(move || capture::decode_photo(&bytes))
        .await
        .map_err(|e| RadError::internal("photo decoding task", e))?
        .map_err(|e| RadError::field("image", format!("Invalid image data in field image: {e}")))
}

/// A capture request: the decoded photo of its `image`, and its other members. The body is
/// dropped before decoding, so a request holds one copy of the picture at a time.
async fn photo_request(body: Bytes) -> Result<(RgbImage, Map<String, Value>), RadError> {
    let mut obj = body_object(&body)?;
    let bytes = image_field(&mut obj)?;
    drop(body);
    Ok((decode_photo(bytes).await?, obj))
}

pub(crate) fn corners_json(quad: &Quad) -> Value {
    Value::Array(
        quad.0
            .iter()
            .map(|p| json!([round2(p.x), round2(p.y)]))
            .collect(),
    )
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub(crate) fn jpeg_base64(img: &RgbImage) -> Result<String, RadError> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(img)
        .map_err(|e| RadError::internal("JPEG encoding", e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(out.into_inner()))
}

pub(crate) fn png_bytes(img: &GrayImage) -> Result<Vec<u8>, RadError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| RadError::internal("PNG encoding", e))?;
    Ok(out.into_inner())
}

/// `POST /v3/corners`: `{corners, order, image_width, image_height, model_version}`, or 422
/// when the photo shows no screen (a plain radiograph included).
#[utoipa::path(post, path = "/v3/corners", params(("x-api-key" = String, Header, description = KEY_HEADER)), request_body(content = Object, description = PHOTO_BODY), responses(
    (status = 200, description = "RadAnalyzer: `{corners: [[x, y] ×4 in pixels, TL,TR,BR,BL], \
        order, image_width, image_height, model_version}`", body = Object),
    (status = 403, description = "Invalid API key", body = RadErrorBody),
    (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
    (status = 422, description = "Corner detection failed", body = RadErrorBody),
))]
pub async fn corners(
    State(state): State<RadAnalyzer>,
    _key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    let (photo, _) = photo_request(body).await?;
    let (w, h) = photo.dimensions();
    let det = spawn_blocking_with_tracing(move || capture::detect(&photo))
        .await
        .map_err(|e| RadError::internal("corner detection task", e))?
        .ok_or_else(|| RadError::new(StatusCode::UNPROCESSABLE_ENTITY, CORNERS_FAILED))?;
    Ok(Json(json!({
        "corners": corners_json(&det.quad),
        "order": "TL,TR,BR,BL",
        "image_width": w,
        "image_height": h,
        "model_version": model_facts(&state).model_version,
    })))
}

/// Checks `corners`: four `[x, y]` pairs of finite numbers inside the image, forming a
/// convex quadrilateral. They are put in TL,TR,BR,BL order whatever order they came in.
pub fn parse_corners(v: Option<Value>, width: u32, height: u32) -> Result<Quad, RadError> {
    let bad =
        |problem: String| RadError::field("corners", format!("Invalid field corners: {problem}"));
    let list = match v {
        None | Some(Value::Null) => return Err(RadError::missing("corners")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("must be an array of four [x, y] pairs".into())),
    };
    if list.len() != 4 {
        return Err(bad(format!(
            "must hold exactly four [x, y] pairs, it holds {}",
            list.len()
        )));
    }
    let mut points = [Point::new(0.0, 0.0); 4];
    for (i, item) in list.iter().enumerate() {
        let pair = item
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad(format!("corners[{i}] must be an [x, y] pair of numbers")))?;
        let mut xy = [0.0; 2];
        for (j, v) in pair.iter().enumerate() {
            xy[j] = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(format!("corners[{i}][{j}] must be a finite number")))?;
        }
        let (x, y) = (xy[0], xy[1]);
        if !(0.0..=width as f64).contains(&x) || !(0.0..=height as f64).contains(&y) {
            return Err(bad(format!(
                "corners[{i}] = [{x}, {y}] lies outside the {width}×{height} image"
            )));
        }
        points[i] = Point::new(x, y);
    }
    let quad = Quad::ordered(points);
    if !quad.is_convex() || quad.area() < 16.0 {
        return Err(bad(
            "the four points do not form a convex quadrilateral of at least 16 square pixels"
                .into(),
        ));
    }
    Ok(quad)
}

/// `POST /v3/rectify`: the photo inside `corners` warped upright, `{rectified_image, width,
/// height, model_version}`.
#[utoipa::path(post, path = "/v3/rectify", params(("x-api-key" = String, Header, description = KEY_HEADER)),
    request_body(content = Object, description = "`{image, corners}`: the photo and four [x, y] \
        pixel positions inside it (any order; TL,TR,BR,BL used)"),
    responses(
        (status = 200, description = "RadAnalyzer: `{rectified_image (base64 JPEG), width, height, \
            model_version}`", body = Object),
        (status = 403, description = "Invalid API key", body = RadErrorBody),
        (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
    ),
)]
pub async fn rectify(
    State(state): State<RadAnalyzer>,
    _key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    let (photo, mut obj) = photo_request(body).await?;
    let corners = obj.remove("corners");
    let quad = parse_corners(corners, photo.width(), photo.height())?;
    let out = spawn_blocking_with_tracing(move || capture::rectify(&photo, &quad))
        .await
        .map_err(|e| RadError::internal("rectification task", e))?
        .map_err(|e| RadError::field("corners", format!("Invalid field corners: {e}")))?;
    Ok(Json(json!({
        "rectified_image": jpeg_base64(&out)?,
        "width": out.width(),
        "height": out.height(),
        "model_version": model_facts(&state).model_version,
    })))
}

/// `POST /v3/preprocess`: corners then rectification, `{rectified_image, corners, order,
/// width, height, model_version}`; 422 when no screen is found.
#[utoipa::path(post, path = "/v3/preprocess", params(("x-api-key" = String, Header, description = KEY_HEADER)), request_body(content = Object, description = PHOTO_BODY), responses(
    (status = 200, description = "RadAnalyzer: `{rectified_image, corners, order, width, height, \
        model_version}`", body = Object),
    (status = 403, description = "Invalid API key", body = RadErrorBody),
    (status = 413, description = "Image exceeds maximum size of 10MB", body = RadErrorBody),
    (status = 422, description = "Corner detection failed", body = RadErrorBody),
))]
pub async fn preprocess(
    State(state): State<RadAnalyzer>,
    _key: RadKey,
    body: Bytes,
) -> Result<Json<Value>, RadError> {
    let (photo, _) = photo_request(body).await?;
    let done = spawn_blocking_with_tracing(move || {
        let det = capture::detect(&photo)?;
        Some(capture::rectify(&photo, &det.quad).map(|img| (det.quad, img)))
    })
    .await
    .map_err(|e| RadError::internal("preprocessing task", e))?;
    let (quad, out) = match done {
        None => {
            return Err(RadError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                CORNERS_FAILED,
            ))
        }
        Some(Err(e)) => return Err(RadError::internal("rectification", e)),
        Some(Ok(v)) => v,
    };
    Ok(Json(json!({
        "rectified_image": jpeg_base64(&out)?,
        "corners": corners_json(&quad),
        "order": "TL,TR,BR,BL",
        "width": out.width(),
        "height": out.height(),
        "model_version": model_facts(&state).model_version,
    })))
}

/// A photo made ready for the landmark model.
#[derive(Debug, Clone)]
pub struct PreparedPhoto {
    /// What the model should see: the rectified, level-restored radiograph (PNG) when a
    /// screen was found, else the bytes as sent.
    pub bytes: Arc<Vec<u8>>,
    pub pop_detected: bool,
    /// A screen was found but could not be rectified (result code 7).
    pub rectification_failed: bool,
}

/// Looks for a screen in `bytes`; rectifies when there is one. An undecodable image is
/// passed through unchanged: the prediction reports it in its own words.
pub async fn prepare_photo(bytes: Arc<Vec<u8>>) -> PreparedPhoto {
    let input = bytes.clone();
    let done = spawn_blocking_with_tracing(move || {
        let photo = capture::decode_photo(&input).ok()?;
        let det = capture::detect(&photo)?;
        Some(
            capture::rectify(&photo, &det.quad)
                .map(|r| capture::restore_levels(&r))
                .map_err(|e: CaptureError| e.to_string()),
        )
    })
    .await;
    let passthrough = |pop_detected, rectification_failed| PreparedPhoto {
        bytes: bytes.clone(),
        pop_detected,
        rectification_failed,
    };
    match done {
        Ok(None) => passthrough(false, false),
        Ok(Some(Ok(img))) => match png_bytes(&img) {
            Ok(png) => PreparedPhoto {
                bytes: Arc::new(png),
                pop_detected: true,
                rectification_failed: false,
            },
            Err(_) => passthrough(true, true),
        },
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "RadAnalyzer: screen found but not rectified");
            passthrough(true, true)
        }
        Err(e) => {
            tracing::error!(error = %e, "RadAnalyzer: screen detection task");
            passthrough(false, false)
        }
    }
}

/// [`predict_one`] behind screen detection: a photo of a screen is predicted on its
/// rectified radiograph with `pop_detected: true`; a screen that cannot be rectified gives
/// result code 7; anything else is predicted as sent.
pub async fn predict_photo(
    state: &RadAnalyzer,
    bytes: Arc<Vec<u8>>,
    render: bool,
) -> Result<PredictOutcome, PredictError> {
    let prepared = prepare_photo(bytes).await;
    if prepared.rectification_failed {
        return Ok(PredictOutcome::without_prediction(
            7,
            &model_facts(state).model_version,
            true,
        ));
    }
    let mut out = predict_one(state, prepared.bytes, render).await?;
    out.pop_detected = prepared.pop_detected;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_are_checked_field_by_field() {
        let ok = json!([
            [137.48, 100.30],
            [490.50, 81.32],
            [495.35, 421.38],
            [154.89, 421.57]
        ]);
        let q = parse_corners(Some(ok), 640, 482).unwrap();
        assert_eq!(q.0[0], Point::new(137.48, 100.30));
        // Any order is put in TL,TR,BR,BL order.
        let shuffled = json!([
            [495.35, 421.38],
            [137.48, 100.30],
            [154.89, 421.57],
            [490.50, 81.32]
        ]);
        assert_eq!(parse_corners(Some(shuffled), 640, 482).unwrap(), q);

        let cases: Vec<(Option<Value>, &str)> = vec![
            (None, "Missing required field: corners"),
            (Some(json!("x")), "must be an array"),
            (Some(json!([[1, 2], [3, 4], [5, 6]])), "exactly four"),
            (
                Some(json!([[1, 2], [3, 4], [5, 6], [7]])),
                "corners[3] must be an [x, y] pair",
            ),
            (
                Some(json!([[1, 2], [3, "a"], [5, 6], [7, 8]])),
                "corners[1][1] must be a finite number",
            ),
            (
                Some(json!([[1, 2], [3, 4], [5, 6], [700, 8]])),
                "corners[3] = [700, 8] lies outside the 640×482 image",
            ),
            (Some(json!([[-1, 2], [3, 4], [5, 6], [7, 8]])), "corners[0]"),
            (
                Some(json!([[0, 0], [10, 10], [20, 20], [30, 30]])),
                "convex",
            ),
        ];
        for (v, want) in cases {
            let e = parse_corners(v.clone(), 640, 482).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{v:?}");
            assert_eq!(e.field.as_deref(), Some("corners"), "{v:?}");
            assert!(e.message.contains(want), "{v:?}: {}", e.message);
        }
    }

    #[test]
    fn bodies_must_be_objects_with_an_image() {
        assert!(body_object(b"").unwrap().is_empty());
        assert!(body_object(b"{}").unwrap().is_empty());
        assert_eq!(
            body_object(b"[1]").unwrap_err().field.as_deref(),
            Some("body")
        );
        assert_eq!(
            body_object(b"{").unwrap_err().field.as_deref(),
            Some("body")
        );
        let mut m = body_object(b"{}").unwrap();
        assert_eq!(
            image_field(&mut m).unwrap_err().message,
            "Missing required field: image"
        );
        let mut m = body_object(br#"{"image": 5}"#).unwrap();
        assert_eq!(
            image_field(&mut m).unwrap_err().field.as_deref(),
            Some("image")
        );
    }
}
