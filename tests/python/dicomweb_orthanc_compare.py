"""Stores the same files in radstream and in Orthanc's DICOMweb plugin (both by STOW-RS with
dicomweb-client), then compares, tag by tag, the QIDO-RS answers (studies, series,
instances) and the WADO-RS instance metadata: every attribute both return must have the same
VR and value. Documented differences are tolerated and listed:

- RetrieveURL / RetrieveURI (0008,1190): other host and root; the path from /studies/ on must
  be the same.
- BulkDataURI vs InlineBinary: each server picks its own threshold for moving binary values
  out of line; only the VR is compared.

Usage: dicomweb_orthanc_compare.py NODE_URL TOKEN ORTHANC_URL FILE...
Prints the compared tags per level and the tags only one side returns; exits 1 on a mismatch.
"""
import json
import sys
from collections import defaultdict

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag

node_url, token, orthanc_url, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
node = DICOMwebClient(url=node_url, headers={"Authorization": f"Bearer {token}"})
orthanc = DICOMwebClient(url=orthanc_url)
datasets = [dcmread(f) for f in files]

for name, client in (("radstream", node), ("orthanc", orthanc)):
    r = client.store_instances(datasets)
    if len(r.ReferencedSOPSequence) != len(datasets) or len(r.get("FailedSOPSequence", [])):
        print(json.dumps({"failed": f"STOW-RS to {name}"}))
        sys.exit(1)

report = {
    "compared": defaultdict(set),
    "only_radstream": defaultdict(set),
    "only_orthanc": defaultdict(set),
    "tolerated": defaultdict(set),
}
mismatches = []


def name(tag):
    try:
        return keyword_for_tag(int(tag, 16)) or tag
    except ValueError:
        return tag


def norm_value(vr, v):
    if vr in ("DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"):
        return [None if x is None else float(x) for x in v]
    if vr == "PN":
        return [x.get("Alphabetic") if isinstance(x, dict) else x for x in v]
    return v


def compare(level, path, a, b):
    """a: radstream's data set (DICOM JSON), b: Orthanc's."""
    for tag in sorted(set(a) | set(b)):
        where = f"{path}{name(tag)}"
        if tag not in b:
            report["only_radstream"][level].add(name(tag))
            continue
        if tag not in a:
            report["only_orthanc"][level].add(name(tag))
            continue
        x, y = a[tag], b[tag]
        report["compared"][level].add(name(tag))
        if x.get("vr") != y.get("vr"):
            mismatches.append({"at": f"{level} {where}", "radstream": x, "orthanc": y})
            continue
        vr = x.get("vr")
        if tag == "00081190":
            px = [u.split("/studies/", 1)[-1] for u in x.get("Value", [])]
            py = [u.split("/studies/", 1)[-1] for u in y.get("Value", [])]
            report["tolerated"][level].add("RetrieveURL (host and root)")
            if px != py:
                mismatches.append({"at": f"{level} {where}", "radstream": px, "orthanc": py})
            continue
        binary = {"BulkDataURI", "InlineBinary"}
        if binary & set(x) or binary & set(y):
            report["tolerated"][level].add(f"{name(tag)} (BulkDataURI/InlineBinary)")
            continue
        if vr == "SQ":
            xs, ys = x.get("Value", []), y.get("Value", [])
            if len(xs) != len(ys):
                mismatches.append({"at": f"{level} {where}", "radstream": len(xs), "orthanc": len(ys)})
                continue
            for i, (ix, iy) in enumerate(zip(xs, ys)):
                compare(level, f"{where}[{i}].", ix, iy)
            continue
        vx, vy = norm_value(vr, x.get("Value", [])), norm_value(vr, y.get("Value", []))
        if vx != vy:
            mismatches.append({"at": f"{level} {where}", "radstream": x, "orthanc": y})


def by_uid(items, tag):
    return {i[tag]["Value"][0]: i for i in items}


studies = sorted({d.StudyInstanceUID for d in datasets})
for study in studies:
    a = node.search_for_studies(search_filters={"StudyInstanceUID": study})
    b = orthanc.search_for_studies(search_filters={"StudyInstanceUID": study})
    if len(a) != 1 or len(b) != 1:
        mismatches.append({"at": f"study {study}", "radstream": len(a), "orthanc": len(b)})
        continue
    compare("studies", "", a[0], b[0])
    sa = by_uid(node.search_for_series(study_instance_uid=study), "0020000E")
    sb = by_uid(orthanc.search_for_series(study_instance_uid=study), "0020000E")
    if sorted(sa) != sorted(sb):
        mismatches.append({"at": f"series of {study}", "radstream": sorted(sa), "orthanc": sorted(sb)})
    for series in sorted(set(sa) & set(sb)):
        compare("series", "", sa[series], sb[series])
        ia = by_uid(node.search_for_instances(study_instance_uid=study, series_instance_uid=series), "00080018")
        ib = by_uid(orthanc.search_for_instances(study_instance_uid=study, series_instance_uid=series), "00080018")
        if sorted(ia) != sorted(ib):
            mismatches.append({"at": f"instances of {series}", "radstream": sorted(ia), "orthanc": sorted(ib)})
        for sop in sorted(set(ia) & set(ib)):
            compare("instances", "", ia[sop], ib[sop])
            ma = node.retrieve_instance_metadata(study, series, sop)
            mb = orthanc.retrieve_instance_metadata(study, series, sop)
            compare("metadata", "", ma, mb)

out = {k: {lvl: sorted(v) for lvl, v in d.items()} for k, d in report.items()}
out["mismatches"] = mismatches
print(json.dumps(out, indent=1, default=str))
sys.exit(1 if mismatches or not report["compared"]["metadata"] else 0)
