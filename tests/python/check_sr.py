"""Checks an SR written by radstream with third-party code: highdicom parses it as a TID 1500
Comprehensive 3D SR and finds one measurement group per expected finding (tracking
identifier, finding code, probability, presence); every code in the file is in pydicom's
dictionary (PS3.16), except those listed as not verifiable there.

usage: check_sr.py SR.dcm EXPECTED.json
EXPECTED.json: {"findings": [{"code": "...", "scheme": "SCT"|"DCM", "name": "...", "present": bool,
                "probability": float}],
                "unverifiable": ["code", ...]}
Prints one JSON line with what it checked; exits non-zero on the first mismatch."""

import json
import sys

import highdicom as hd
import pydicom
import pydicom.sr._concepts_dict as cd
from pydicom.sr.codedict import codes

sr_path, expected_path = sys.argv[1], sys.argv[2]
expected = json.load(open(expected_path))
ds = pydicom.dcmread(sr_path)
assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34", ds.SOPClassUID
assert ds.VerificationFlag == "UNVERIFIED"
assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"

sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
report = sr.content
assert isinstance(report, hd.sr.MeasurementReport), type(report)
groups = report.get_image_measurement_groups()
found = 0
for f in expected["findings"]:
    code = hd.sr.CodedConcept(f["code"], f["scheme"], f["name"])
    matches = report.get_image_measurement_groups(finding_type=code)
    assert matches, f"no measurement group for {f}"
    g = matches[0]
    assert g.tracking_identifier and g.tracking_uid, "tracking identifiers missing"
    probs = [m for m in g.get_measurements() if m.name == codes.DCM.Probability]
    assert probs, "no probability NUM"
    assert abs(float(probs[0].value) - f["probability"]) < 1e-3, (probs[0].value, f)
    assert probs[0].unit == codes.UCUM.Ratio, probs[0].unit
    evals = [e for e in g.get_qualitative_evaluations() if e.name == codes.DCM.PresenceOfProperty]
    assert evals, "no presence evaluation"
    want = codes.DCM.Present if f["present"] else codes.DCM.Absent
    assert evals[0].value == want, (evals[0].value, f)
    for concept in (codes.DCM.AlgorithmName, codes.DCM.AlgorithmVersion, codes.DCM.AlgorithmManufacturer):
        items = hd.sr.utils.find_content_items(g[0], name=concept)
        assert items and items[0].TextValue, f"algorithm identification {concept} missing"
    found += 1

# Every coded concept in the file against pydicom's dictionary.
known = {}
for scheme, by_kw in cd.concepts.items():
    for kw, by_code in by_kw.items():
        for code, (meaning, _) in by_code.items():
            known.setdefault((scheme, code), set()).add(meaning.lower())
checked, unverified = set(), set()


def walk(d):
    for elem in d:
        if elem.VR == "SQ":
            for item in elem.value:
                if "CodeValue" in item and "CodingSchemeDesignator" in item:
                    key = (item.CodingSchemeDesignator, item.CodeValue)
                    if item.CodeValue in expected["unverifiable"] or key == ("RFC5646", "en-US"):
                        unverified.add(key)
                    else:
                        assert key in known, f"{key} {item.CodeMeaning!r} is not in pydicom's dictionary"
                        m = item.CodeMeaning.lower()
                        assert any(m == k or k.startswith(m + " (") for k in known[key]), (
                            f"{key}: meaning {item.CodeMeaning!r} differs from {known[key]}"
                        )
                        checked.add(key)
                walk(item)


walk(ds)
print(json.dumps({"groups": len(groups), "findings_checked": found,
                  "codes_checked": sorted(f"{s}:{c}" for s, c in checked),
                  "codes_not_in_dictionary": sorted(f"{s}:{c}" for s, c in unverified)}))
