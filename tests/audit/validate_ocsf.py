"""Validates OCSF events, one JSON object a line, against the OCSF schema with an independent
validator: the schema as `ocsf-json-schema` bundles it (no network), turned into a JSON Schema
per class and profile set and applied with `jsonschema`. It also checks what the JSON Schema
cannot: type_uid = class_uid * 100 + activity_id, and the schema version the event names.

Usage: validate_ocsf.py FILE [VERSION]. Prints one line per problem; exits 1 if any.
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def main():
    path = sys.argv[1]
    version = sys.argv[2] if len(sys.argv) > 2 else "1.5.0"
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version))
    validators = {}
    bad = 0
    checked = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            problems = []
            try:
                event = json.loads(line)
                class_uid = event["class_uid"]
                profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
                key = (class_uid, profiles)
                if key not in validators:
                    name = schema.lookup_class_name_from_uid(class_uid)
                    validators[key] = Draft202012Validator(schema.get_class_schema(name, list(profiles)))
                for e in validators[key].iter_errors(event):
                    where = "/".join(str(p) for p in e.absolute_path) or "<root>"
                    problems.append(f"{where}: {e.message}")
                if event.get("type_uid") != class_uid * 100 + event.get("activity_id", -1):
                    problems.append("type_uid is not class_uid * 100 + activity_id")
                if event.get("metadata", {}).get("version") != version:
                    problems.append(f"metadata.version is not {version}")
            except (ValueError, KeyError, TypeError) as e:
                problems.append(f"{type(e).__name__}: {e}")
            for p in problems:
                print(f"{path}:{n}: {p}")
            bad += bool(problems)
            checked += 1
    print(f"{checked} events checked, {bad} invalid")
    sys.exit(1 if bad or checked == 0 else 0)


main()
