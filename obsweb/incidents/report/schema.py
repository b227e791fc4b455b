"""The report's JSON format, checked against the schema committed in the repository."""

import functools
import json

import jsonschema
from django.conf import settings

SCHEMA_PATH = settings.BASE_DIR / "docs" / "schemas" / "incident-report.schema.json"


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def errors(document: dict) -> list[str]:
    """Every way `document` breaks the schema, as `where: what`; empty when it is valid. Where a
    value matches none of several shapes (an object or null), the deepest complaint: it names the
    field that is wrong, where "is not null" would not."""
    found = []
    for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.path))):
        if error.context:
            error = max(error.context, key=lambda e: len(e.absolute_path))
        found.append(f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}")
    return found


def validate(document: dict) -> None:
    found = errors(document)
    if found:
        raise ValueError(f"the report does not match {SCHEMA_PATH.name}: " + "; ".join(found[:5]))
