"""A VoxRay client written from the VoxRay v2 API contracts document (specs/003), as its
users would: `requests`, the `x-stack-access-token` header, multipart `image_file` /
`dicom_file`, and only the fields the document shows. Exits non-zero on any mismatch.

usage: voxray_client.py BASE_URL TOKEN IMAGE.png DICOM.dcm PATIENT_ID
"""

import sys

import requests


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    base, token, image, dicom, patient = sys.argv[1:6]
    headers = {"x-stack-access-token": token}

    # GET /health (no auth)
    r = requests.get(f"{base}/health", timeout=30)
    check(r.status_code == 200, f"/health {r.status_code}")
    h = r.json()
    check(h["status"] == "healthy", "health status")
    check(h["services"]["medical_model"] == "loaded", "medical_model loaded")
    check(isinstance(h["version"], str) and h["timestamp"], "version and timestamp")

    # GET /api/feature-flags
    r = requests.get(f"{base}/api/feature-flags", headers=headers, timeout=30)
    check(r.status_code == 200, f"/api/feature-flags {r.status_code}")
    flags = r.json()["flags"]
    check(flags["ensemble_model"] is True and flags["dicom_support"] is True, "flags")

    # POST /predict/image (v1)
    for path in ("/predict/image", "/v1/predict/image"):
        with open(image, "rb") as f:
            files = {"image_file": ("xray.png", f, "image/png")}
            r = requests.post(f"{base}{path}", files=files, headers=headers, timeout=120)
        check(r.status_code == 200, f"{path} {r.status_code} {r.text}")
        body = r.json()
        check(set(body) == {"diagnosis", "confidence"}, f"{path} root fields {body}")
        check(isinstance(body["diagnosis"], str), "diagnosis is a string")
        check(isinstance(body["confidence"], float), "confidence is a float")
        print(f"{path}: {body['diagnosis']} {body['confidence']}")

    # POST /v2/predict/image
    with open(image, "rb") as f:
        files = {"image_file": ("xray.png", f, "image/png")}
        r = requests.post(f"{base}/v2/predict/image", files=files, headers=headers, timeout=120)
    check(r.status_code == 200, f"v2 image {r.status_code}")
    v2 = r.json()
    u = v2["uncertainty"]
    for k in ("epistemic", "aleatoric", "total"):
        check(isinstance(u[k], float), f"uncertainty.{k}")
    check(isinstance(u["should_review"], bool), "should_review")
    e = v2["ensemble"]
    check(e["voting_method"] == "soft", "voting_method")
    for name in e["models_used"]:
        p = e["individual_predictions"][name]
        check(isinstance(p["diagnosis"], str) and isinstance(p["confidence"], float), name)
    check(0.0 <= e["disagreement_score"] <= 1.0, "disagreement_score")
    check(isinstance(v2["meta"]["model_version"], str), "model_version")
    check(isinstance(v2["meta"]["inference_time_ms"], int), "inference_time_ms")

    # POST /v2/predict/dicom
    with open(dicom, "rb") as f:
        files = {"dicom_file": ("study.dcm", f, "application/dicom")}
        r = requests.post(f"{base}/v2/predict/dicom", files=files, headers=headers, timeout=120)
    check(r.status_code == 200, f"v2 dicom {r.status_code} {r.text}")
    d = r.json()
    m = d["dicom_metadata"]
    check(m["patient_id_hash"] and m["study_instance_uid"], "dicom_metadata")
    check(m["modality"] in ("DX", "CR"), "modality")
    check(d["image_extracted"] is True and d["anonymization_applied"] is True, "flags")

    # GET /v2/fhir/diagnostic-report/{patient_id}, by ID and by the hash just received
    for pid in (patient, m["patient_id_hash"]):
        r = requests.get(f"{base}/v2/fhir/diagnostic-report/{pid}", headers=headers, timeout=30)
        check(r.status_code == 200, f"fhir {r.status_code} {r.text}")
        rep = r.json()
        check(rep["resourceType"] == "DiagnosticReport", "resourceType")
        check(rep["status"] == "final", "status")
        check(rep["subject"]["reference"].startswith("Patient/"), "subject")
        # The document shows code.coding (LOINC); radstream gives a text-only code once the
        # study holds its own SR/overlay series besides the radiographs (see the guide, integrate/vendor-apis.md).
        code = rep["code"]
        check(code.get("text") or code["coding"][0]["system"] == "http://loinc.org", "code")
        check(rep["conclusionCode"][0]["coding"][0]["system"] == "http://snomed.info/sct", "cc")

    # 401 without the token, in the documented error shape
    with open(image, "rb") as f:
        r = requests.post(f"{base}/predict/image", files={"image_file": f}, timeout=30)
    check(r.status_code == 401, "401")
    err = r.json()
    check(err["success"] is False and err["error"]["code"], "error shape")
    check(err["meta"]["request_id"] and err["meta"]["timestamp"], "error meta")
    print("voxray client: ok")


if __name__ == "__main__":
    main()
