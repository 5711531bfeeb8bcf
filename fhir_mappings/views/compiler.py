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

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_mappings.views.errors import FhirPathError, ViewDefinitionError
from fhir_mappings.views.fhirpath import (
    DECIMAL_TYPE,
    Call,
    Expr,
    Generator,
    Member,
    Scope,
    parse,
    type_name_of,
)
from fhir_mappings.views.sql import quote_identifier, sql_literal

# The deepest `repeat` nesting followed; a deeper resource stops the query with an error rather than
# losing rows (questionnaires in practice nest a handful of levels).
REPEAT_MAX_DEPTH = 64
# Levels of `repeat` written out as nested list expressions (pre-order directly, no sort); a subtree
# deeper than this falls back to the breadth-first expansion with a sort, which is slower.
REPEAT_UNROLLED_DEPTH = 8
# This compiler's extension on a `repeat` select: extra columns for each node's place in the tree
# (docs/views.md). Other engines ignore an extension they do not know and give the same rows.
REPEAT_TRAIL_URL = "https://alliance-qi.org/fhir/StructureDefinition/repeat-trail"

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
    walked = _walk_query(gen, selects, source, where_sql, carry, root.columns)
    if walked is not None:
        return CompiledView(sql=walked, columns=root.columns, resource=resource)
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


def _walk_query(
    gen: Generator,
    selects: list[Any],
    source: str,
    where_sql: str,
    carry: tuple[str, ...],
    columns: tuple[ViewColumn, ...],
) -> str | None:
    """The query for a view whose one `repeat` is at the top level, as a recursive CTE; else None.

    The list form of `repeat` (below) works anywhere but walks the tree inside one expression per
    resource, which is several times slower than a set-based walk. When the repeat select is a direct
    child of the view and every other top-level select gives exactly one row per resource (the
    QuestionnaireResponse answers view), the tree is walked by a recursive CTE instead: one row per
    node carrying its positions, labels and JSON, and the repeat body runs once per node. The other
    selects' columns are computed once per resource. Same rows, same columns.
    """
    repeats = [i for i, s in enumerate(selects) if isinstance(s, dict) and "repeat" in s]
    if len(repeats) != 1:
        return None
    j = repeats[0]
    node = selects[j]
    where = f"view.select[{j}]"
    position, label, label_path = _trail(node.get("extension"), where)
    paths = node["repeat"]
    # the walk does not carry the resource, so %resource and %rowIndex in the walked paths stay with
    # the list form
    if any("%" in p for p in [*paths, label_path or ""]):
        return None
    comp = _Compiler(gen)
    res_scope = Scope(this="_src.resource", resource="_src.resource", row_index="CAST(0 AS BIGINT)")
    others: dict[int, _Part] = {}
    for k, sel in enumerate(selects):
        if k != j:
            part = comp.node(sel, res_scope, f"view.select[{k}]")
            if part.exprs is None:
                return None
            others[k] = part
    asts = [_parse(p, f"{where}.repeat[{i}]") for i, p in enumerate(paths)]
    label_ast = _parse(label_path, f"{where}.extension labelPath") if label_path is not None else None

    def children(node_sql: str) -> str:
        """`STRUCT(v JSON, i BIGINT)[]`: the children of one node, with their 1-based position."""
        inner = Scope(this=node_sql, resource="NULL::JSON", row_index="CAST(0 AS BIGINT)")
        lists = [gen.to_coll(gen.compile(ast, inner)) for ast in asts]
        kids = f"list_concat({', '.join(lists)})" if len(lists) > 1 else lists[0]
        c, i = gen.fresh(), gen.fresh()
        return f"list_transform({kids}, lambda {c}, {i}: struct_pack(v := {c}, i := CAST({i} AS BIGINT)))"

    def label_of(node_sql: str) -> str:
        """The label of one node (NULL without a label), computed on the node's row, not in a lambda."""
        if label_ast is None:
            return "NULL::VARCHAR"
        label_scope = Scope(this=node_sql, resource="NULL::JSON", row_index="CAST(0 AS BIGINT)")
        text = gen.to_scalar(gen.compile(label_ast, label_scope), "str", f"{where} labelPath")
        member = _focus_member(label_ast)
        if member is not None and re.fullmatch(r"[A-Za-z0-9_]+", member):
            # the common case (a member such as linkId): read without building a list
            text = gen.member_singleton(node_sql, member, "({x} ->> '$')", text)
        return f"CAST({text} AS VARCHAR)"

    body_scope = Scope(this="_n._v", resource="_n._resource", row_index="_n._ri")
    parts: list[_Part] = []
    trail_cols: list[ViewColumn] = []
    trail_exprs: list[str] = []
    if position is not None:
        trail_cols.append(ViewColumn(position, "BIGINT[]", "integer", True))
        trail_exprs.append("_n._k")
    if label is not None:
        trail_cols.append(ViewColumn(label, "VARCHAR[]", "string", True))
        trail_exprs.append("_n._l")
    if trail_cols:
        parts.insert(0, _Part(tuple(trail_cols), exprs=tuple(trail_exprs)))

    q = quote_identifier
    # Per-resource values (carried columns, the other selects' columns) are computed once per resource
    # and carried down the walk with each node, so the nodes need no join back to the resources.
    res_cols = [f"_src.{q(n)} AS {q(n)}" for n in carry]
    outs: dict[str, str] = {}
    for part in others.values():
        for c, e in zip(part.columns, part.exprs or (), strict=True):
            alias = f"_o{len(outs)}"
            res_cols.append(f"{e} AS {alias}")
            outs[c.name] = f"_n.{alias}"
    res_names = [*(q(n) for n in carry), *(f"_o{k}" for k in range(len(outs)))]
    # The body's parts are combined level by level: column parts are expressions on the node row, and
    # each part with rows (a nested forEach, unionAll) is one more select-list level that unnests it,
    # so their cross product is built by the unnests, with no nested lists built per node.
    laterals: list[str] = []

    def add_part(part: _Part) -> None:
        if part.exprs is not None:
            outs.update({c.name: e for c, e in zip(part.columns, part.exprs, strict=True)})
            return
        alias = f"_n._p{len(laterals)}"
        laterals.append(f"unnest({part.rows}) AS _p{len(laterals)}")
        outs.update({c.name: f"{alias}.{q(c.name)}" for c in part.columns})

    def add_body(sel: dict[str, Any], scope: Scope, at: str) -> None:
        """A select's columns, nested selects and unionAll at `scope`, as join parts."""
        if "column" in sel:
            part = comp.body_parts({"column": sel["column"]}, scope, at)[0]
            add_part(_read_members_once(part, sel["column"], scope, laterals))
        for i, child in enumerate(sel.get("select", [])):
            add_select(child, scope, f"{at}.select[{i}]")
        if "unionAll" in sel:
            add_part(comp.body_parts({"unionAll": sel["unionAll"]}, scope, at)[0])

    def add_select(sel: Any, scope: Scope, at: str) -> None:
        """A nested select; a forEach / forEachOrNull becomes one lateral unnest of its elements, and
        its body is computed on the unnested rows (expressions inside a lambda run element by element,
        on the rows they run vectorised)."""
        keys = [k for k in ("forEach", "forEachOrNull") if isinstance(sel, dict) and k in sel]
        if len(keys) != 1 or "repeat" in sel:
            add_part(comp.node(sel, scope, at))
            return
        key = keys[0]
        focus = gen.to_coll(gen.compile(_parse(sel[key], f"{at}.{key}"), scope))
        if key == "forEachOrNull":
            f = gen.fresh()
            focus = gen.let(focus, f"CASE WHEN len({f}) = 0 THEN [NULL::JSON] ELSE {f} END", f)
        v, i = gen.fresh(), gen.fresh()
        alias = f"_n._p{len(laterals)}"
        element = f"struct_pack(v := {v}, i := CAST({i} AS BIGINT))"
        laterals.append(f"unnest(list_transform({focus}, lambda {v}, {i}: {element})) AS _p{len(laterals)}")
        inner = Scope(this=f"{alias}.v", resource=scope.resource, row_index=f"({alias}.i - 1)")
        add_body({k: val for k, val in sel.items() if k != key}, inner, at)

    for part in parts:
        add_part(part)
    add_body(node, body_scope, where)
    body_sql = " ".join([*outs.values(), *laterals])
    # the resource and a resource number travel with the nodes only when the body needs them
    if "_n._resource" in body_sql:
        res_cols.append("_src.resource AS _resource")
        res_names.append("_resource")
    uses_index = "_n._ri" in body_sql
    if uses_index:
        res_cols.append("row_number() OVER () AS _rid")
        res_names.append("_rid")
    res = _query(", ".join(["_src.resource AS _root", *res_cols]), f"{source} AS _src", where_sql)
    # Every unnest is in a select list, never a lateral join in FROM: DuckDB decorrelates a lateral
    # join by grouping on the correlated values (whole resources) and joining back, which costs
    # several times the unnest itself.
    first = _query(
        f"[_x._c.i], [{label_of('_x._c.v')}], _x._c.v" + "".join(f", _x.{n}" for n in res_names),
        "(" + _query(f"_r.*, unnest({children('_r._root')}) AS _c", f"({res}) AS _r", "TRUE") + ") AS _x",
        "TRUE",
    )
    below = _query(
        f"_p.*, unnest({children('_p._v')}) AS _c", "_walk AS _p", f"len(_p._k) <= {REPEAT_MAX_DEPTH}"
    )
    step = _query(
        f"list_append(_x._k, _x._c.i), list_append(_x._l, {label_of('_x._c.v')}), _x._c.v"
        + "".join(f", _x.{n}" for n in res_names),
        f"({below}) AS _x",
        "TRUE",
    )
    index = "row_number() OVER (PARTITION BY _rid ORDER BY _k) - 1" if uses_index else "CAST(0 AS BIGINT)"
    msg = sql_literal(f"repeat: nesting deeper than {REPEAT_MAX_DEPTH} levels")
    # checked on every node before any unnest, so a too-deep node without rows still fails the query
    too_deep = f"CASE WHEN len(_walk._k) > {REPEAT_MAX_DEPTH} THEN error({msg}) ELSE TRUE END"
    # assembled from compiled parts only (names through quote_identifier, values through sql_literal)
    ctes = " ".join(
        (
            f"WITH RECURSIVE _walk(_k, _l, _v{''.join(f', {n}' for n in res_names)}) AS (",
            first,
            "UNION ALL",
            step,
            "), _nodes AS (",
            _query(f"_walk.*, {index} AS _ri", "_walk", too_deep),
            ")",
        )
    )
    # each nested forEach / rows part adds one level that unnests it next to the columns so far
    joined = "_nodes AS _n"
    for item in laterals:
        joined = f"({_query(f'_n.*, {item}', joined, 'TRUE')}) AS _n"
    select_list = [
        *(f"_n.{q(n)} AS {q(n)}" for n in carry),
        *(f"{outs[c.name]} AS {q(c.name)}" for c in columns),
    ]
    return f"{ctes} " + _query(", ".join(select_list), joined, "TRUE")


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


def definition_fingerprint(view: dict[str, Any]) -> str:
    """A hash of a ViewDefinition's meaning (key order and whitespace ignored).

    A step that compiles a view puts this in its rebuild fingerprint, so a changed view rebuilds its
    table even when the data it reads did not change.
    """
    text = json.dumps(view, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
            return self.repeat_node(node, paths, scope, where)
        else:
            expr = self.gen.compile(_parse(node[key], f"{where}.{key}"), scope)
            focus = self.gen.to_coll(expr)
        if key == "forEachOrNull":
            f = self.gen.fresh()
            focus = self.gen.let(focus, f"CASE WHEN len({f}) = 0 THEN [NULL::JSON] ELSE {f} END", f)
        v, i = self.gen.fresh(), self.gen.fresh()
        inner = Scope(this=v, resource=scope.resource, row_index=f"({i} - 1)")
        body = self.body(node, inner, where)
        if body.exprs is not None:
            # exactly one row per element: the row itself, with no list to build and flatten
            row = self.as_row(body)
            return _Part(body.columns, rows=f"list_transform({focus}, lambda {v}, {i}: {row})")
        per_focus = self.as_rows(body)
        return _Part(body.columns, rows=f"flatten(list_transform({focus}, lambda {v}, {i}: {per_focus}))")

    def body(self, node: dict[str, Any], scope: Scope, where: str) -> _Part:
        """Columns x nested selects x unionAll of one node, for one focus."""
        parts = self.body_parts(node, scope, where)
        result = parts[0]
        for part in parts[1:]:
            result = self.product(result, part)
        return result

    def body_parts(self, node: dict[str, Any], scope: Scope, where: str) -> list[_Part]:
        """The parts of one node whose cross product is its rows: columns, nested selects, unionAll."""
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
        return parts

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
        ast = _parse(col.get("path"), f"{where} ({name})")
        expr = self.gen.compile(ast, scope)
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
        return f"[{self.as_row(part)}]"

    def as_row(self, part: _Part) -> str:
        """The one row struct of a part that has exactly one row (column expressions)."""
        assert part.exprs is not None  # noqa: S101 - a part has either exprs or rows
        fields = ", ".join(
            f"{quote_identifier(c.name)} := {e}" for c, e in zip(part.columns, part.exprs, strict=True)
        )
        return f"struct_pack({fields})"

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

    def repeat_node(self, node: dict[str, Any], paths: list[Any], scope: Scope, where: str) -> _Part:
        """A `repeat` select: its body for every node reached, with the trail columns if asked for."""
        position, label, label_path = _trail(node.get("extension"), where)
        label_ast = _parse(label_path, f"{where}.extension labelPath") if label_path is not None else None
        focus = self.repeat(paths, scope, where, label_ast)
        s, i = self.gen.fresh(), self.gen.fresh()
        inner = Scope(this=f"{s}.v", resource=scope.resource, row_index=f"({i} - 1)")
        body = self.body(node, inner, where)
        trail_cols: list[ViewColumn] = []
        trail_exprs: list[str] = []
        if position is not None:
            trail_cols.append(ViewColumn(position, "BIGINT[]", "integer", True))
            trail_exprs.append(f"{s}.k")
        if label is not None:
            trail_cols.append(ViewColumn(label, "VARCHAR[]", "string", True))
            trail_exprs.append(f"{s}.l")
        if trail_cols:
            body = self.product(_Part(tuple(trail_cols), exprs=tuple(trail_exprs)), body)
        per_focus = self.as_rows(body)
        return _Part(body.columns, rows=f"flatten(list_transform({focus}, lambda {s}, {i}: {per_focus}))")

    def repeat(self, paths: list[Any], scope: Scope, where: str, label: Any = None) -> str:
        """Every node reachable from the focus by repeatedly following `paths`, in pre-order.

        A list of `STRUCT(k BIGINT[], v JSON[, l VARCHAR[]])`: `v` the node, `k` its 1-based position
        among its parent's children (all paths' results, in path order) at every level from the top,
        and `l` the `label` expression of every node from the top (only with a label).

        The first `REPEAT_UNROLLED_DEPTH` levels are nested list expressions that emit each node
        followed by its subtree, so the list is in pre-order as built: no per-level copying and no
        sort. A node at that depth with children continues breadth-first with `list_reduce`, each
        node carrying its key, and one `list_sort` by key restores pre-order for that subtree.
        """
        gen = self.gen
        asts = [_parse(p, f"{where}.repeat[{i}]") for i, p in enumerate(paths)]
        fields = "k BIGINT[], v JSON" + (", l VARCHAR[]" if label is not None else "")
        entry_type = f"STRUCT({fields})"

        def entries(parent: str | None) -> str:
            """The children of `parent` (an entry variable; None for the focus) as entries."""
            node_sql = scope.this if parent is None else f"{parent}.v"
            inner = Scope(this=node_sql, resource=scope.resource, row_index=scope.row_index)
            lists = [gen.to_coll(gen.compile(ast, inner)) for ast in asts]
            children = f"list_concat({', '.join(lists)})" if len(lists) > 1 else lists[0]
            c, i = gen.fresh(), gen.fresh()
            key = "[]::BIGINT[]" if parent is None else f"{parent}.k"
            parts = [f"k := list_concat({key}, [CAST({i} AS BIGINT)])", f"v := {c}"]
            if label is not None:
                text = gen.to_scalar(
                    gen.compile(label, Scope(this=c, resource=scope.resource, row_index=scope.row_index)),
                    "str",
                    f"{where} labelPath",
                )
                labels = "[]::VARCHAR[]" if parent is None else f"{parent}.l"
                parts.append(f"l := list_concat({labels}, [CAST({text} AS VARCHAR)])")
            return f"list_transform({children}, lambda {c}, {i}: struct_pack({', '.join(parts)}))"

        def deeper(e: str, levels: int) -> str:
            """Pre-order entries strictly below entry `e`, at most `levels` levels (else an error)."""
            acc, x, d, r = gen.fresh(), gen.fresh(), gen.fresh(), gen.fresh()
            start = f"struct_pack(done := []::{entry_type}[], frontier := {entries(e)})"
            step = (
                f"lambda {acc}, {d}: struct_pack(done := list_concat({acc}.done, {acc}.frontier), "
                f"frontier := flatten(list_transform({acc}.frontier, lambda {x}: {entries(x)})))"
            )
            reduced = f"list_reduce(range({levels}), {step}, {start})"
            msg = sql_literal(f"repeat: nesting deeper than {REPEAT_MAX_DEPTH} levels")
            body = f"CASE WHEN len({r}.frontier) > 0 THEN error({msg}) ELSE list_sort({r}.done) END"
            return gen.let(reduced, body, r)

        def subtree(e: str, depth: int) -> str:
            """Entry `e` (at `depth`) followed by its descendants, in pre-order."""
            if depth == REPEAT_UNROLLED_DEPTH:
                kids = gen.fresh()
                rest = deeper(e, REPEAT_MAX_DEPTH - depth)
                check = gen.let(entries(e), f"len({kids}) = 0", kids)
                return f"CASE WHEN {check} THEN [{e}] ELSE list_concat([{e}], {rest}) END"
            c = gen.fresh()
            below = f"flatten(list_transform({entries(e)}, lambda {c}: {subtree(c, depth + 1)}))"
            return f"list_concat([{e}], {below})"

        top = gen.fresh()
        return f"flatten(list_transform({entries(None)}, lambda {top}: {subtree(top, 1)}))"


def _read_members_once(part: _Part, defs: list[Any], scope: Scope, levels: list[str]) -> _Part:
    """Columns that each read one member of the focus, read with one JSON parse for all of them.

    A column's own SQL parses the focus once per column; here one `json_extract` with a list of
    paths (one more select-list level, `_mK`) parses it once, and each such column takes its value
    from that list. A member that holds an array still goes through the column's own SQL (which
    keeps the several-values error). Only with two or more such columns.
    """
    assert part.exprs is not None  # noqa: S101 - a column list is one row per focus
    members: dict[int, str] = {}
    for k, (col, d) in enumerate(zip(part.columns, defs, strict=True)):
        if col.collection or not isinstance(d.get("path"), str):
            continue
        name = _focus_member(parse(d["path"]))
        if name is not None and re.fullmatch(r"[A-Za-z0-9_]+", name):
            members[k] = name
    if len(members) < 2:
        return part
    alias = f"_m{len(levels)}"
    paths = ", ".join(sql_literal(f'$."{name}"') for name in members.values())
    levels.append(f"json_extract({scope.this}, [{paths}]) AS {alias}")
    exprs = list(part.exprs)
    for j, (k, _name) in enumerate(members.items(), start=1):
        col = part.columns[k]
        value = f"_n.{alias}[{j}]"
        base = col.sql_type
        convert = (
            f"({value} ->> '$')"
            if base == "VARCHAR"
            else value
            if base == "JSON"
            else f"CAST({value} AS {base})"
        )
        exprs[k] = (
            f"CASE json_type({value}) WHEN 'ARRAY' THEN {exprs[k]} WHEN 'NULL' THEN NULL "
            f"ELSE CAST({convert} AS {base}) END"
        )
    return _Part(part.columns, exprs=tuple(exprs))


def _focus_member(ast: Any) -> str | None:
    """The JSON member a path reads straight from the focus (`name`, or `name.ofType(T)` on a choice
    element, which reads `nameT`), else None."""
    if isinstance(ast, Member) and ast.target is None:
        return ast.name
    if (
        isinstance(ast, Call)
        and ast.name == "ofType"
        and len(ast.args) == 1
        and isinstance(ast.target, Member)
        and ast.target.target is None
    ):
        type_name = type_name_of(ast.args[0])
        return ast.target.name + type_name[:1].upper() + type_name[1:]
    return None


def _trail(extensions: Any, where: str) -> tuple[str | None, str | None, str | None]:
    """The repeat-trail extension of a `repeat` select: (position column, label column, label path)."""
    if extensions is None:
        return None, None, None
    if not isinstance(extensions, list):
        raise ViewDefinitionError(f"{where}.extension must be a list")
    found = [e for e in extensions if isinstance(e, dict) and e.get("url") == REPEAT_TRAIL_URL]
    if not found:
        return None, None, None
    if len(found) > 1:
        raise ViewDefinitionError(f"{where}: the repeat-trail extension is given more than once")
    values: dict[str, str] = {}
    for sub in found[0].get("extension", []):
        url = sub.get("url") if isinstance(sub, dict) else None
        if url not in ("positionColumn", "labelColumn", "labelPath") or not isinstance(
            sub.get("valueString"), str
        ):
            raise ViewDefinitionError(
                f"{where}: repeat-trail entries are positionColumn, labelColumn and labelPath, "
                f"each with a valueString; got {sub!r}"
            )
        values[url] = sub["valueString"]
    for column in ("positionColumn", "labelColumn"):
        name = values.get(column)
        if name is not None and not _COLUMN_NAME.fullmatch(name):
            raise ViewDefinitionError(
                f"{where}: repeat-trail {column} {name!r} must match [A-Za-z][A-Za-z0-9_]*"
            )
    if ("labelColumn" in values) != ("labelPath" in values):
        raise ViewDefinitionError(f"{where}: repeat-trail needs labelColumn and labelPath together")
    if not values:
        raise ViewDefinitionError(f"{where}: the repeat-trail extension names no column")
    return values.get("positionColumn"), values.get("labelColumn"), values.get("labelPath")
