"""SQL-on-FHIR v2 ViewDefinitions compiled to set-based DuckDB SQL (docs/views.md)."""

from fhir_mappings.views.compiler import (
    CompiledView,
    ViewColumn,
    build_view,
    compile_view,
    definition_fingerprint,
    load_view_definition,
)
from fhir_mappings.views.errors import FhirPathError, ViewDefinitionError

__all__ = [
    "CompiledView",
    "FhirPathError",
    "ViewColumn",
    "ViewDefinitionError",
    "build_view",
    "compile_view",
    "definition_fingerprint",
    "load_view_definition",
]
