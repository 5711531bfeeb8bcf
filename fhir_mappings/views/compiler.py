"""Compile a SQL-on-FHIR v2 ViewDefinition into one set-based DuckDB query.

The query reads a relation with columns ``(id VARCHAR, resource JSON)`` holding the current version of
each resource of the view's type, and returns one row per view row with the view's columns in order.

How the select tree becomes SQL. A select node whose rows are exactly one per focus (only columns and
such nodes below it) is a list of column expressions. Any other node is a ``STRUCT(...)[]`` list of
its rows for the current focus: ``forEach`` maps the node body over the focus collection and
flattens, ``forEachOrNull`` does the same over ``[NULL]`` when the collection is empty, ``repeat``
over the pre-order list of descendants, ``unionAll`` concatenates its branches, and a node's
columns, nested selects and unionAll are combined as a cross product. The outer query unnests the
list of the root node per resource. Everything runs inside DuckDB; no Python runs per row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_mappings.views.errors import FhirPathError, ViewDefinitionError
from fhir_mappings.views.fhirpath import DECIMAL_TYPE, Expr, Generator, Scope, parse
from fhir_mappings.views.sql import quote_identifier, sql_literal

# The deepest `repeat` nesting followed; a deeper resource stops the query with an error rather than
# losing rows (questionnaires in practice nest a handful of levels).
REPEAT_MAX_DEPTH = 64

_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESOURCE_NAME = re.compile(r"[A-Z][A-Za-z]+")
_RELATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

_STRING_TYPES = (
    "string code id uri url canonical oid uuid markdown base64Binary date dateTime instant time xhtml".split()
)
# FHIR primitive types of columns and the DuckDB type each becomes; any other (or no) type is JSON.
_SQL_TYPES = {
    "boolean": "BOOLEAN",
    "integer": "BIGINT",
    "positiveInt": "BIGINT",
    "unsignedInt": "BIGINT",
    "integer64": "BIGINT",
    "decimal": "DOUBLE",
    **dict.fromkeys(_STRING_TYPES, "VARCHAR"),
}
_CONSTANT_KINDS = {
    "valueBoolean": "bool",
    "valueInteger": "int",
    "valuePositiveInt": "int",
    "valueUnsignedInt": "int",
    "valueInteger64": "int",
    "valueDecimal": "dec",
    **{f"value{t[0].upper()}{t[1:]}": "str" for t in _STRING_TYPES if t != "xhtml"},
}
_SELECT_KEYS = {
    "column",
    "select",
    "forEach",
    "forEachOrNull",
    "repeat",
    "unionAll",
    "description",
    "extension",
}
_COLUMN_KEYS = {"name", "path", "type", "collection", "description", "tag", "extension"}


@dataclass(frozen=True)
class ViewColumn:
    """One output column: its name, DuckDB type, declared FHIR type and whether it is a list."""

    name: str
    sql_type: str
    fhir_type: str | None
    collection: bool


@dataclass(frozen=True)
class CompiledView:
    """A compiled view: the query, its columns in order, and the resource type it reads."""

    sql: str
    columns: tuple[ViewColumn, ...]
    resource: str


@dataclass(frozen=True)
class _Part:
    """Rows of a select node for one focus: one SQL expression per column (exactly one row) or a list."""

    columns: tuple[ViewColumn, ...]
    exprs: tuple[str, ...] | None = None
    rows: str | None = None


def compile_view(view: dict[str, Any], *, source_relation: str) -> str:
    """Compile `view` to one DuckDB query over `source_relation` (columns id VARCHAR, resource JSON).

    `source_relation` is a table or view name, optionally schema-qualified. Raises
    `ViewDefinitionError` (or its subclass `FhirPathError`) if the view is invalid or unsupported.
    """
    return build_view(view, source_relation=source_relation).sql


def build_view(view: dict[str, Any], *, source_relation: str, carry: tuple[str, ...] = ()) -> CompiledView:
    """Like `compile_view`, also returning the output columns and the resource type.

    `carry` names columns of `source_relation` copied unchanged in front of the view's columns (the
    pipeline carries `source`, so a view over several FHIR sources keeps each row's origin); they are
    not in `columns`, and a view column of the same name is an error.
    """
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object")
    if not isinstance(source_relation, str) or not _RELATION_NAME.fullmatch(source_relation):
        raise ViewDefinitionError(f"invalid source relation name {source_relation!r}")
    resource = view.get("resource")
    if not isinstance(resource, str) or not _RESOURCE_NAME.fullmatch(resource):
        raise ViewDefinitionError("`resource` must name a FHIR resource type")
    selects = view.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewDefinitionError("`select` must be a non-empty list")
    gen = Generator(constants=_constants(view.get("constant", [])))
    scope = Scope(this="_src.resource", resource="_src.resource", row_index="CAST(0 AS BIGINT)")
    root = _Compiler(gen).node({"select": selects}, scope, "view")
    names = [c.name for c in root.columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ViewDefinitionError(f"duplicate column names: {', '.join(duplicates)}")

    conditions = [f"(_src.resource ->> 'resourceType') = {sql_literal(resource)}"]
    wheres = view.get("where", [])
    if not isinstance(wheres, list):
        raise ViewDefinitionError("`where` must be a list")
    for i, where in enumerate(wheres):
        if not isinstance(where, dict) or not isinstance(where.get("path"), str):
            raise ViewDefinitionError(f"where[{i}] must have a string `path`")
        expr = gen.compile(_parse(where["path"], f"where[{i}]"), scope)
        conditions.append(f"coalesce({gen.to_bool(expr, f'where[{i}] path', strict=True)}, FALSE)")

    for name in carry:
        if not isinstance(name, str) or not _COLUMN_NAME.fullmatch(name):
            raise ViewDefinitionError(f"invalid carried column name {name!r}")
        if name in names:
            raise ViewDefinitionError(f"column {name!r} is reserved: the pipeline adds it to every row")
    source = ".".join(quote_identifier(p) for p in source_relation.split("."))
    where_sql = " AND ".join(conditions)
    carried = [f"_src.{quote_identifier(n)} AS {quote_identifier(n)}" for n in carry]
    if root.exprs is not None:
        select_list = ", ".join(
            carried
            + [f"{e} AS {quote_identifier(c.name)}" for c, e in zip(root.columns, root.exprs, strict=True)]
        )
        sql = _query(select_list, f"{source} AS _src", where_sql)
    else:
        select_list = ", ".join(
            [f"_rows.{quote_identifier(n)} AS {quote_identifier(n)}" for n in carry]
            + [f"_row.{quote_identifier(c.name)} AS {quote_identifier(c.name)}" for c in root.columns]
        )
        rows = _query(", ".join([*carried, f"unnest({root.rows}) AS _row"]), f"{source} AS _src", where_sql)
        sql = _query(select_list, f"({rows}) AS _rows", "TRUE")
    return CompiledView(sql=sql, columns=root.columns, resource=resource)


def _query(select_list: str, from_clause: str, where: str) -> str:
    """Assemble one SELECT from parts that are compiled SQL: every name in them went through
    `quote_identifier` and every value through `sql_literal`."""
    return " ".join(("SELECT", select_list, "FROM", from_clause, "WHERE", where))


def load_view_definition(path: str | Path) -> dict[str, Any]:
    """Read and validate a ViewDefinition JSON file; raise `ViewDefinitionError` naming the file."""
    path = Path(path)
    try:
        view = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ViewDefinitionError(f"{path}: cannot read the file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ViewDefinitionError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(view, dict) and view.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise ViewDefinitionError(f"{path}: resourceType is {view.get('resourceType')!r}, not ViewDefinition")
    try:
        build_view(view, source_relation="validation_only")
    except ViewDefinitionError as exc:
        raise ViewDefinitionError(f"{path}: {exc}") from exc
    return view


def _parse(text: Any, where: str) -> Any:
    if not isinstance(text, str):
        raise ViewDefinitionError(
            f"{where}: a FHIRPath expression must be a string, got {type(text).__name__}"
        )
    try:
        return parse(text)
    except FhirPathError as exc:
        raise FhirPathError(f"{where}: {exc}") from exc


def _constants(defs: Any) -> dict[str, Expr]:
    """The view's `constant` entries as compiled scalars."""
    if not isinstance(defs, list):
        raise ViewDefinitionError("`constant` must be a list")
    out: dict[str, Expr] = {}
    for i, item in enumerate(defs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ViewDefinitionError(f"constant[{i}] must have a string `name`")
        name = item["name"]
        values = [k for k in item if k.startswith("value")]
        if len(values) != 1 or values[0] not in _CONSTANT_KINDS:
            raise ViewDefinitionError(f"constant {name!r} must have exactly one supported value[x]")
        key = values[0]
        value, kind = item[key], _CONSTANT_KINDS[key]
        valid = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "dec": isinstance(value, int | float) and not isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not valid:
            raise ViewDefinitionError(f"constant {name!r}: {key} has a value of the wrong type")
        fhir_type = key[5:6].lower() + key[6:]
        sql = f"CAST({sql_literal(str(value))} AS {DECIMAL_TYPE})" if kind == "dec" else sql_literal(value)
        out[name] = Expr(sql, kind, fhir_type)  # type: ignore[arg-type]
    return out


class _Compiler:
    """Walks the select tree; one instance per view so lambda names stay unique."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen

    def node(self, node: Any, scope: Scope, where: str) -> _Part:
        """The rows of one select node for the focus in `scope`."""
        if not isinstance(node, dict):
            raise ViewDefinitionError(f"{where} must be an object")
        unknown = set(node) - _SELECT_KEYS
        if unknown:
            raise ViewDefinitionError(f"{where}: unknown keys {sorted(unknown)}")
        iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in node]
        if len(iterators) > 1:
            raise ViewDefinitionError(f"{where}: only one of forEach, forEachOrNull, repeat is allowed")
        if not iterators:
            return self.body(node, scope, where)
        key = iterators[0]
        if key == "repeat":
            paths = node["repeat"]
            if not isinstance(paths, list) or not paths:
                raise ViewDefinitionError(f"{where}: repeat must be a non-empty list of paths")
            focus = self.repeat(paths, scope, where)
        else:
            expr = self.gen.compile(_parse(node[key], f"{where}.{key}"), scope)
            focus = self.gen.to_coll(expr)
        if key == "forEachOrNull":
            f = self.gen.fresh()
            focus = self.gen.let(focus, f"CASE WHEN len({f}) = 0 THEN [NULL::JSON] ELSE {f} END", f)
        v, i = self.gen.fresh(), self.gen.fresh()
        inner = Scope(this=v, resource=scope.resource, row_index=f"({i} - 1)")
        body = self.body(node, inner, where)
        per_focus = self.as_rows(body)
        return _Part(body.columns, rows=f"flatten(list_transform({focus}, lambda {v}, {i}: {per_focus}))")

    def body(self, node: dict[str, Any], scope: Scope, where: str) -> _Part:
        """Columns x nested selects x unionAll of one node, for one focus."""
        parts: list[_Part] = []
        if "column" in node:
            columns = node["column"]
            if not isinstance(columns, list) or not columns:
                raise ViewDefinitionError(f"{where}.column must be a non-empty list")
            cols, exprs = zip(
                *(self.column(c, scope, f"{where}.column[{i}]") for i, c in enumerate(columns)), strict=True
            )
            parts.append(_Part(tuple(cols), exprs=tuple(exprs)))
        for key in ("select", "unionAll"):
            if key in node and (not isinstance(node[key], list) or not node[key]):
                raise ViewDefinitionError(f"{where}.{key} must be a non-empty list")
        for i, child in enumerate(node.get("select", [])):
            parts.append(self.node(child, scope, f"{where}.select[{i}]"))
        if "unionAll" in node:
            branches = [self.node(b, scope, f"{where}.unionAll[{i}]") for i, b in enumerate(node["unionAll"])]
            first = branches[0].columns
            for i, branch in enumerate(branches[1:], start=1):
                if [c.name for c in branch.columns] != [c.name for c in first]:
                    raise ViewDefinitionError(
                        f"{where}.unionAll[{i}] has columns {[c.name for c in branch.columns]}, "
                        f"branch 0 has {[c.name for c in first]} (names and order must match)"
                    )
                if [(c.sql_type) for c in branch.columns] != [c.sql_type for c in first]:
                    raise ViewDefinitionError(f"{where}.unionAll[{i}]: column types differ from branch 0")
            rows = ", ".join(self.as_rows(b) for b in branches)
            parts.append(_Part(first, rows=f"list_concat({rows})" if len(branches) > 1 else rows))
        if not parts:
            raise ViewDefinitionError(f"{where} has no column, select or unionAll")
        result = parts[0]
        for part in parts[1:]:
            result = self.product(result, part)
        return result

    def column(self, col: Any, scope: Scope, where: str) -> tuple[ViewColumn, str]:
        """One column definition: its metadata and its SQL expression."""
        if not isinstance(col, dict):
            raise ViewDefinitionError(f"{where} must be an object")
        unknown = set(col) - _COLUMN_KEYS
        if unknown:
            raise ViewDefinitionError(f"{where}: unknown keys {sorted(unknown)}")
        name = col.get("name")
        if not isinstance(name, str) or not _COLUMN_NAME.fullmatch(name):
            raise ViewDefinitionError(f"{where}: column name {name!r} must match [A-Za-z][A-Za-z0-9_]*")
        fhir_type = col.get("type")
        if fhir_type is not None and not isinstance(fhir_type, str):
            raise ViewDefinitionError(f"{where}: type must be a string")
        collection = col.get("collection", False)
        if not isinstance(collection, bool):
            raise ViewDefinitionError(f"{where}: collection must be true or false")
        expr = self.gen.compile(_parse(col.get("path"), f"{where} ({name})"), scope)
        base = _SQL_TYPES.get(fhir_type or "", "JSON")
        convert = (
            "({x} ->> '$')" if base == "VARCHAR" else "{x}" if base == "JSON" else f"CAST({{x}} AS {base})"
        )
        if collection:
            v = self.gen.fresh()
            sql = f"list_transform({self.gen.to_coll(expr)}, lambda {v}: {convert.replace('{x}', v)})"
            sql_type = f"{base}[]"
        elif expr.kind in ("bool", "str", "int", "dec"):
            sql = f"to_json({expr.sql})" if base == "JSON" else f"CAST({expr.sql} AS {base})"
            sql_type = base
        else:
            what = f"column {name!r} (set collection: true for several values)"
            sql = self.gen.singleton(expr, convert, what)
            sql_type = base
        return ViewColumn(name, sql_type, fhir_type, collection), f"CAST({sql} AS {sql_type})"

    def as_rows(self, part: _Part) -> str:
        """A part as a list of row structs."""
        if part.rows is not None:
            return part.rows
        assert part.exprs is not None  # noqa: S101 - a part has either exprs or rows
        fields = ", ".join(
            f"{quote_identifier(c.name)} := {e}" for c, e in zip(part.columns, part.exprs, strict=True)
        )
        return f"[struct_pack({fields})]"

    def product(self, left: _Part, right: _Part) -> _Part:
        """Every row of `left` combined with every row of `right` (columns of `left` first).

        Both sides are bound once before the nested loop: an expression written inside a lambda is
        evaluated again for every element, which for a resource-level column below a forEach meant
        re-reading the resource for every row.
        """
        columns = left.columns + right.columns
        if left.exprs is not None and right.exprs is not None:
            return _Part(columns, exprs=left.exprs + right.exprs)
        p, a, b = self.gen.fresh(), self.gen.fresh(), self.gen.fresh()
        fields = [f"{quote_identifier(c.name)} := {a}.{quote_identifier(c.name)}" for c in left.columns] + [
            f"{quote_identifier(c.name)} := {b}.{quote_identifier(c.name)}" for c in right.columns
        ]
        row = f"struct_pack({', '.join(fields)})"
        body = f"flatten(list_transform({p}.l, lambda {a}: list_transform({p}.r, lambda {b}: {row})))"
        both = f"struct_pack(l := {self.as_rows(left)}, r := {self.as_rows(right)})"
        return _Part(columns, rows=self.gen.let(both, body, p))

    def repeat(self, paths: list[Any], scope: Scope, where: str) -> str:
        """JSON[] of every node reachable from the focus by repeatedly following `paths`, in pre-order.

        Each node carries a sort key (its parent's key plus the path number and position), so one
        `list_sort` at the end restores depth-first document order after a breadth-first expansion.
        """
        gen = self.gen
        asts = [_parse(p, f"{where}.repeat[{i}]") for i, p in enumerate(paths)]
        entry_type = "STRUCT(k BIGINT[], v JSON)"

        def entries(key_sql: str, node_sql: str) -> str:
            lists = []
            for n, ast in enumerate(asts):
                inner = Scope(this=node_sql, resource=scope.resource, row_index=scope.row_index)
                c, i = gen.fresh(), gen.fresh()
                coll = gen.to_coll(gen.compile(ast, inner))
                key = f"list_concat({key_sql}, [CAST({n} AS BIGINT), CAST({i} AS BIGINT)])"
                lists.append(f"list_transform({coll}, lambda {c}, {i}: struct_pack(k := {key}, v := {c}))")
            return f"list_concat({', '.join(lists)})" if len(lists) > 1 else lists[0]

        acc, e, d, r = gen.fresh(), gen.fresh(), gen.fresh(), gen.fresh()
        start = f"struct_pack(done := []::{entry_type}[], frontier := {entries('[]::BIGINT[]', scope.this)})"
        step = (
            f"lambda {acc}, {d}: struct_pack(done := list_concat({acc}.done, {acc}.frontier), "
            f"frontier := flatten(list_transform({acc}.frontier, lambda {e}: {entries(f'{e}.k', f'{e}.v')})))"
        )
        reduced = f"list_reduce(range({REPEAT_MAX_DEPTH}), {step}, {start})"
        msg = sql_literal(f"repeat: nesting deeper than {REPEAT_MAX_DEPTH} levels")
        s = gen.fresh()
        body = (
            f"CASE WHEN len({r}.frontier) > 0 THEN error({msg}) "
            f"ELSE list_transform(list_sort({r}.done), lambda {s}: {s}.v) END"
        )
        return gen.let(reduced, body, r)
