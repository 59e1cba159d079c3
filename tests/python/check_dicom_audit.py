"""Checks a DICOM audit export (GET /v1/audit?format=dicom-xml) read from stdin.

Each AuditMessage must validate against the PS3.15 A.5.1 RELAX NG schema
(fixtures/dicom_audit/audit_message.rnc, converted with rnc2rng, validated with lxml), and every
DCM code it carries must have that meaning in pydicom's PS3.16 dictionary. Prints a JSON
summary: the number of messages and, per message, the EventID code, the ParticipantObjectIDs
and the decoded queries.
"""

import base64
import json
import pathlib
import sys

import lxml.etree as et
import rnc2rng
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

root_dir = pathlib.Path(__file__).resolve().parents[2]
# The standard writes `##` documentation after the values it documents, which rnc2rng's
# grammar refuses; as plain comments they mean the same.
rnc = (root_dir / "fixtures/dicom_audit/audit_message.rnc").read_text().replace("##", "#")
schema = et.RelaxNG(et.fromstring(rnc2rng.dumps(rnc2rng.loads(rnc)).encode()))

dcm = {
    c.value: c.meaning
    for c in (getattr(codes.DCM, n) for n in dir(codes.DCM))
    if isinstance(c, Code)
}

doc = et.fromstring(sys.stdin.buffer.read())
assert doc.tag == "AuditMessages", doc.tag
messages = list(doc)
assert int(doc.get("count")) == len(messages)
summary = []
for m in messages:
    if not schema.validate(m):
        sys.exit(f"invalid AuditMessage: {schema.error_log}\n{et.tostring(m).decode()}")
    for coded in m.iter():
        if coded.get("codeSystemName") == "DCM":
            code, meaning = coded.get("csd-code"), coded.get("originalText")
            if dcm.get(code) != meaning:
                sys.exit(f"DCM {code} is {dcm.get(code)!r}, not {meaning!r}")
    ev = m.find("EventIdentification")
    summary.append(
        {
            "event": ev.find("EventID").get("csd-code"),
            "action": ev.get("EventActionCode"),
            "outcome": ev.get("EventOutcomeIndicator"),
            "at": ev.get("EventDateTime"),
            "users": [p.get("UserID") for p in m.findall("ActiveParticipant")],
            "source": m.find("AuditSourceIdentification").get("AuditSourceID"),
            "objects": [
                o.get("ParticipantObjectID") for o in m.findall("ParticipantObjectIdentification")
            ],
            "queries": [
                base64.b64decode(q.text or "").decode()
                for q in m.iter("ParticipantObjectQuery")
            ],
        }
    )
print(json.dumps({"count": len(messages), "messages": summary}))
