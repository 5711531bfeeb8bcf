"""Errors raised while loading or compiling a SQL-on-FHIR v2 ViewDefinition."""

from __future__ import annotations


class ViewDefinitionError(ValueError):
    """A ViewDefinition is malformed or uses a feature the compiler does not support."""


class FhirPathError(ViewDefinitionError):
    """A FHIRPath expression in a ViewDefinition does not parse or cannot be compiled to SQL."""
