"""Reads a SEG written by radstream with pydicom and checks it against what the node computed:
each frame equals the lung label mask resampled to the source geometry (the expected labels
are given as raw bytes, row-major), the segments are PS3.16's lung with laterality, each frame
references its segment and the source image, and every code is in pydicom's dictionary.

usage: check_seg.py SEG.dcm LABELS.raw EXPECTED.json
EXPECTED.json: {"rows": int, "cols": int, "source_sop": "...", "study_uid": "...",
                "segments": [{"number": 1, "label": 1, "laterality": "24028007"}, ...]}
Prints one JSON line with what it checked; exits non-zero on the first mismatch."""

import json
import sys

import numpy as np
import pydicom
import pydicom.sr._concepts_dict as cd

seg_path, labels_path, expected_path = sys.argv[1:4]
exp = json.load(open(expected_path))
ds = pydicom.dcmread(seg_path)
assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4", ds.SOPClassUID
assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
assert ds.StudyInstanceUID == exp["study_uid"]
assert (ds.Rows, ds.Columns) == (exp["rows"], exp["cols"]), (ds.Rows, ds.Columns)
assert "FrameOfReferenceUID" not in ds, "a projection radiograph has no Frame of Reference"
labels = np.fromfile(labels_path, dtype=np.uint8).reshape(exp["rows"], exp["cols"])
frames = ds.pixel_array
if frames.ndim == 2:
    frames = frames[np.newaxis]
assert frames.shape[0] == len(exp["segments"]) == int(ds.NumberOfFrames), frames.shape

known = {}
for scheme, by_kw in cd.concepts.items():
    for kw, by_code in by_kw.items():
        for code, (meaning, _) in by_code.items():
            known.setdefault((scheme, code), set()).add(meaning.lower())


def check_code(item):
    key = (item.CodingSchemeDesignator, item.CodeValue)
    assert key in known, f"{key} is not in pydicom's dictionary"
    assert item.CodeMeaning.lower() in known[key], (key, item.CodeMeaning, known[key])
    return item.CodeValue


pixels = {}
for i, s in enumerate(exp["segments"]):
    item = ds.SegmentSequence[i]
    assert item.SegmentNumber == s["number"], (item.SegmentNumber, s)
    assert check_code(item.SegmentedPropertyCategoryCodeSequence[0]) == "91723000"
    prop = item.SegmentedPropertyTypeCodeSequence[0]
    assert check_code(prop) == "39607008"
    assert check_code(prop.SegmentedPropertyTypeModifierCodeSequence[0]) == s["laterality"]
    assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName
    algo = item.SegmentationAlgorithmIdentificationSequence[0]
    assert check_code(algo.AlgorithmFamilyCodeSequence[0]) == "123110"
    assert algo.AlgorithmName and algo.AlgorithmVersion
    frame = ds.PerFrameFunctionalGroupsSequence[i]
    assert frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == s["number"]
    src = frame.DerivationImageSequence[0].SourceImageSequence[0]
    assert src.ReferencedSOPInstanceUID == exp["source_sop"]
    want = (labels == s["label"]).astype(np.uint8)
    got = frames[i].astype(np.uint8)
    assert np.array_equal(got, want), f"frame {i}: {int((got != want).sum())} pixels differ"
    pixels[s["number"]] = int(want.sum())
ref = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
assert ref.ReferencedSOPInstanceUID == exp["source_sop"]
print(json.dumps({"frames": int(frames.shape[0]), "rows": ds.Rows, "cols": ds.Columns,
                  "pixels_per_segment": pixels}))
