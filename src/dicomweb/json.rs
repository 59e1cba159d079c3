//! The DICOM JSON model (PS3.18 F.2): `{"0020000D": {"vr": "UI", "Value": ["1.2…"]}}`.
//!
//! Large binary values (Pixel Data, and any OB/OW/OF/OD/OL/OV/UN value over
//! [`INLINE_LIMIT`] bytes) are not inlined: they get a `BulkDataURI` when the caller gives a
//! base URL for the instance, else they are left out (the model allows either).

use base64::Engine as _;
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value};

/// Binary values up to this size are sent inline (`InlineBinary`, base64).
pub const INLINE_LIMIT: usize = 1024;

/// `GGGGEEEE`, upper-case hex, as the JSON model keys attributes.
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// A JSON attribute with string values.
pub fn strings(vr: &str, values: &[&str]) -> Value {
    let values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return json!({ "vr": vr });
    }
    if vr == "PN" {
        let pns: Vec<Value> = values.iter().map(|v| person_name(v)).collect();
        return json!({ "vr": vr, "Value": pns });
    }
    json!({ "vr": vr, "Value": values })
}

/// A JSON attribute with one optional string value.
pub fn string(vr: &str, value: Option<&str>) -> Value {
    match value {
        Some(v) => strings(vr, &v.split('\\').collect::<Vec<_>>()),
        None => json!({ "vr": vr }),
    }
}

/// A JSON attribute with one optional integer value.
pub fn integer(vr: &str, value: Option<i64>) -> Value {
    match value {
        Some(v) => json!({ "vr": vr, "Value": [v] }),
        None => json!({ "vr": vr }),
    }
}

fn person_name(v: &str) -> Value {
    let mut m = Map::new();
    for (key, part) in ["Alphabetic", "Ideographic", "Phonetic"]
        .iter()
        .zip(v.split('='))
    {
        if !part.is_empty() {
            m.insert((*key).into(), Value::String(part.to_string()));
        }
    }
    Value::Object(m)
}

fn is_bulk_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
    )
}

/// The JSON model of a data set. `bulk_base` is the instance's URL: bulk values get
/// `{bulk_base}/bulkdata/{tag}` (top level) when given. Group 0002 and group lengths are left
/// out.
pub fn dataset(obj: &InMemDicomObject, bulk_base: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    for elem in obj.iter() {
        let tag = elem.tag();
        if tag.group() == 0x0002 || tag.element() == 0x0000 {
            continue;
        }
        if let Some(v) = element(elem, bulk_base) {
            out.insert(tag_key(tag), v);
        }
    }
    out
}

/// The JSON model of one element; `None` when a bulk value has nowhere to point.
pub fn element(elem: &InMemElement, bulk_base: Option<&str>) -> Option<Value> {
    let tag = elem.tag();
    let vr = elem.vr();
    let vr_str = vr.to_string();
    let bulk = |base: Option<&str>| {
        base.map(
            |b| json!({ "vr": vr_str, "BulkDataURI": format!("{b}/bulkdata/{}", tag_key(tag)) }),
        )
    };
    match elem.value() {
        DicomValue::Sequence(seq) => {
            // Nested bulk values cannot be addressed by a top-level bulk data URL.
            let items: Vec<Value> = seq
                .items()
                .iter()
                .map(|item| Value::Object(dataset(item, None)))
                .collect();
            Some(json!({ "vr": "SQ", "Value": items }))
        }
        DicomValue::PixelSequence(_) => bulk(bulk_base),
        DicomValue::Primitive(p) => {
            if tag == tags::PIXEL_DATA
                || tag == tags::FLOAT_PIXEL_DATA
                || tag == tags::DOUBLE_FLOAT_PIXEL_DATA
            {
                return bulk(bulk_base);
            }
            if is_bulk_vr(vr) {
                let bytes = p.to_bytes();
                if bytes.len() > INLINE_LIMIT {
                    return bulk(bulk_base);
                }
                if bytes.is_empty() {
                    return Some(json!({ "vr": vr_str }));
                }
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                return Some(json!({ "vr": vr_str, "InlineBinary": b64 }));
            }
            Some(primitive(vr, vr_str, p))
        }
    }
}

fn primitive(vr: VR, vr_str: &str, p: &PrimitiveValue) -> Value {
    if matches!(p, PrimitiveValue::Empty) {
        return json!({ "vr": vr_str });
    }
    let values: Vec<Value> = match vr {
        VR::AT => match p {
            PrimitiveValue::Tags(t) => t.iter().map(|t| Value::String(tag_key(*t))).collect(),
            _ => Vec::new(),
        },
        VR::US | VR::SS | VR::UL | VR::SL | VR::UV | VR::SV | VR::IS => p
            .to_multi_int::<i64>()
            .map(|v| v.into_iter().map(Value::from).collect())
            .unwrap_or_else(|_| strs(p)),
        VR::FL | VR::FD | VR::DS => p
            .to_multi_float64()
            .map(|v| {
                v.into_iter()
                    .map(|f| {
                        serde_json::Number::from_f64(f)
                            .map(Value::Number)
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            })
            .unwrap_or_else(|_| strs(p)),
        VR::PN => {
            let s: Vec<String> = multi_str(p);
            return strings("PN", &s.iter().map(String::as_str).collect::<Vec<_>>());
        }
        _ => strs(p),
    };
    if values.is_empty() {
        return json!({ "vr": vr_str });
    }
    json!({ "vr": vr_str, "Value": values })
}

fn multi_str(p: &PrimitiveValue) -> Vec<String> {
    p.to_multi_str()
        .iter()
        .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
        .collect()
}

fn strs(p: &PrimitiveValue) -> Vec<Value> {
    multi_str(p)
        .into_iter()
        .map(|s| {
            if s.is_empty() {
                Value::Null
            } else {
                Value::String(s)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{dicom_value, DataElement};

    #[test]
    fn values_follow_the_json_model() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            dicom_value!(Str, "DOE^JANE"),
        ));
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            dicom_value!(U16, [512]),
        ));
        obj.put(DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            dicom_value!(Strs, ["40", "-600.5"]),
        ));
        obj.put(DataElement::new(
            tags::SERIES_NUMBER,
            VR::IS,
            dicom_value!(Str, "3 "),
        ));
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            dicom_value!(Strs, ["ORIGINAL", "PRIMARY"]),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![0u8; 4096]),
        ));
        obj.put(DataElement::new(
            tags::ACCESSION_NUMBER,
            VR::SH,
            PrimitiveValue::Empty,
        ));
        let j = Value::Object(dataset(
            &obj,
            Some("http://h/dicomweb/studies/1/series/2/instances/3"),
        ));
        assert_eq!(
            j["00100010"],
            json!({"vr":"PN","Value":[{"Alphabetic":"DOE^JANE"}]})
        );
        assert_eq!(j["00280010"], json!({"vr":"US","Value":[512]}));
        assert_eq!(j["00281050"], json!({"vr":"DS","Value":[40.0,-600.5]}));
        assert_eq!(j["00200011"], json!({"vr":"IS","Value":[3]}));
        assert_eq!(j["00080008"]["Value"], json!(["ORIGINAL", "PRIMARY"]));
        assert_eq!(j["00080050"], json!({"vr":"SH"}));
        assert_eq!(
            j["7FE00010"]["BulkDataURI"],
            "http://h/dicomweb/studies/1/series/2/instances/3/bulkdata/7FE00010"
        );
        let no_base = Value::Object(dataset(&obj, None));
        assert!(no_base.get("7FE00010").is_none());
    }
}
