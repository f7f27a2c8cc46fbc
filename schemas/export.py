"""JSON Schema export of the common schema, generated from the models so it cannot drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.models import Answer, Referral, Reply

__all__ = ["SCHEMAS", "export_schemas", "json_schema"]

SCHEMAS: dict[str, type[Referral] | type[Reply] | type[Answer]] = {
    "referral": Referral,
    "reply": Reply,
    "answer": Answer,
}


def json_schema(name: str) -> dict[str, Any]:
    model = SCHEMAS[name]
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://kela-handoff.example/v1/schema/{name}.json"
    return schema


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = directory / f"{name}.json"
        path.write_text(json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    return written
