"""Checks the OpenAPI document a node serves, and real answers against it.

    check_openapi.py DOCUMENT.json ANSWERS.json

DOCUMENT.json is validated with openapi-spec-validator (OpenAPI 3.0 or 3.1, detected).
ANSWERS.json is a list of {"method", "path" (the template, e.g. /v1/jobs/{job_id}),
"status", "content_type", "body" (parsed JSON, or null to skip the body)}: each answer's
status must be documented for its operation (or covered by `default`), its media type listed
under that answer's content, and a JSON body must validate against the documented schema.
Prints one line per answer; exits 1 on the first failure.
"""

import json
import sys

import jsonschema
from openapi_spec_validator import validate


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check(doc, answer):
    where = f'{answer["method"]} {answer["path"]} -> {answer["status"]}'
    op = doc["paths"].get(answer["path"], {}).get(answer["method"].lower())
    if op is None:
        raise AssertionError(f"{where}: no such operation in the document")
    responses = op["responses"]
    response = responses.get(str(answer["status"]), responses.get("default"))
    if response is None:
        raise AssertionError(f"{where}: status not documented ({sorted(responses)})")
    response = resolve(doc, response)
    content = response.get("content", {})
    media = (answer.get("content_type") or "").split(";")[0].strip()
    listed = {k.split(";")[0].strip(): v for k, v in content.items()}
    if media not in listed:
        raise AssertionError(f"{where}: {media!r} not among {sorted(listed)}")
    body = answer.get("body")
    if body is None or media != "application/json":
        return f"{where} {media}"
    schema = listed[media]["schema"]
    # Refs are document-absolute (#/components/...): validate from a root that carries them.
    root = {"components": doc.get("components", {}), "allOf": [schema]}
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.absolute_path)
        raise AssertionError(f"{where}: body at /{path}: {e.message}")
    return f"{where} {media} (schema ok)"


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    with open(sys.argv[2]) as f:
        answers = json.load(f)
    validate(doc)
    print(f'document: valid OpenAPI {doc["openapi"]}, {len(doc["paths"])} paths')
    passed = 0
    for answer in answers:
        try:
            print("ok", check(doc, answer))
            passed += 1
        except AssertionError as e:
            print("FAIL", e)
            sys.exit(1)
    print(f"answers: {passed} checked against the document")


if __name__ == "__main__":
    main()
