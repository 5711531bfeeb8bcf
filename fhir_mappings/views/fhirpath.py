"""A small FHIRPath parser (text to AST) and its translation to DuckDB SQL over JSON resources.

Only the subset SQL-on-FHIR v2 requires is supported (see docs/views.md); anything else is rejected
at compile time with a `FhirPathError`, never silently ignored.

Translation model. Every FHIRPath expression is a collection. In SQL a compiled expression is an
`Expr` of one of these kinds:

- ``item``: one JSON value held in a plain column or lambda variable (NULL means empty). Only simple
  SQL (a column or a lambda variable) is ever an item, so repeating it costs nothing.
- ``coll``: a ``JSON[]`` list (never NULL; empty list means empty collection).
- ``bool``, ``str``, ``int``, ``dec``: a nullable SQL scalar (BOOLEAN, VARCHAR, BIGINT, DECIMAL(38, 9))
  holding a singleton; NULL means empty. Literals, constants, comparisons and functions such as
  ``exists()`` produce these, and SQL's three-valued logic is FHIRPath's.

Whenever a compiled sub-expression would have to appear twice in the SQL, it is bound once with
`_let` (a one-element ``list_transform``), so the SQL grows linearly with the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal as TypingLiteral

from fhir_mappings.views.errors import FhirPathError
from fhir_mappings.views.sql import sql_literal

# ---------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """Base class of FHIRPath AST nodes."""


@dataclass(frozen=True)
class Lit(Node):
    """A literal; `kind` is string, integer, decimal, boolean, date, datetime, time or empty."""

    kind: str
    value: str | int | bool | Decimal | None


@dataclass(frozen=True)
class Var(Node):
    """`$this`, `$index` or `$total`."""

    name: str


@dataclass(frozen=True)
class Constant(Node):
    """An external constant `%name` (view constants, %resource, %rootResource, %rowIndex)."""

    name: str


@dataclass(frozen=True)
class Member(Node):
    """Member access `target.name`; `target` None means the current focus."""

    target: Node | None
    name: str


@dataclass(frozen=True)
class Call(Node):
    """Function invocation `target.name(args)`; `target` None means the current focus."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index(Node):
    """Indexer `target[index]`."""

    target: Node
    index: Node


@dataclass(frozen=True)
class Binary(Node):
    """A binary operator."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Unary(Node):
    """Unary plus or minus."""

    op: str
    operand: Node


# ---------------------------------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One lexical token; `kind` is one of: str, num, date, ident, delim, var, const, op, eof."""

    kind: str
    text: str
    value: str | Decimal | int | None
    pos: int


_DATETIME = re.compile(
    r"@(?:T\d\d(?::\d\d(?::\d\d(?:\.\d+)?)?)?"
    r"|\d{4}(?:-\d\d(?:-\d\d)?)?(?:T(?:\d\d(?::\d\d(?::\d\d(?:\.\d+)?)?)?)?(?:Z|[+-]\d\d:\d\d)?)?)"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (
    "<=",
    ">=",
    "!=",
    "!~",
    "=",
    "~",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "&",
    "|",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_KEYWORD_OPS = {"and", "or", "xor", "implies", "div", "mod", "in", "contains", "is", "as"}


def _read_quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Read a quoted string or delimited identifier starting at `start`; return (value, end)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            esc = text[i + 1]
            if esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            if esc not in _ESCAPES:
                raise FhirPathError(f"invalid escape \\{esc} at position {i}")
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FhirPathError(f"unterminated {quote}-quoted text starting at position {start}")


def tokenize(text: str) -> list[Token]:
    """Split a FHIRPath expression into tokens."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise FhirPathError("unterminated comment")
            i = end + 2
            continue
        if ch == "'":
            value, end = _read_quoted(text, i, "'")
            tokens.append(Token("str", text[i:end], value, i))
            i = end
            continue
        if ch == "`":
            value, end = _read_quoted(text, i, "`")
            tokens.append(Token("delim", text[i:end], value, i))
            i = end
            continue
        if ch == "@":
            m = _DATETIME.match(text, i)
            if not m:
                raise FhirPathError(f"invalid date/time literal at position {i}")
            tokens.append(Token("date", m.group(0), m.group(0)[1:], i))
            i = m.end()
            continue
        if ch.isdigit():
            m = _NUMBER.match(text, i)
            assert m is not None  # a digit always starts a number  # noqa: S101
            num = m.group(0)
            tokens.append(Token("num", num, Decimal(num) if "." in num else int(num), i))
            i = m.end()
            continue
        if ch in "$%":
            rest = text[i + 1 :]
            if ch == "%" and rest[:1] in ("`", "'"):
                value, end = _read_quoted(text, i + 1, rest[0])
                tokens.append(Token("const", text[i:end], value, i))
                i = end
                continue
            m = _IDENT.match(text, i + 1)
            if not m:
                raise FhirPathError(f"expected a name after {ch!r} at position {i}")
            tokens.append(Token("var" if ch == "$" else "const", text[i : m.end()], m.group(0), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            word = m.group(0)
            tokens.append(Token("ident", word, word, i))
            i = m.end()
            continue
        if ch == "{" and text[i + 1 : i + 2] == "}":
            tokens.append(Token("empty", "{}", None, i))
            i += 2
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, op, i))
                i += len(op)
                break
        else:
            raise FhirPathError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("eof", "", None, len(text)))
    return tokens


# ---------------------------------------------------------------------------------------------------
# Parser (precedence climbing, lowest first as in the FHIRPath grammar)
# ---------------------------------------------------------------------------------------------------

_BINARY_LEVELS: tuple[tuple[str, ...], ...] = (
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        if tok.kind == "op":
            return tok.text in ops
        return tok.kind == "ident" and tok.text in ops and tok.text in _KEYWORD_OPS

    def expect(self, op: str) -> None:
        tok = self.advance()
        if tok.kind != "op" or tok.text != op:
            raise FhirPathError(f"expected {op!r} at position {tok.pos} in {self.text!r}")

    def parse(self) -> Node:
        node = self.binary(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise FhirPathError(f"unexpected {tok.text!r} at position {tok.pos} in {self.text!r}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.at_op(*_BINARY_LEVELS[level]):
            op = self.advance().text
            if op in ("is", "as"):
                left = Call(left, "ofType" if op == "as" else "is", (self.type_specifier(),))
            else:
                left = Binary(op, left, self.binary(level + 1))
        return left

    def type_specifier(self) -> Node:
        name = self.identifier()
        node: Node = Member(None, name)
        while self.at_op("."):
            self.advance()
            node = Member(node, self.identifier())
        return node

    def identifier(self) -> str:
        tok = self.advance()
        if tok.kind in ("ident", "delim"):
            return str(tok.value)
        raise FhirPathError(f"expected a name at position {tok.pos} in {self.text!r}")

    def unary(self) -> Node:
        if self.at_op("+", "-"):
            op = self.advance().text
            return Unary(op, self.unary())
        return self.postfix()

    def postfix(self) -> Node:
        node = self.term()
        while True:
            if self.at_op("."):
                self.advance()
                node = self.invocation(node)
            elif self.at_op("["):
                self.advance()
                index = self.binary(0)
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def invocation(self, target: Node | None) -> Node:
        name = self.identifier()
        if self.at_op("("):
            self.advance()
            args: list[Node] = []
            if not self.at_op(")"):
                args.append(self.binary(0))
                while self.at_op(","):
                    self.advance()
                    args.append(self.binary(0))
            self.expect(")")
            return Call(target, name, tuple(args))
        return Member(target, name)

    def term(self) -> Node:
        tok = self.peek()
        if tok.kind == "str":
            self.advance()
            return Lit("string", tok.value)
        if tok.kind == "num":
            self.advance()
            return Lit("decimal" if isinstance(tok.value, Decimal) else "integer", tok.value)
        if tok.kind == "date":
            self.advance()
            text = str(tok.value)
            if text.startswith("T"):
                return Lit("time", text[1:])
            return Lit("datetime" if "T" in text else "date", text)
        if tok.kind == "empty":
            self.advance()
            return Lit("empty", None)
        if tok.kind == "var":
            self.advance()
            if tok.value not in ("this", "index", "total"):
                raise FhirPathError(f"unknown variable {tok.text} in {self.text!r}")
            return Var(str(tok.value))
        if tok.kind == "const":
            self.advance()
            return Constant(str(tok.value))
        if tok.kind == "ident" and tok.text in ("true", "false"):
            self.advance()
            return Lit("boolean", tok.text == "true")
        if self.at_op("("):
            self.advance()
            node = self.binary(0)
            self.expect(")")
            return node
        if tok.kind in ("ident", "delim"):
            return self.invocation(None)
        raise FhirPathError(
            f"unexpected {tok.text or 'end of expression'!r} at position {tok.pos} in {self.text!r}"
        )


def parse(text: str) -> Node:
    """Parse a FHIRPath expression into an AST; raise `FhirPathError` on a syntax error."""
    if not isinstance(text, str) or not text.strip():
        raise FhirPathError("a FHIRPath expression must be a non-empty string")
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------------
# SQL generation
# ---------------------------------------------------------------------------------------------------

Kind = TypingLiteral["item", "coll", "bool", "str", "int", "dec"]
# FHIRPath decimals are exact, so arithmetic is DECIMAL, not DOUBLE (0.07 * 2 + 1 is 1.14); nine places
# keep twenty integer digits after a multiplication, which doubles the scale.
DECIMAL_TYPE = "DECIMAL(38, 9)"
_SCALAR_SQL_TYPE = {"bool": "BOOLEAN", "str": "VARCHAR", "int": "BIGINT", "dec": DECIMAL_TYPE}
_EMPTY = "[]::JSON[]"
_NUMERIC_JSON = "('BIGINT', 'UBIGINT', 'DOUBLE')"
# FHIR primitive type names as used by ofType(); their choice-element suffix is the name capitalised.
_PRIMITIVES = {
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "integer64", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri",
    "url", "uuid", "xhtml",
}  # fmt: skip
_STRING_PRIMITIVES = _PRIMITIVES - {
    "boolean",
    "decimal",
    "integer",
    "integer64",
    "positiveInt",
    "unsignedInt",
}


@dataclass(frozen=True)
class Expr:
    """A compiled FHIRPath expression: its SQL text, its kind, and a FHIR type name if one is known."""

    sql: str
    kind: Kind
    fhir_type: str | None = None


@dataclass(frozen=True)
class Scope:
    """What the names of an expression refer to in SQL.

    `this` is the focus item (a column or lambda variable of type JSON, NULL for the empty focus of a
    forEachOrNull null row), `resource` the resource, `row_index` the BIGINT %rowIndex, and `index`
    the BIGINT $index inside where()/select() criteria.
    """

    this: str
    resource: str
    row_index: str
    index: str | None = None


@dataclass
class Generator:
    """Compiles FHIRPath ASTs to SQL; holds the view's constants and a fresh-name counter."""

    constants: dict[str, Expr] = field(default_factory=dict)
    counter: int = 0

    def fresh(self) -> str:
        """A lambda variable name not used anywhere else in the query."""
        self.counter += 1
        return f"_v{self.counter}"

    # -- conversions -----------------------------------------------------------------------------

    def let(self, value_sql: str, body: str, var: str) -> str:
        """Bind `value_sql` to `var` once and evaluate `body` (which uses `var`)."""
        return f"list_transform([{value_sql}], lambda {var}: {body})[1]"

    def to_coll(self, e: Expr) -> str:
        """`e` as a JSON[] list (empty list for an empty collection)."""
        if e.kind == "coll":
            return e.sql
        v = self.fresh()
        value = e.sql if e.kind == "item" else f"to_json({e.sql})"
        return f"list_filter([{value}], lambda {v}: {v} IS NOT NULL)"

    def singleton(self, e: Expr, convert: str, what: str) -> str:
        """SQL for the single element of `e` converted by `convert` (a template over `{x}`).

        Empty gives NULL; more than one element is a runtime error, as FHIRPath requires. The
        templates are this module's own SQL (names and literals in them never contain "{x}").
        """
        if e.kind == "item":
            return convert.replace("{x}", e.sql)
        c = self.fresh()
        msg = sql_literal(f"FHIRPath: {what} expects a single value but the collection has several")
        body = f"CASE WHEN len({c}) > 1 THEN error({msg}) ELSE {convert.replace('{x}', f'{c}[1]')} END"
        return self.let(e.sql, body, c)

    def member_singleton(self, item_sql: str, name: str, convert: str, general: str) -> str:
        """The single value of member `name` of one JSON item, converted: the common case of a column.

        A member that is not an array is the value itself (JSON null is empty), read without building
        a list; an array goes through `general` (the `singleton` SQL of the same member), which keeps
        the several-values error and drops null elements.
        """
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise FhirPathError(f"unsupported member name {name!r}")
        path = sql_literal(f'$."{name}"')
        value = convert.replace("{x}", f"json_extract({item_sql}, {path})")
        kind = f"json_type({item_sql}, {path})"
        return f"CASE {kind} WHEN 'ARRAY' THEN {general} WHEN 'NULL' THEN NULL ELSE {value} END"

    def to_scalar(self, e: Expr, kind: Kind, what: str) -> str:
        """`e` as a nullable SQL scalar of `kind` (bool, str, int or dec)."""
        if e.kind == kind:
            return e.sql
        target = _SCALAR_SQL_TYPE[kind]
        if e.kind in _SCALAR_SQL_TYPE:
            return f"CAST({e.sql} AS {target})"
        if kind == "str":
            return self.singleton(e, "({x} ->> '$')", what)
        return self.singleton(e, f"CAST({{x}} AS {target})", what)

    def to_bool(self, e: Expr, what: str, *, strict: bool) -> str:
        """`e` as a nullable BOOLEAN by FHIRPath singleton evaluation.

        A single non-boolean value is an error when `strict` (a view's `where`), otherwise true.
        """
        if e.kind == "bool":
            return e.sql
        if e.kind in _SCALAR_SQL_TYPE:
            if strict:
                raise FhirPathError(f"{what} must be boolean")
            return f"({e.sql} IS NOT NULL OR NULL)"
        non_boolean = f"error({sql_literal(f'FHIRPath: {what} must be boolean')})" if strict else "TRUE"
        return self.singleton(
            e,
            f"CASE WHEN {{x}} IS NULL THEN NULL WHEN json_type({{x}}) = 'BOOLEAN' "
            f"THEN CAST({{x}} AS BOOLEAN) ELSE {non_boolean} END",
            what,
        )

    # -- navigation ------------------------------------------------------------------------------

    def children(self, item_sql: str, name: str) -> str:
        """JSON[] of the values of member `name` of one JSON item (arrays are flattened)."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise FhirPathError(f"unsupported member name {name!r}")
        path = sql_literal(f'$."{name}"')
        v, e = self.fresh(), self.fresh()
        # the item is parsed once; the type test parses only the extracted value
        body = (
            f"CASE json_type({e}) "
            f"WHEN 'ARRAY' THEN list_filter(CAST({e} AS JSON[]), lambda {v}: {v} IS NOT NULL) "
            f"WHEN 'NULL' THEN {_EMPTY} "
            f"ELSE coalesce(list_filter([{e}], lambda {v}: {v} IS NOT NULL), {_EMPTY}) END"
        )
        return self.let(f"json_extract({item_sql}, {path})", body, e)

    def member(self, target: Expr, name: str) -> Expr:
        """Member access on any compiled expression."""
        if target.kind == "item":
            return Expr(self.children(target.sql, name), "coll")
        if target.kind == "coll":
            v = self.fresh()
            return Expr(
                f"flatten(list_transform({target.sql}, lambda {v}: {self.children(v, name)}))", "coll"
            )
        return Expr(_EMPTY, "coll")  # primitives have no members

    # -- compile ---------------------------------------------------------------------------------

    def compile(self, node: Node, scope: Scope) -> Expr:
        """Compile one AST node in `scope`."""
        if isinstance(node, Lit):
            return self.literal(node)
        if isinstance(node, Var):
            if node.name == "this":
                return Expr(scope.this, "item")
            if node.name == "index" and scope.index is not None:
                return Expr(scope.index, "int")
            raise FhirPathError(f"${node.name} is not supported here")
        if isinstance(node, Constant):
            return self.constant(node.name, scope)
        if isinstance(node, Member):
            target = Expr(scope.this, "item") if node.target is None else self.compile(node.target, scope)
            return self.member(target, node.name)
        if isinstance(node, Index):
            target = self.compile(node.target, scope)
            index = self.compile(node.index, scope)
            if index.kind != "int":
                raise FhirPathError("an indexer must be an integer")
            return Expr(f"list_slice({self.to_coll(target)}, {index.sql} + 1, {index.sql} + 1)", "coll")
        if isinstance(node, Call):
            return self.call(node, scope)
        if isinstance(node, Unary):
            operand = self.compile(node.operand, scope)
            if node.op == "+":
                return operand
            kind: Kind = "int" if operand.kind == "int" else "dec"
            return Expr(f"(- {self.to_scalar(operand, kind, 'unary minus')})", kind)
        if isinstance(node, Binary):
            return self.binary(node, scope)
        raise FhirPathError(f"unsupported FHIRPath construct {type(node).__name__}")

    def literal(self, node: Lit) -> Expr:
        """A literal as a typed SQL scalar."""
        if node.kind == "empty":
            return Expr(_EMPTY, "coll")
        if node.kind == "boolean":
            return Expr(sql_literal(bool(node.value)), "bool")
        if node.kind == "integer":
            return Expr(sql_literal(int(node.value or 0)), "int")
        if node.kind == "decimal":
            return Expr(f"CAST({sql_literal(str(node.value))} AS {DECIMAL_TYPE})", "dec", "decimal")
        fhir_type = {"date": "date", "datetime": "dateTime", "time": "time"}.get(node.kind)
        return Expr(sql_literal(str(node.value)), "str", fhir_type)

    def constant(self, name: str, scope: Scope) -> Expr:
        """A `%name` reference."""
        if name in ("resource", "rootResource"):
            return Expr(scope.resource, "item")
        if name == "rowIndex":
            return Expr(scope.row_index, "int")
        if name not in self.constants:
            raise FhirPathError(f"undefined constant %{name}")
        return self.constants[name]

    # -- functions -------------------------------------------------------------------------------

    def call(self, node: Call, scope: Scope) -> Expr:
        """Compile a function invocation."""
        name, args = node.name, node.args
        if name == "ofType":
            return self.of_type(node, scope)
        target = Expr(scope.this, "item") if node.target is None else self.compile(node.target, scope)
        arity = {
            "exists": (0, 1), "empty": (0, 0), "not": (0, 0), "first": (0, 0), "last": (0, 0),
            "count": (0, 0), "join": (0, 1), "where": (1, 1), "extension": (1, 1), "select": (1, 1),
            "getResourceKey": (0, 0), "getReferenceKey": (0, 1), "lowBoundary": (0, 1),
            "highBoundary": (0, 1), "hasValue": (0, 0), "all": (1, 1),
        }  # fmt: skip
        if name not in arity:
            raise FhirPathError(f"unsupported FHIRPath function {name}()")
        low, high = arity[name]
        if not low <= len(args) <= high:
            raise FhirPathError(f"{name}() takes {low}..{high} arguments, got {len(args)}")
        if name == "exists":
            coll = self.where(target, args[0], scope) if args else self.to_coll(target)
            return Expr(f"(len({coll}) > 0)", "bool")
        if name in ("empty", "hasValue"):
            op = "=" if name == "empty" else ">"
            return Expr(f"(len({self.to_coll(target)}) {op} 0)", "bool")
        if name == "not":
            return Expr(f"(NOT {self.to_bool(target, 'not()', strict=False)})", "bool")
        if name == "first":
            return Expr(f"list_slice({self.to_coll(target)}, 1, 1)", "coll", target.fhir_type)
        if name == "last":
            return Expr(f"list_slice({self.to_coll(target)}, -1, -1)", "coll", target.fhir_type)
        if name == "count":
            return Expr(f"CAST(len({self.to_coll(target)}) AS BIGINT)", "int")
        if name == "where":
            return Expr(self.where(target, args[0], scope), "coll", target.fhir_type)
        if name == "all":
            v, i = self.fresh(), self.fresh()
            inner = Scope(this=v, resource=scope.resource, row_index=scope.row_index, index=f"({i} - 1)")
            crit = self.to_bool(self.compile(args[0], inner), "all() criteria", strict=False)
            checks = f"list_transform({self.to_coll(target)}, lambda {v}, {i}: coalesce({crit}, FALSE))"
            return Expr(f"coalesce(list_bool_and({checks}), TRUE)", "bool")
        if name == "select":
            v, i = self.fresh(), self.fresh()
            inner = Scope(this=v, resource=scope.resource, row_index=scope.row_index, index=f"({i} - 1)")
            proj = self.to_coll(self.compile(args[0], inner))
            return Expr(f"flatten(list_transform({self.to_coll(target)}, lambda {v}, {i}: {proj}))", "coll")
        if name == "join":
            sep = self.compile(args[0], scope) if args else Expr("''", "str")
            if sep.kind != "str":
                raise FhirPathError("join() takes a string separator")
            v = self.fresh()
            values = f"list_transform({self.to_coll(target)}, lambda {v}: {v} ->> '$')"
            return Expr(f"array_to_string({values}, {sep.sql})", "str")
        if name == "extension":
            url = self.compile(args[0], scope)
            if url.kind != "str":
                raise FhirPathError("extension() takes a string url")
            ext = self.member(target, "extension")
            v = self.fresh()
            return Expr(f"list_filter({ext.sql}, lambda {v}: ({v} ->> 'url') = {url.sql})", "coll")
        if name == "getResourceKey":
            return Expr(self.singleton(target, "({x} ->> 'id')", "getResourceKey()"), "str")
        if name == "getReferenceKey":
            return self.reference_key(target, args)
        return self.boundary(target, name == "lowBoundary", args)

    def where(self, target: Expr, criteria: Node, scope: Scope) -> str:
        """JSON[] of the elements of `target` for which `criteria` is true."""
        v, i = self.fresh(), self.fresh()
        inner = Scope(this=v, resource=scope.resource, row_index=scope.row_index, index=f"({i} - 1)")
        crit = self.to_bool(self.compile(criteria, inner), "where() criteria", strict=False)
        return f"list_filter({self.to_coll(target)}, lambda {v}, {i}: coalesce({crit}, FALSE))"

    def of_type(self, node: Call, scope: Scope) -> Expr:
        """ofType(T): on a member, the choice element `memberT`; otherwise a filter by JSON type."""
        if len(node.args) != 1:
            raise FhirPathError("ofType() takes one type name")
        type_name = type_name_of(node.args[0])
        if isinstance(node.target, Member):
            base = node.target
            parent = Expr(scope.this, "item") if base.target is None else self.compile(base.target, scope)
            suffix = type_name[:1].upper() + type_name[1:]
            return Expr(self.member(parent, base.name + suffix).sql, "coll", type_name)
        target = Expr(scope.this, "item") if node.target is None else self.compile(node.target, scope)
        v = self.fresh()
        if type_name in _STRING_PRIMITIVES:
            test = f"json_type({v}) = 'VARCHAR'"
        elif type_name == "boolean":
            test = f"json_type({v}) = 'BOOLEAN'"
        elif type_name in ("integer", "positiveInt", "unsignedInt", "integer64"):
            test = f"json_type({v}) IN ('BIGINT', 'UBIGINT')"
        elif type_name == "decimal":
            test = f"json_type({v}) IN {_NUMERIC_JSON}"
        elif type_name[:1].isupper():
            # a resource type, checked by resourceType; other complex types cannot be told apart
            # without a schema, so any object passes
            is_type = f"({v} ->> 'resourceType') = {sql_literal(type_name)}"
            test = f"json_type({v}) = 'OBJECT' AND coalesce({is_type}, TRUE)"
        else:
            raise FhirPathError(f"unsupported type in ofType(): {type_name}")
        return Expr(f"list_filter({self.to_coll(target)}, lambda {v}: {test})", "coll", type_name)

    def reference_key(self, target: Expr, args: tuple[Node, ...]) -> Expr:
        """getReferenceKey([type]): the id part of a literal reference `Type/id[/_history/v]`."""
        pattern = sql_literal(r"([A-Za-z]+)/([A-Za-z0-9\-\.]+)(/_history/[^/]+)?$")
        ref = "({x} ->> 'reference')"
        key = f"nullif(regexp_extract({ref}, {pattern}, 2), '')"
        if args:
            wanted = sql_literal(type_name_of(args[0]))
            key = f"CASE WHEN regexp_extract({ref}, {pattern}, 1) = {wanted} THEN {key} END"
        return Expr(self.singleton(target, key, "getReferenceKey()"), "str")

    def boundary(self, target: Expr, low: bool, args: tuple[Node, ...]) -> Expr:
        """lowBoundary()/highBoundary() of decimals, dates, dateTimes and times (experimental)."""
        if args:
            raise FhirPathError("lowBoundary()/highBoundary() with a precision is not supported")
        half = "-" if low else "+"
        # decimal: the precision is the number of digits after the point in the JSON text
        decimal = (
            f"to_json(CAST(CAST({{x}} AS DECIMAL(38, 18)) {half} 5 * pow(10, -(1 + "
            f"length(coalesce(nullif(split_part(CAST({{x}} AS VARCHAR), '.', 2), ''), '')))) AS DOUBLE))"
        )
        s = "({x} ->> '$')"
        dt = (
            r"^(\d{4})(?:-(\d\d))?(?:-(\d\d))?"
            r"(?:T(\d\d)(?::(\d\d))?(?::(\d\d))?(?:\.(\d+))?)?(Z|[+-]\d\d:\d\d)?$"
        )

        def part(n: int) -> str:
            return f"nullif(regexp_extract({s}, {sql_literal(dt)}, {n}), '')"

        year, month, day = part(1), part(2), part(3)
        month_v = f"coalesce({month}, {sql_literal('01' if low else '12')})"
        if low:
            day_v = f"coalesce({day}, '01')"
        else:
            first_of_month = f"CAST({year} || '-' || {month_v} || '-01' AS DATE)"
            day_v = f"coalesce({day}, strftime(last_day({first_of_month}), '%d'))"
        date_v = f"{year} || '-' || {month_v} || '-' || {day_v}"
        fill = "00" if low else "59"
        frac = f"rpad(coalesce({part(7)}, ''), 3, {sql_literal('0' if low else '9')})"
        time_v = (
            f"coalesce({part(4)}, {sql_literal('00' if low else '23')}) || ':' || coalesce({part(5)}, "
            f"'{fill}') || ':' || coalesce({part(6)}, '{fill}') || '.' || {frac}"
        )
        tz = f"coalesce({part(8)}, {sql_literal('+14:00' if low else '-12:00')})"
        datetime_v = f"{date_v} || 'T' || {time_v} || {tz}"
        tm = r"^(\d\d)(?::(\d\d))?(?::(\d\d))?(?:\.(\d+))?$"

        def tpart(n: int) -> str:
            return f"nullif(regexp_extract({s}, {sql_literal(tm)}, {n}), '')"

        tfrac = f"rpad(coalesce({tpart(4)}, ''), 3, {sql_literal('0' if low else '9')})"
        time_only = (
            f"{tpart(1)} || ':' || coalesce({tpart(2)}, '{fill}') || ':' "
            f"|| coalesce({tpart(3)}, '{fill}') || '.' || {tfrac}"
        )
        as_datetime = target.fhir_type in ("dateTime", "instant")
        convert = (
            f"CASE WHEN {{x}} IS NULL THEN NULL "
            f"WHEN json_type({{x}}) IN {_NUMERIC_JSON} THEN {decimal} "
            f"WHEN json_type({{x}}) <> 'VARCHAR' THEN NULL "
            f"WHEN regexp_matches({s}, {sql_literal(tm)}) THEN to_json({time_only}) "
            f"WHEN regexp_matches({s}, {sql_literal(dt)}) THEN to_json("
            + (
                f"{datetime_v}"
                if as_datetime
                else f"CASE WHEN contains({s}, 'T') THEN {datetime_v} ELSE {date_v} END"
            )
            + ") END"
        )
        value = self.singleton(target, convert, "lowBoundary()/highBoundary()")
        # wrapping the single value once is safe: to_coll repeats nothing
        return Expr(self.to_coll(Expr(value, "item")), "coll")

    # -- operators -------------------------------------------------------------------------------

    def binary(self, node: Binary, scope: Scope) -> Expr:
        """Compile a binary operator."""
        op = node.op
        left, right = self.compile(node.left, scope), self.compile(node.right, scope)
        if op in ("and", "or", "xor", "implies"):
            a = self.to_bool(left, f"the left operand of {op}", strict=False)
            b = self.to_bool(right, f"the right operand of {op}", strict=False)
            sql = {
                "and": f"({a} AND {b})",
                "or": f"({a} OR {b})",
                "xor": f"({a} <> {b})",
                "implies": f"((NOT {a}) OR {b})",
            }[op]
            return Expr(sql, "bool")
        if op in ("=", "!=", "~", "!~"):
            eq = self.equals(left, right)
            if op in ("~", "!~"):
                eq = f"coalesce({eq}, (len({self.to_coll(left)}) = 0 AND len({self.to_coll(right)}) = 0))"
            return Expr(eq if op in ("=", "~") else f"(NOT {eq})", "bool")
        if op in ("<", ">", "<=", ">="):
            return Expr(self.compare(left, right, op), "bool")
        if op in ("+", "-", "*", "/", "div", "mod", "&"):
            return self.arithmetic(op, left, right)
        if op == "|":
            return Expr(f"list_distinct(list_concat({self.to_coll(left)}, {self.to_coll(right)}))", "coll")
        if op in ("in", "contains"):
            item, coll = (left, right) if op == "in" else (right, left)
            v, x = self.fresh(), self.fresh()
            single = self.singleton(Expr(self.to_coll(item), "coll"), "{x}", f"the operand of {op}")
            test = f"len(list_filter({self.to_coll(coll)}, lambda {v}: {self.json_equal(v, x)})) > 0"
            return Expr(self.let(single, f"CASE WHEN {x} IS NULL THEN NULL ELSE {test} END", x), "bool")
        raise FhirPathError(f"unsupported operator {op}")

    @staticmethod
    def json_equal(a: str, b: str) -> str:
        """Equality of two JSON values (numbers by value, everything else by canonical text)."""
        return (
            f"CASE WHEN json_type({a}) IN {_NUMERIC_JSON} AND json_type({b}) IN {_NUMERIC_JSON} "
            f"THEN CAST({a} AS DOUBLE) = CAST({b} AS DOUBLE) "
            f"ELSE CAST({a} AS VARCHAR) = CAST({b} AS VARCHAR) END"
        )

    def equals(self, left: Expr, right: Expr) -> str:
        """FHIRPath `=`: empty if either side is empty, else element-wise equality of the collections."""
        if left.kind in _SCALAR_SQL_TYPE and right.kind in _SCALAR_SQL_TYPE:
            if left.kind == right.kind or {left.kind, right.kind} <= {"int", "dec"}:
                return f"({left.sql} = {right.sql})"
            return f"(CAST({left.sql} AS VARCHAR) = CAST({right.sql} AS VARCHAR))"
        if right.kind in _SCALAR_SQL_TYPE or left.kind in _SCALAR_SQL_TYPE:
            coll, scalar = (left, right) if right.kind in _SCALAR_SQL_TYPE else (right, left)
            c = self.fresh()
            if scalar.kind == "str":
                conv = f"({c}[1] ->> '$')"
            else:
                conv = f"TRY_CAST({c}[1] AS {_SCALAR_SQL_TYPE[scalar.kind]})"
            body = f"CASE WHEN len({c}) = 0 THEN NULL WHEN len({c}) > 1 THEN FALSE ELSE {conv} = {{s}} END"
            # the scalar is bound by the outer let so that neither side is repeated
            s = self.fresh()
            inner = self.let(self.to_coll(coll), body.format(s=s), c)
            return self.let(scalar.sql, inner, s)
        p, x, i = self.fresh(), self.fresh(), self.fresh()
        pair = f"struct_pack(a := {self.to_coll(left)}, b := {self.to_coll(right)})"
        same = f"list_bool_and(list_transform({p}.a, lambda {x}, {i}: {self.json_equal(x, f'{p}.b[{i}]')}))"
        body = (
            f"CASE WHEN len({p}.a) = 0 OR len({p}.b) = 0 THEN NULL "
            f"WHEN len({p}.a) <> len({p}.b) THEN FALSE ELSE {same} END"
        )
        return self.let(pair, body, p)

    def compare(self, left: Expr, right: Expr, op: str) -> str:
        """Ordering comparison of two singletons (numbers by value, strings and dates as text)."""
        kinds = {left.kind, right.kind}
        if kinds & {"int", "dec"}:
            a, b = self.to_scalar(left, "dec", op), self.to_scalar(right, "dec", op)
            return f"({a} {op} {b})"
        if kinds & {"str"}:
            a, b = self.to_scalar(left, "str", op), self.to_scalar(right, "str", op)
            return f"({a} {op} {b})"
        p = self.fresh()
        a = self.singleton(Expr(self.to_coll(left), "coll"), "{x}", op)
        b = self.singleton(Expr(self.to_coll(right), "coll"), "{x}", op)
        body = (
            f"CASE WHEN json_type({p}.x) IN {_NUMERIC_JSON} AND json_type({p}.y) IN {_NUMERIC_JSON} "
            f"THEN CAST({p}.x AS DOUBLE) {op} CAST({p}.y AS DOUBLE) "
            f"ELSE ({p}.x ->> '$') {op} ({p}.y ->> '$') END"
        )
        return self.let(f"struct_pack(x := {a}, y := {b})", body, p)

    def arithmetic(self, op: str, left: Expr, right: Expr) -> Expr:
        """+ - * / div mod on numbers; + and & on strings."""
        if op == "&" or (op == "+" and "str" in (left.kind, right.kind)):
            a, b = self.to_scalar(left, "str", op), self.to_scalar(right, "str", op)
            if op == "&":
                return Expr(f"(coalesce({a}, '') || coalesce({b}, ''))", "str")
            return Expr(f"({a} || {b})", "str")
        kind: Kind = "int" if left.kind == "int" and right.kind == "int" and op != "/" else "dec"
        a, b = self.to_scalar(left, kind, op), self.to_scalar(right, kind, op)
        if op == "div":
            return Expr(f"CAST(trunc({a} / nullif({b}, 0)) AS {_SCALAR_SQL_TYPE[kind]})", kind)
        if op == "mod":
            return Expr(f"({a} % nullif({b}, 0))", kind)
        if op == "/":
            quotient = f"CAST({a} AS DOUBLE) / nullif(CAST({b} AS DOUBLE), 0)"
            return Expr(f"CAST({quotient} AS {DECIMAL_TYPE})", "dec")
        return Expr(f"({a} {op} {b})", kind)


def type_name_of(node: Node) -> str:
    """The type name written as a function argument (`Quantity`, `FHIR.string`, `System.String`)."""
    if isinstance(node, Member):
        name = node.name
        if node.target is None:
            return name
        if (
            isinstance(node.target, Member)
            and node.target.target is None
            and node.target.name in ("FHIR", "System")
        ):
            return name[:1].lower() + name[1:] if node.target.name == "System" else name
    raise FhirPathError("expected a type name")
