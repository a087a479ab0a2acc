"""The event contract: JSON Schema files, their compiled validators and the Python records."""

from __future__ import annotations

from hitrun.schemas.registry import SCHEMA_DIR, compiled_validator, load_schema, schema_names

__all__ = ["SCHEMA_DIR", "compiled_validator", "load_schema", "schema_names"]
