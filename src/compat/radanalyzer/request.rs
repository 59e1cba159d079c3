//! The `/v3/predict` body: `{"image": "<base64>"}` or `{"images": ["<base64>", …]}` (at most
//! [`MAX_IMAGES`]), optional `uuid` (string) and `render` (boolean). Other members are
//! ignored. Base64 may carry a data-URL prefix (`data:image/png;base64,`) and line breaks.
//!
//! Request-level problems are [`RadError`]s (400 naming the field; 413 for an image over
//! 10 MiB). A string that is not base64, or not a JPEG or PNG, is kept per image as an
//! [`ImageProblem`]: `/v3/predict` answers 400 naming `image` / `images[i]`, the stream sends
//! an `error` event for that index and goes on.

use base64::Engine as _;
use serde_json::Value;

use super::{RadError, MAX_IMAGES, MAX_IMAGE_BYTES};

/// Longest `uuid` accepted.
pub const MAX_UUID_CHARS: usize = 256;

/// Why one image cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProblem {
    /// `image` or `images[i]`.
    pub field: String,
    pub problem: String,
}

impl ImageProblem {
    /// The 400 for `/v3/predict`.
    pub fn to_error(&self) -> RadError {
        RadError::field(
            &self.field,
            format!(
                "Invalid image data in field {}: {}",
                self.field, self.problem
            ),
        )
    }
}

/// One decoded image, or why it is unusable.
pub type Image = Result<Vec<u8>, ImageProblem>;

/// A parsed request.
#[derive(Debug)]
pub struct PredictRequest {
    /// True for `images` (batch), false for `image`.
    pub batch: bool,
    pub images: Vec<Image>,
    pub uuid: Option<String>,
    pub render: bool,
}

/// The optional `uuid` member: a non-empty string of at most [`MAX_UUID_CHARS`] characters
/// without control characters (trimmed), or absent / null.
pub fn uuid_field(v: Option<Value>) -> Result<Option<String>, RadError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim().to_string();
            if s.is_empty() {
                return Err(RadError::field(
                    "uuid",
                    "Invalid field uuid: must not be empty",
                ));
            }
            if s.chars().count() > MAX_UUID_CHARS || s.chars().any(char::is_control) {
                return Err(RadError::field(
                    "uuid",
                    format!(
                    "Invalid field uuid: at most {MAX_UUID_CHARS} characters, no control characters"
                ),
                ));
            }
            Ok(Some(s))
        }
        Some(_) => Err(RadError::field(
            "uuid",
            "Invalid field uuid: must be a string",
        )),
    }
}

/// Parses and checks the body.
pub fn parse(body: &[u8]) -> Result<PredictRequest, RadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RadError::missing("image"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RadError::field("body", format!("Request body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(RadError::field(
            "body",
            "Request body must be a JSON object",
        ));
    };
    let uuid = uuid_field(obj.remove("uuid"))?;
    let render = match obj.remove("render") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(RadError::field(
                "render",
                "Invalid field render: must be a boolean",
            ));
        }
    };
    let image = obj.remove("image").filter(|v| !v.is_null());
    let images = obj.remove("images").filter(|v| !v.is_null());
    let (batch, raw): (bool, Vec<(String, Value)>) = match (image, images) {
        (Some(_), Some(_)) => {
            return Err(RadError::field(
                "images",
                "Give either image (one) or images (a batch), not both",
            ));
        }
        (None, None) => return Err(RadError::missing("image")),
        (Some(one), None) => (false, vec![("image".to_string(), one)]),
        (None, Some(Value::Array(list))) => {
            if list.is_empty() {
                return Err(RadError::field(
                    "images",
                    "Invalid field images: must hold at least one image",
                ));
            }
            if list.len() > MAX_IMAGES {
                return Err(RadError::field(
                    "images",
                    format!(
                        "Too many images: images holds {}, the maximum batch size is {MAX_IMAGES}",
                        list.len()
                    ),
                ));
            }
            let named = list
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("images[{i}]"), v))
                .collect();
            (true, named)
        }
        (None, Some(_)) => {
            return Err(RadError::field(
                "images",
                "Invalid field images: must be an array of base64 strings",
            ));
        }
    };
    let mut out = Vec::with_capacity(raw.len());
    for (field, v) in raw {
        let Value::String(s) = v else {
            return Err(RadError::field(
                &field,
                format!("Invalid field {field}: must be a base64-encoded string"),
            ));
        };
        out.push(decode(&field, &s)?);
    }
    Ok(PredictRequest {
        batch,
        images: out,
        uuid,
        render,
    })
}

/// Decodes one base64 image: 413 when over 10 MiB, else the bytes or the problem.
pub fn decode(field: &str, s: &str) -> Result<Image, RadError> {
    let data = match s.split_once("base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => s,
    };
    let clean: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    // Decoded length is about 3/4 of the text: refuse before allocating it.
    if clean.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
        return Err(RadError::too_large(field));
    }
    let problem = |p: &str| {
        Ok(Err(ImageProblem {
            field: field.to_string(),
            problem: p.to_string(),
        }))
    };
    if clean.is_empty() {
        return problem("the string is empty");
    }
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&clean) {
        Ok(b) => b,
        Err(_) => match base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean) {
            Ok(b) => b,
            Err(e) => return problem(&format!("not valid base64 ({e})")),
        },
    };
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(RadError::too_large(field));
    }
    match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png) => Ok(Ok(bytes)),
        _ => problem("not a JPEG or PNG image"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::new(4, 4)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn single_and_batch_requests() {
        let p = png();
        let r = parse(
            format!(
                r#"{{"image":"{}","uuid":"patient-123","render":true}}"#,
                b64(&p)
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(!r.batch && r.render);
        assert_eq!(r.uuid.as_deref(), Some("patient-123"));
        assert_eq!(r.images, vec![Ok(p.clone())]);

        let body = serde_json::json!({ "images": [b64(&p), "!!!", b64(b"GIF89a....")] });
        let r = parse(body.to_string().as_bytes()).unwrap();
        assert!(r.batch && !r.render && r.uuid.is_none());
        assert_eq!(r.images[0], Ok(p.clone()));
        assert_eq!(r.images[1].as_ref().unwrap_err().field, "images[1]");
        assert!(r.images[1].as_ref().unwrap_err().problem.contains("base64"));
        assert_eq!(
            r.images[2].as_ref().unwrap_err().problem,
            "not a JPEG or PNG image"
        );
        let e = r.images[1].as_ref().unwrap_err().to_error();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("images[1]"));

        // Data URLs and line-wrapped base64 (Python's encodebytes) are accepted.
        let wrapped = b64(&p)
            .as_bytes()
            .chunks(10)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let body = serde_json::json!({ "image": format!("data:image/png;base64,{wrapped}") });
        assert_eq!(
            parse(body.to_string().as_bytes()).unwrap().images,
            vec![Ok(p)]
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases: Vec<(&str, &str, &str)> = vec![
            ("", "image", "Missing required field: image"),
            ("{}", "image", "Missing required field: image"),
            (r#"{"uuid":"x"}"#, "image", "Missing required field: image"),
            ("[1]", "body", "Request body must be a JSON object"),
            (
                r#"{"image":5}"#,
                "image",
                "Invalid field image: must be a base64-encoded string",
            ),
            (
                r#"{"images":"abc"}"#,
                "images",
                "Invalid field images: must be an array of base64 strings",
            ),
            (
                r#"{"images":[]}"#,
                "images",
                "Invalid field images: must hold at least one image",
            ),
            (
                r#"{"images":[7]}"#,
                "images[0]",
                "Invalid field images[0]: must be a base64-encoded string",
            ),
            (
                r#"{"image":"a","images":["a"]}"#,
                "images",
                "Give either image (one) or images (a batch), not both",
            ),
            (
                r#"{"image":"a","uuid":3}"#,
                "uuid",
                "Invalid field uuid: must be a string",
            ),
            (
                r#"{"image":"a","uuid":" "}"#,
                "uuid",
                "Invalid field uuid: must not be empty",
            ),
            (
                r#"{"image":"a","render":"yes"}"#,
                "render",
                "Invalid field render: must be a boolean",
            ),
        ];
        for (body, field, message) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.field.as_deref(), Some(field), "{body}");
            assert_eq!(e.message, message, "{body}");
        }
        let e = parse(b"{not json").unwrap_err();
        assert!(e.message.starts_with("Request body is not valid JSON"));
        let eleven: Vec<String> = (0..11).map(|_| "a".to_string()).collect();
        let e = parse(
            serde_json::json!({ "images": eleven })
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("images"));
        assert!(e.message.starts_with("Too many images"), "{}", e.message);
    }

    #[test]
    fn images_over_ten_mib_are_413() {
        let mut big = png();
        big.resize(MAX_IMAGE_BYTES + 1, 0);
        let body = serde_json::json!({ "images": [b64(&png()), b64(&big)] });
        let e = parse(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.message, "Image exceeds maximum size of 10MB");
        assert_eq!(e.field.as_deref(), Some("images[1]"));
        // Exactly 10 MiB is allowed.
        big.truncate(MAX_IMAGE_BYTES);
        let body = serde_json::json!({ "image": b64(&big) });
        assert!(parse(body.to_string().as_bytes()).unwrap().images[0].is_ok());
    }
}
