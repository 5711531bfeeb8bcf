"""The layout of the test suite itself, read from the source with `ast` (nothing is imported or run).

1. Tests share helpers through `tests/support/` or a `conftest.py`, never by importing another `test_*`
   module: importing one runs its module-level code and collects its tests twice under another name.
2. A test that starts a server process is marked `slow`, so `make test-fast` (`-m "not slow"`) starts
   none. A test starts one when it, or a fixture it asks for (its own module's or a conftest's, at any
   depth), uses a server fixture or calls server-starting code: anything imported from the modules in
   `SERVER_MODULES`. Server fixtures are found in the conftest files the same way, so a new one is
   picked up without editing this file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_ROOTS = (REPO / "tests", REPO / "benchmarks" / "tests")

# Modules whose names start a process: sekmet-fhir (demo.server, and benchmarks.rest and the demo
# runner through it), the fault proxy, the fault suite's pipeline runner (a subprocess) and the medplum
# test server (Node).
SERVER_MODULES = frozenset(
    {
        "demo.server",
        "demo.run_demo",
        "benchmarks.rest",
        "tests.faults.proxy",
        "tests.faults.runner",
        "tests.support.medplum",
    }
)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _package_of(path: Path) -> str:
    """Dotted package of a file under the repository (for relative imports)."""
    return ".".join(path.relative_to(REPO).parent.parts)


def _imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every dotted module an import statement anywhere in `tree` names, including `from x import y`
    as both `x` and `x.y` (y may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                found.add(base)
            found.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return found


def imports_of_test_modules(tree: ast.AST, package: str) -> list[str]:
    """The imported modules in `tree` that are test modules (a dotted part starting with `test_`)."""
    return sorted(
        m for m in _imported_modules(tree, package) if any(p.startswith("test_") for p in m.split("."))
    )


def _test_files() -> list[Path]:
    return sorted(p for root in TEST_ROOTS for p in root.rglob("test_*.py"))


# -- 1. no test module imports another ------------------------------------------------------------


def test_the_detector_finds_imports_of_test_modules() -> None:
    source = """
from tests.unit.test_publish import generated_warehouse_file
import tests.unit.test_report as report
from tests.unit import test_marts_helpers
from . import test_sibling
from .test_cousin import helper
from tests.support.marts_clinic import Clinic
import pytest

def later():
    from tests.integration.test_raw_pipeline import CLINIC
"""
    found = imports_of_test_modules(ast.parse(source), "tests.unit")
    assert found == [
        "tests.integration.test_raw_pipeline",
        "tests.integration.test_raw_pipeline.CLINIC",
        "tests.unit.test_cousin",
        "tests.unit.test_cousin.helper",
        "tests.unit.test_marts_helpers",
        "tests.unit.test_publish",
        "tests.unit.test_publish.generated_warehouse_file",
        "tests.unit.test_report",
        "tests.unit.test_sibling",
    ]


def test_no_test_module_imports_another_test_module() -> None:
    files = _test_files()
    assert len(files) > 40, "the test modules were not found"
    offenders = {
        str(path.relative_to(REPO)): found
        for path in files
        if (found := imports_of_test_modules(_parse(path), _package_of(path)))
    }
    assert offenders == {}, "share helpers through tests/support/ or a conftest.py"


def test_shared_helpers_are_in_tests_support() -> None:
    support = REPO / "tests" / "support"
    assert (support / "__init__.py").is_file()
    helpers = {p.name for p in support.glob("*.py")}
    assert {"fhir_stub.py", "scoring_kit.py", "marts_clinic.py", "generated_warehouse.py"} <= helpers
    assert not [p.name for p in support.glob("test_*.py")], "tests/support/ holds helpers, not tests"


# -- 2. tests that start servers are marked slow --------------------------------------------------


def _is_slow_mark(node: ast.AST) -> bool:
    """`pytest.mark.slow` or `pytest.mark.slow(...)`."""
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow"


def _marks_slow(value: ast.AST) -> bool:
    """Whether a `pytestmark = ...` value (one mark or a list of marks) includes `slow`."""
    items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
    return any(_is_slow_mark(item) for item in items)


def _is_fixture(func: ast.FunctionDef) -> bool:
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
        if isinstance(target, ast.Name) and target.id == "fixture":
            return True
    return False


def _server_names(tree: ast.AST, package: str) -> set[str]:
    """Local names bound by importing from a server-starting module (or the module itself)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - (node.level - 1)], *([base] if base else [])])
            for alias in node.names:
                if base in SERVER_MODULES or f"{base}.{alias.name}" in SERVER_MODULES:
                    names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in SERVER_MODULES and alias.asname:
                    names.add(alias.asname)
    return names


def _params(func: ast.FunctionDef) -> set[str]:
    args = func.args
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}


def _uses_names(func: ast.FunctionDef, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(func))


@dataclass
class ModuleFacts:
    """What the slow check needs to know about one module."""

    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    fixtures: set[str] = field(default_factory=set)
    slow_functions: set[str] = field(default_factory=set)
    module_slow: bool = False
    server_names: set[str] = field(default_factory=set)


def _facts(tree: ast.Module, package: str) -> ModuleFacts:
    facts = ModuleFacts(server_names=_server_names(tree, package))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            facts.module_slow = facts.module_slow or _marks_slow(node.value)
        members: Iterable[tuple[ast.AST, bool]]
        if isinstance(node, ast.FunctionDef):
            members = [(node, False)]
        elif isinstance(node, ast.ClassDef):
            class_slow = any(_is_slow_mark(d) for d in node.decorator_list)
            members = [(m, class_slow) for m in node.body if isinstance(m, ast.FunctionDef)]
        else:
            continue
        for member, inherited_slow in members:
            assert isinstance(member, ast.FunctionDef)
            facts.functions[member.name] = member
            if _is_fixture(member):
                facts.fixtures.add(member.name)
            if inherited_slow or any(_is_slow_mark(d) for d in member.decorator_list):
                facts.slow_functions.add(member.name)
    return facts


def _server_functions(facts: ModuleFacts, outside_fixtures: set[str]) -> set[str]:
    """Functions of a module that start a server: directly, through a fixture they ask for, or by
    calling a helper of the module that does (to a fixpoint)."""
    server_fixtures = set(outside_fixtures)
    using: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, func in facts.functions.items():
            if name in using:
                continue
            if _uses_names(func, facts.server_names | using) or _params(func) & server_fixtures:
                using.add(name)
                if name in facts.fixtures:
                    server_fixtures.add(name)
                changed = True
    return using


def _conftests_for(path: Path) -> list[Path]:
    """The conftest files pytest applies to `path`, outermost first."""
    found = []
    folder = path.parent
    while REPO in folder.parents or folder == REPO:
        if (folder / "conftest.py").is_file():
            found.append(folder / "conftest.py")
        if folder == REPO:
            break
        folder = folder.parent
    return found[::-1]


def _server_fixtures_for(path: Path) -> set[str]:
    """Names of the conftest fixtures visible to `path` that start a server."""
    server: set[str] = set()
    for conftest in _conftests_for(path):
        facts = _facts(_parse(conftest), _package_of(conftest))
        using = _server_functions(facts, server)
        server |= using & facts.fixtures
    return server


def unmarked_server_tests(tree: ast.Module, package: str, outside_fixtures: set[str]) -> list[str]:
    """Tests of a module that start a server process and are not marked slow."""
    facts = _facts(tree, package)
    if facts.module_slow:
        return []
    using = _server_functions(facts, outside_fixtures)
    return sorted(name for name in using if name.startswith("test_") and name not in facts.slow_functions)


def test_server_fixtures_are_found_in_the_conftests() -> None:
    faults = _server_fixtures_for(REPO / "tests" / "faults" / "test_http_faults.py")
    unit = _server_fixtures_for(REPO / "tests" / "unit" / "test_scoring.py")
    assert {"fhir_server", "upstream", "fresh_upstream", "clean", "proxy"} <= faults
    assert "fhir_server" in unit and "upstream" not in unit  # the faults conftest applies to faults only
    assert "log_journal" not in faults and "clinic" not in faults  # fixtures that start nothing


def test_the_slow_check_flags_unmarked_server_tests() -> None:
    source = """
import pytest
from demo.server import running_server

@pytest.fixture
def loaded(tmp_path):
    with running_server(tmp_path) as s:
        yield s

@pytest.fixture
def wrapped(loaded):
    return loaded

def test_direct(tmp_path):
    with running_server(tmp_path):
        pass

def _helper(path):
    with running_server(path):
        pass

def test_through_helper(tmp_path):
    _helper(tmp_path)

def test_through_own_fixture(wrapped):
    assert wrapped

def test_through_conftest_fixture(fhir_server):
    assert fhir_server

@pytest.mark.slow
def test_marked(fhir_server):
    assert fhir_server

def test_no_server(tmp_path):
    assert tmp_path
"""
    tree = ast.parse(source)
    assert unmarked_server_tests(tree, "tests.unit", {"fhir_server"}) == [
        "test_direct",
        "test_through_conftest_fixture",
        "test_through_helper",
        "test_through_own_fixture",
    ]
    marked = ast.parse("import pytest\npytestmark = [pytest.mark.integration, pytest.mark.slow]\n" + source)
    assert unmarked_server_tests(marked, "tests.unit", {"fhir_server"}) == []


def test_every_test_that_starts_a_server_is_marked_slow() -> None:
    offenders = {}
    for path in _test_files():
        found = unmarked_server_tests(_parse(path), _package_of(path), _server_fixtures_for(path))
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}, "mark these @pytest.mark.slow (or the module: pytestmark)"
