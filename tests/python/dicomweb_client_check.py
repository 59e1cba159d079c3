"""Drives the node's DICOMweb API with dicomweb-client (a real peer): STOW, QIDO, WADO.

Usage: dicomweb_client_check.py BASE_URL TOKEN STUDY_UID FILE...
Prints one JSON object with what it saw; exits non-zero on the first mismatch.
"""
import json
import sys

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

base, token, study, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
client = DICOMwebClient(url=base, headers={"Authorization": f"Bearer {token}"})
datasets = [dcmread(f) for f in files]
out = {}


def check(cond, what):
    if not cond:
        print(json.dumps({"failed": what, "seen": out}, default=str))
        sys.exit(1)


stow = client.store_instances(datasets)
refs = stow.ReferencedSOPSequence
out["stored"] = [r.ReferencedSOPInstanceUID for r in refs]
check(len(refs) == len(datasets), "every instance stored")
check("FailedSOPSequence" not in stow, "no failures")

studies = client.search_for_studies(search_filters={"StudyInstanceUID": study})
check(len(studies) == 1, "one study found")
s = studies[0]
out["study"] = s
check(s["0020000D"]["Value"] == [study], "StudyInstanceUID")
check(s["00201208"]["Value"] == [len(datasets)], "NumberOfStudyRelatedInstances")
check(s["00201206"]["Value"] == [1], "NumberOfStudyRelatedSeries")
pid = datasets[0].PatientID
wild = pid[:-1] + "*" if len(pid) > 1 else "*"
check(
    any(x["0020000D"]["Value"] == [study] for x in client.search_for_studies(search_filters={"PatientID": wild})),
    "PatientID wildcard match",
)
check(
    client.search_for_studies(search_filters={"StudyInstanceUID": study, "PatientID": "no-such-id"}) == [],
    "non-matching PatientID gives nothing",
)

series = client.search_for_series(study_instance_uid=study)
check(len(series) == 1, "one series")
series_uid = series[0]["0020000E"]["Value"][0]
check(series_uid == datasets[0].SeriesInstanceUID, "SeriesInstanceUID")
instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series_uid)
check(sorted(i["00080018"]["Value"][0] for i in instances) == sorted(d.SOPInstanceUID for d in datasets), "instances")
paged = client.search_for_instances(study_instance_uid=study, limit=1, offset=1)
check(len(paged) == 1, "limit/offset")
with_desc = client.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=["00080090", "PatientAge"])
out["includefield"] = with_desc[0].get("00101010")

retrieved = client.retrieve_study(study)
check(len(retrieved) == len(datasets), "retrieve study")
by_uid = {d.SOPInstanceUID: d for d in datasets}
for r in retrieved:
    orig = by_uid[r.SOPInstanceUID]
    check(r.PixelData == orig.PixelData, "pixel data retrieved as stored")
    check(r.file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID, "stored transfer syntax")

d0 = datasets[0]
inst = client.retrieve_instance(study, d0.SeriesInstanceUID, d0.SOPInstanceUID)
check(inst.SOPInstanceUID == d0.SOPInstanceUID, "retrieve instance")
meta = client.retrieve_instance_metadata(study, d0.SeriesInstanceUID, d0.SOPInstanceUID)
out["metadata_keys"] = len(meta)
check(meta["00100020"]["Value"] == [d0.PatientID], "metadata PatientID")
check(meta["00280010"]["Value"] == [d0.Rows], "metadata Rows")
check("BulkDataURI" in meta["7FE00010"], "pixel data as BulkDataURI")
bulk = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
out["bulk_parts"] = len(bulk)
if d0.file_meta.TransferSyntaxUID.is_encapsulated:
    check(b"".join(bulk) != b"", "encapsulated pixel data bulk")
else:
    check(bulk[0] == d0.PixelData, "native pixel data bulk equals the file's")
series_meta = client.retrieve_series_metadata(study, d0.SeriesInstanceUID)
check(len(series_meta) == len(datasets), "series metadata")
print(json.dumps(out, default=str))
