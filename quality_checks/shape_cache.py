"""An exact fast path for structural validation: validate each resource *shape* once.

The R4B pydantic models (`fhir.resources` / `fhir_core`) decide whether a resource dict is valid from
two things only:

1. its **shape**: which keys are present in every object, and the JSON kind of every value (object,
   list, string, int, float, bool, null). Unknown keys (`extra="forbid"`), a non-object where an
   element is expected, a null inside a list of elements (`reject_null_complex_elements`), a missing
   required element (`_validate_required_primitive_elements`, required fields) and two `value[x]`
   choices at once (`_validate_one_of_many`) are all functions of the shape;
2. whether each **primitive value** is valid for its FHIR primitive type (id, code, string, uri,
   dateTime, positiveInt, ...), which the model checks value by value with the type annotation of
   that field.

So a resource whose shape has already passed the full model, and whose primitive values each pass
their field's own validator, passes the full model too. `ShapeCache.probe()` walks a resource once,
beside the R4B model classes, and returns its shape signature plus the primitive leaves with their
validators; the caller validates the first resource of every shape with the full model and records
the shape when the model found nothing. Later resources of a recorded shape only need their
primitives checked. The primitive validators are pydantic `TypeAdapter`s built from the very
annotation the model declares for that field (`model_fields[...].annotation`, with the model's
config), never a hand-written copy.

Lists of elements are summarised as the *set* of their element shapes: the models validate each
list element on its own, no R4B list field carries a length constraint (the table builder checks:
a field with constraint metadata, or `Annotated` anywhere in an element annotation, is left to the
full model), a required list only needs to be present (an empty list is its own shape), and the
only list-level model check is "no null elements", which the set keeps (null is an element shape).
Lists of primitives keep their length and order (they are rare, and keeping them is conservative).
Object keys keep their order.

Anything the argument does not cover goes to the full model, always: primitive extensions (`_x`
keys), `extension`/`modifierExtension`, `contained` (its element type is chosen by the value of
`resourceType`), `fhir_comments`, a `resourceType` below the top level, keys that are field names
but not JSON names (pydantic's `populate_by_name` would accept `class_fhir` for `class`), unknown
keys, and any value whose Python type is not exactly the JSON one (a tuple for a list, a JSON
string where an element object is expected: the models would parse that string as JSON).
"""

from __future__ import annotations

import typing
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import ConfigDict, TypeAdapter

# Keys that always send a resource to the full model (see the module docstring).
ALWAYS_FULL_KEYS = frozenset({"extension", "modifierExtension", "contained", "fhir_comments", "resourceType"})
# Primitive values of these types are remembered (value -> valid?) in a bounded cache. Floats are
# not (0.0 == -0.0 but their decimal text differs), nor are long strings (memory).
_CACHEABLE_SCALARS = (int, bool)
_MAX_CACHED_STR = 256

_PRIMITIVE = 0
_COMPLEX = 1
_COMPLEX_LIST = 2
_SKIP = 3  # the top-level resourceType


class _Field:
    """How one JSON key of one model class is walked."""

    __slots__ = ("check", "child", "good", "kind", "table")

    def __init__(
        self, kind: int, check: int = -1, good: set[str] | None = None, child: type | None = None
    ) -> None:
        self.kind = kind  # _PRIMITIVE, _COMPLEX, _COMPLEX_LIST or _SKIP
        self.check = check  # primitives: index of the field's validator in PrimitiveChecks
        self.good = good  # primitives: strings known to pass that validator (shared per validator)
        self.child = child  # elements: the model class of the value
        self.table: dict[str, _Field] | None = None  # elements: the child's table, filled on first use


class PrimitiveChecks:
    """The R4B model's own validator for each primitive field annotation, with verdict caches.

    A primitive's validity is a pure function of (annotation, value), so verdicts are remembered:
    strings that passed, per validator, in `good` sets (looked up during the walk), and short
    scalars in an LRU. The value's Python type is part of every key: `True == 1`, but a boolean is
    not a valid integer. Together the caches hold at most about `cache_size` entries.
    """

    def __init__(self, cache_size: int = 65536) -> None:
        self.cache_size = cache_size
        self._adapters: list[TypeAdapter[Any]] = []
        self.fhir_types: list[str] = []
        self.good: list[set[str]] = []
        self._good_size = 0
        self._index: dict[Any, int] = {}
        self._cached: Callable[[int, type, Any], bool] = lru_cache(maxsize=cache_size)(self._run)

    def register(self, annotation: Any, config: ConfigDict, fhir_type: str) -> int:
        """Index of the validator for `annotation` under the model `config` (built once)."""
        try:
            key: Any = (annotation, tuple(sorted(config.items(), key=lambda kv: kv[0])))
            hash(key)
        except TypeError:  # unhashable metadata: one validator per registration, still exact
            key = object()
        found = self._index.get(key)
        if found is not None:
            return found
        self._adapters.append(TypeAdapter(annotation, config=config))
        self.fhir_types.append(fhir_type)
        self.good.append(set())
        self._index[key] = len(self._adapters) - 1
        return len(self._adapters) - 1

    def adapter(self, index: int) -> TypeAdapter[Any]:
        """The validator registered at `index`."""
        return self._adapters[index]

    def _run(self, index: int, _vtype: type, value: Any) -> bool:
        try:
            self._adapters[index].validate_python(value)
        except Exception:  # any failure (ValidationError, or a TypeError the model reports too)
            return False
        return True

    def ok(self, index: int, value: Any) -> bool:
        """True when `value` passes the validator at `index` (exactly as inside the model)."""
        vtype = type(value)
        if vtype is str:
            if value in self.good[index]:
                return True
            if not self._run(index, vtype, value):
                return False
            if len(value) <= _MAX_CACHED_STR:
                if self._good_size >= self.cache_size:  # bounded: start again rather than grow
                    for known in self.good:
                        known.clear()
                    self._good_size = 0
                self.good[index].add(value)
                self._good_size += 1
            return True
        if vtype in _CACHEABLE_SCALARS:
            return self._cached(index, vtype, value)
        return self._run(index, vtype, value)


def _fhir_base_class(annotation: Any) -> type | None:
    """The `fhir_core` FhirBase subclass inside a field annotation (`Optional[List[XType]]`), if any."""
    from fhir_core.types import FhirBase

    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        return annotation
    for arg in typing.get_args(annotation):
        found = _fhir_base_class(arg)
        if found is not None:
            return found
    return None


def _has_constraints(annotation: Any) -> bool:
    """True when an element annotation carries `Annotated` metadata anywhere (none in R4B today)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return True
    return any(_has_constraints(arg) for arg in typing.get_args(annotation))


def _field_table(model: type, checks: PrimitiveChecks) -> dict[str, _Field]:
    """JSON key -> how to walk it, for one R4B model class. Keys absent here go to the full model."""
    from fhir_core.types import FhirElementOrResourceBase
    from fhir_core.utils import get_fhir_type_name, is_list_type, is_primitive_type

    config = ConfigDict(**model.model_config)  # type: ignore[attr-defined]
    table: dict[str, _Field] = {}
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        key = info.alias or name
        if key in ALWAYS_FULL_KEYS or key.startswith("_") or name.endswith("__ext"):
            continue
        if info.metadata:  # constraints outside the annotation: not covered by the argument
            continue
        if is_primitive_type(info):
            try:
                fhir_type = str(get_fhir_type_name(info))
            except ValueError:
                fhir_type = "?"
            index = checks.register(info.annotation, config, fhir_type)
            table[key] = _Field(_PRIMITIVE, check=index, good=checks.good[index])
            continue
        base = _fhir_base_class(info.annotation)
        if base is None or issubclass(base, FhirElementOrResourceBase):
            continue  # a resource-typed element (its class depends on a value): full model
        if _has_constraints(info.annotation):
            continue  # e.g. a list length limit: the set summary of lists would not cover it
        kind = _COMPLEX_LIST if is_list_type(info) else _COMPLEX
        table[key] = _Field(kind, child=base.get_model_klass())  # type: ignore[attr-defined]
    return table


_NULL = type(None)


class ShapeCache:
    """Shape signatures of resources and an LRU of shapes the full model found clean.

    Not thread-safe: one cache per validator, one validator per landing run.
    """

    def __init__(self, max_shapes: int = 4096, primitive_cache_size: int = 65536) -> None:
        self.max_shapes = max_shapes
        self.checks = PrimitiveChecks(primitive_cache_size)
        self._tables: dict[type, dict[str, _Field]] = {}
        self._top_tables: dict[type, dict[str, _Field]] = {}
        self._clean: OrderedDict[Any, None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._clean)

    def _table(self, model: type) -> dict[str, _Field]:
        table = self._tables.get(model)
        if table is None:
            table = self._tables[model] = _field_table(model, self.checks)
        return table

    def probe(self, model: type, resource: dict[str, Any]) -> tuple[Any, list[tuple[int, Any]]] | None:
        """(signature, primitive leaves still to check) for a resource, or None: full model only.

        Leaves are (validator index, value); strings already known to pass their validator are left
        out. The top-level `resourceType` must already equal the model's resource type.
        """
        table = self._top_tables.get(model)
        if table is None:
            # The top level alone may carry `resourceType` (checked by the caller); nested tables
            # do not know the key, so a nested resourceType is never covered.
            table = self._top_tables[model] = {**self._table(model), "resourceType": _Field(_SKIP)}
        leaves: list[tuple[int, Any]] = []
        sig = self._walk(resource, table, leaves)
        if sig is None:
            return None
        return sig, leaves

    def _walk(self, node: dict[str, Any], table: dict[str, _Field], leaves: list[tuple[int, Any]]) -> Any:
        sig: list[Any] = []
        add = sig.append
        leaf = leaves.append
        get = table.get
        for key, value in node.items():
            spec = get(key)
            if spec is None:
                return None
            kind = spec.kind
            vtype = type(value)
            if kind == _PRIMITIVE:
                add(key)
                if vtype is str:
                    add(str)
                    if value not in spec.good:  # type: ignore[operator]
                        leaf((spec.check, value))
                elif vtype is list:  # primitive lists keep their length and order
                    add(tuple(type(v) for v in value))
                    leaf((spec.check, value))
                else:
                    add(vtype)
                    leaf((spec.check, value))
                continue
            if kind == _SKIP:
                continue
            add(key)
            if vtype is _NULL:
                add(_NULL)
                continue
            child_table = spec.table
            if child_table is None:
                child_table = spec.table = self._table(spec.child)  # type: ignore[arg-type]
            if kind == _COMPLEX:
                if vtype is not dict:
                    return None
                child = self._walk(value, child_table, leaves)
                if child is None:
                    return None
                add(child)
                continue
            if vtype is not list:  # _COMPLEX_LIST
                return None
            shapes: set[Any] = set()
            for element in value:
                etype = type(element)
                if etype is dict:
                    child = self._walk(element, child_table, leaves)
                    if child is None:
                        return None
                    shapes.add(child)
                elif etype is _NULL:
                    shapes.add(_NULL)
                else:
                    return None
            add(frozenset(shapes))
        return tuple(sig)

    def is_clean(self, key: Any) -> bool:
        """True when the shape `key` passed the full model before (and mark it recently used)."""
        if key in self._clean:
            self._clean.move_to_end(key)
            return True
        return False

    def remember(self, key: Any) -> None:
        """Record a shape the full model found clean; evict the least recently used beyond the bound."""
        self._clean[key] = None
        self._clean.move_to_end(key)
        while len(self._clean) > self.max_shapes:
            self._clean.popitem(last=False)
            self.evictions += 1

    def primitives_ok(self, leaves: list[tuple[int, Any]]) -> bool:
        """True when every primitive leaf passes its field's validator."""
        ok = self.checks.ok
        for index, value in leaves:
            if not ok(index, value):
                return False
        return True

    def primitive_validators(self, model: type) -> dict[str, TypeAdapter[Any]]:
        """JSON key -> the validator the fast path uses for that primitive field of `model`."""
        return {
            key: self.checks.adapter(spec.check)
            for key, spec in self._table(model).items()
            if spec.kind == _PRIMITIVE
        }

    def describe(self, model: type, resource: dict[str, Any]) -> dict[str, str]:
        """Path -> FHIR primitive type of every primitive leaf (for docs and debugging)."""
        out: dict[str, str] = {}

        def walk(node: dict[str, Any], cls: type, path: str) -> None:
            table = self._table(cls)
            for key, value in node.items():
                spec = table.get(key)
                if spec is None:
                    continue
                here = f"{path}.{key}" if path else key
                if spec.kind == _PRIMITIVE:
                    out[here] = self.checks.fhir_types[spec.check]
                elif spec.kind == _COMPLEX and isinstance(value, dict):
                    walk(value, spec.child, here)  # type: ignore[arg-type]
                elif spec.kind == _COMPLEX_LIST and isinstance(value, list):
                    for i, element in enumerate(value):
                        if isinstance(element, dict):
                            walk(element, spec.child, f"{here}[{i}]")  # type: ignore[arg-type]

        walk({k: v for k, v in resource.items() if k != "resourceType"}, model, "")
        return out
