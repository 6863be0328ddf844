"""Checks real answers of a running canaryd against docs/openapi.yaml.

Run by tests/openapi.rs as `python3 tests/openapi_validate.py DOC EXCHANGES`:
DOC is the OpenAPI document, EXCHANGES a JSON array of
{"method", "path" (the document's template), "status", "content_type",
"body" (JSON or text)} the test recorded, or {"schema": "#/components/
schemas/NAME", "body"} for a stream event's data. Checks that the document is valid
OpenAPI 3.1 (openapi-spec-validator), that each answer's status and content
type are documented for its route, and that each JSON body validates
against its schema (JSON Schema 2020-12, the document's dialect). Prints
every problem and exits 1 if there is one.
"""

import json
import sys

try:
    import yaml
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate as validate_spec
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
except ImportError as e:  # the test says how to install it
    print(f"missing Python module: {e.name}; run `python3 -m pip install openapi-spec-validator`")
    sys.exit(2)


def pointer(*parts):
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    doc_path, exchanges_path = sys.argv[1], sys.argv[2]
    with open(doc_path) as f:
        doc = yaml.safe_load(f)
    validate_spec(doc)
    registry = Registry().with_resource(
        "urn:canaryd-openapi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    with open(exchanges_path) as f:
        exchanges = json.load(f)
    problems = []
    for x in exchanges:
        if "schema" in x:  # a stream event: its data against one schema
            ref = "urn:canaryd-openapi" + x["schema"]
            for err in Draft202012Validator({"$ref": ref}, registry=registry).iter_errors(x["body"]):
                path = "".join(f"[{p!r}]" for p in err.absolute_path)
                problems.append(f"event {x['schema']}: data{path}: {err.message}")
            continue
        where = f"{x['method']} {x['path']} -> {x['status']}"
        op = doc["paths"].get(x["path"], {}).get(x["method"].lower())
        if op is None:
            problems.append(f"{where}: the route is not documented")
            continue
        status = str(x["status"])
        if status not in op["responses"]:
            problems.append(f"{where}: status {status} is not documented for this route")
            continue
        response = op["responses"][status]
        if "$ref" in response:  # "#/components/responses/NAME"
            response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
            ref_base = "/".join(["components", "responses", op["responses"][status]["$ref"].rsplit("/", 1)[1]])
        else:
            ref_base = pointer("paths", x["path"], x["method"].lower(), "responses", status)
        content = response.get("content", {})
        media = x["content_type"].split(";")[0].strip()
        if media not in content:
            problems.append(f"{where}: content type {media} is not documented (documented: {sorted(content)})")
            continue
        ref = "urn:canaryd-openapi#/" + ref_base + "/" + pointer("content", media, "schema")
        validator = Draft202012Validator({"$ref": ref}, registry=registry)
        for err in validator.iter_errors(x["body"]):
            path = "".join(f"[{p!r}]" for p in err.absolute_path)
            problems.append(f"{where}: body{path}: {err.message}")
    for p in problems:
        print(p)
    print(f"{len(exchanges)} answers checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


main()
