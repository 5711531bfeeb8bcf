"""Settings: the sources file + environment overrides, and the one mechanism every area shares
(precedence, errors naming the variable, min_cell defined once, Literal types in the Dagster config)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pydantic
import pytest

from marts.build import build_marts
from marts.publish import PublishError, storage_version
from marts.report.render import format_count, render_report, report_path
from marts.settings import MIN_CELL, MartSettings, MartSettingsError, load_mart_settings
from marts.suppression import suppress
from pipelines.resources.fhir_source import FhirSourceConfig, FhirSourcesResource, WarehouseResource
from pipelines.settings import REPO_ROOT, PipelineSettings, SettingsError, load_settings
from quality_checks.params import QualitySettings, QualitySettingsError
from tests.support.marts_clinic import KEY, Clinic, two_therapists


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    return p


def test_repo_sources_file_loads_with_demo_default():
    s = load_settings(REPO_ROOT / "sources.yaml", env={})
    assert s.default_source == "demo"
    assert s.source().base_url == "http://127.0.0.1:8090/fhir"
    assert s.warehouse_path() == REPO_ROOT / "data" / "warehouse.duckdb"
    assert s.validation == "used_elements"


def test_environment_overrides_base_url_auth_and_warehouse(tmp_path):
    env = {
        "FHIR_BASE_URL": "https://ehr.example.org/fhir/",
        "WAREHOUSE_PATH": str(tmp_path / "w.duckdb"),
        "FHIR_AUTH_MODE": "bearer",
        "FHIR_TOKEN": "not-logged",
    }
    s = load_settings(REPO_ROOT / "sources.yaml", env=env)
    src = s.source()
    assert src.base_url == "https://ehr.example.org/fhir"  # trailing slash removed
    assert src.auth.mode == "bearer"
    assert src.auth.token_env == "FHIR_TOKEN"  # the name of the variable, never its value
    assert "not-logged" not in s.model_dump_json()
    assert s.warehouse_path() == tmp_path / "w.duckdb"


def test_env_can_define_a_source_missing_from_the_file(tmp_path):
    s = load_settings(_write(tmp_path, "sources: {}\n"), env={"FHIR_BASE_URL": "http://127.0.0.1:1/fhir"})
    assert s.source().base_url == "http://127.0.0.1:1/fhir"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources:\n  a: {kind: rest}\ndefault_source: a\n", "needs base_url"),
        ("sources:\n  a: {kind: folder}\ndefault_source: a\n", "needs folder"),
        ("sources:\n  a: {kind: ftp, base_url: x}\ndefault_source: a\n", "kind"),
        ("sources: [unclosed\n", "not valid YAML"),
        ("validation: lenient\nsources:\n  demo: {base_url: http://x}\n", "validation"),
    ],
)
def test_invalid_settings_fail_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(_write(tmp_path, text), env={})


def test_unknown_source_name_lists_known_ones(tmp_path):
    s = load_settings(_write(tmp_path, "sources:\n  demo: {base_url: http://x}\n"), env={})
    with pytest.raises(SettingsError, match="defines: demo"):
        s.source("nope")


# --- one mechanism for every area (pipelines/settings_base.py) ----------------------------------------

BASE_SOURCES = "sources:\n  demo: {base_url: 'http://x', folder: /tmp/in}\n"


def _pipeline(read: Callable[[PipelineSettings], object]) -> Callable[[Path, dict[str, str]], object]:
    return lambda f, env: read(load_settings(f, env=env))


def _marts(field: str) -> Callable[[Path, dict[str, str]], object]:
    return lambda f, env: getattr(load_mart_settings(env={**env, "ALLIANCE_QI_MART_SETTINGS": str(f)}), field)


def _quality(field: str) -> Callable[[Path, dict[str, str]], object]:
    # the quality area has no file of its own; its min_cell follows the mart settings file
    return lambda f, env: getattr(
        QualitySettings.from_env({**env, "ALLIANCE_QI_MART_SETTINGS": str(f)}), field
    )


# (read(file, env), file without the key, file with the key, variable, its value,
#  default, from the file, from the variable)
PRECEDENCE = [
    pytest.param(
        _pipeline(lambda s: s.warehouse),
        BASE_SOURCES,
        BASE_SOURCES + "warehouse: file.duckdb\n",
        "WAREHOUSE_PATH",
        "env.duckdb",
        "data/warehouse.duckdb",
        "file.duckdb",
        "env.duckdb",
        id="sources-warehouse",
    ),
    pytest.param(
        _pipeline(lambda s: s.source().kind),
        BASE_SOURCES,
        "sources:\n  demo: {base_url: 'http://x', folder: /tmp/in, kind: bulk}\n",
        "FHIR_SOURCE_KIND",
        "folder",
        "rest",
        "bulk",
        "folder",
        id="sources-kind",
    ),
    pytest.param(
        _pipeline(lambda s: s.source().auth.mode),
        BASE_SOURCES,
        "sources:\n  demo: {base_url: 'http://x', auth: {mode: basic, username: u}}\n",
        "FHIR_AUTH_MODE",
        "bearer",
        "none",
        "basic",
        "bearer",
        id="sources-auth-mode",
    ),
    pytest.param(
        _pipeline(lambda s: s.lock_timeout_s),
        BASE_SOURCES,
        BASE_SOURCES + "lock_timeout_s: 60\n",
        "ALLIANCE_QI_LOCK_TIMEOUT_S",
        "30",
        900.0,
        60.0,
        30.0,
        id="sources-lock-timeout",
    ),
    pytest.param(
        _pipeline(lambda s: s.views_dir),
        BASE_SOURCES,
        BASE_SOURCES + "views_dir: site/views\n",
        "ALLIANCE_QI_VIEWS_DIR",
        "/srv/views",
        "",
        "site/views",
        "/srv/views",
        id="sources-views-dir",
    ),
    pytest.param(
        _marts("min_cell"),
        "marts: {}\n",
        "marts:\n  min_cell: 5\n",
        "ALLIANCE_QI_MART_MIN_CELL",
        "7",
        MIN_CELL,
        5,
        7,
        id="marts-min-cell",
    ),
    pytest.param(
        _marts("therapist_periods"),
        "repair_window_sessions: 3\n",
        "therapist_periods: [all, month]\n",
        "ALLIANCE_QI_MART_THERAPIST_PERIODS",
        "all, quarter",
        ["all", "year"],
        ["all", "month"],
        ["all", "quarter"],
        id="marts-list-comma-separated",
    ),
    pytest.param(
        _quality("min_cell"),
        "marts: {}\n",
        "marts:\n  min_cell: 5\n",
        "ALLIANCE_QI_QUALITY_MIN_CELL",
        "7",
        MIN_CELL,
        5,
        7,
        id="quality-min-cell",
    ),
    pytest.param(
        _quality("authored_floor"),
        "marts: {}\n",
        None,
        "ALLIANCE_QI_QUALITY_AUTHORED_FLOOR",
        "2010-06-01",
        date(2000, 1, 1),
        None,
        date(2010, 6, 1),
        id="quality-authored-floor",
    ),
    pytest.param(
        lambda f, env: report_path(env=env),
        "",
        None,
        "ALLIANCE_QI_REPORT_PATH",
        "/srv/qi/report.html",
        REPO_ROOT / "reports" / "qi_report.html",
        None,
        Path("/srv/qi/report.html"),
        id="report-path",
    ),
    pytest.param(
        lambda f, env: storage_version(env=env),
        "",
        None,
        "ALLIANCE_QI_PUBLISH_STORAGE_VERSION",
        "v1.2.0",
        "v1.0.0",
        None,
        "v1.2.0",
        id="publish-storage-version",
    ),
]


@pytest.mark.parametrize(
    ("read", "base", "keyed", "var", "raw", "default", "from_file", "from_env"), PRECEDENCE
)
def test_precedence_is_environment_then_file_then_default(
    tmp_path, read, base, keyed, var, raw, default, from_file, from_env
):
    f = _write(tmp_path, base)
    assert read(f, {}) == default
    assert read(f, {var: ""}) == default  # an empty variable counts as unset
    if keyed is not None:
        f.write_text(keyed)
        assert read(f, {}) == from_file
    assert read(f, {var: raw}) == from_env


def test_arguments_override_the_environment_and_the_environment_a_bad_file_value(tmp_path):
    assert load_mart_settings(env={"ALLIANCE_QI_MART_MIN_CELL": "7"}, min_cell=9).min_cell == 9
    # the variable wins, so the file's invalid kind is never validated
    f = _write(tmp_path, "sources:\n  demo: {base_url: 'http://x', kind: ftp}\n")
    assert load_settings(f, env={"FHIR_SOURCE_KIND": "rest"}).source().kind == "rest"


# (read(file, env), variable, bad value, error type, what the message must say)
BAD_VALUES = [
    pytest.param(
        _marts("min_cell"),
        "ALLIANCE_QI_MART_MIN_CELL",
        "abc",
        MartSettingsError,
        r"min_cell \(ALLIANCE_QI_MART_MIN_CELL\): Input should be a valid integer.*\(got 'abc'\)",
        id="mart-min-cell",
    ),
    pytest.param(
        _marts("therapist_periods"),
        "ALLIANCE_QI_MART_THERAPIST_PERIODS",
        "all, fortnight",
        MartSettingsError,
        r"therapist_periods\.1 \(ALLIANCE_QI_MART_THERAPIST_PERIODS\).*\(got 'fortnight'\)",
        id="mart-period",
    ),
    pytest.param(
        _pipeline(lambda s: s),
        "FHIR_SOURCE_KIND",
        "ftp",
        SettingsError,
        r"sources\.demo\.kind \(FHIR_SOURCE_KIND\): Input should be 'rest', 'bulk' or 'folder' \(got 'ftp'\)",
        id="source-kind",
    ),
    pytest.param(
        _pipeline(lambda s: s),
        "FHIR_AUTH_MODE",
        "oauth",
        SettingsError,
        r"sources\.demo\.auth\.mode \(FHIR_AUTH_MODE\).*'smart'",
        id="auth-mode",
    ),
    pytest.param(
        _pipeline(lambda s: s),
        "FHIR_INCREMENTAL",
        "sometimes",
        SettingsError,
        r"sources\.demo\.incremental \(FHIR_INCREMENTAL\).*'date_window'",
        id="incremental",
    ),
    pytest.param(
        _pipeline(lambda s: s),
        "ALLIANCE_QI_VALIDATION",
        "lenient",
        SettingsError,
        r"validation \(ALLIANCE_QI_VALIDATION\): Input should be 'used_elements' or 'strict'",
        id="validation",
    ),
    pytest.param(
        _pipeline(lambda s: s),
        "ALLIANCE_QI_LOCK_TIMEOUT_S",
        "soon",
        SettingsError,
        r"lock_timeout_s \(ALLIANCE_QI_LOCK_TIMEOUT_S\): Input should be a valid number",
        id="lock-timeout",
    ),
    pytest.param(
        lambda f, env: QualitySettings.from_env(env),
        "ALLIANCE_QI_QUALITY_FRESHNESS_MAX_DAYS",
        "a week",
        QualitySettingsError,
        r"freshness_max_days \(ALLIANCE_QI_QUALITY_FRESHNESS_MAX_DAYS\).*\(got 'a week'\)",
        id="quality-freshness",
    ),
    pytest.param(
        lambda f, env: QualitySettings.from_env(env),
        "ALLIANCE_QI_QUALITY_AUTHORED_FLOOR",
        "2000-13-01",
        QualitySettingsError,
        r"authored_floor \(ALLIANCE_QI_QUALITY_AUTHORED_FLOOR\)",
        id="quality-date",
    ),
    pytest.param(
        lambda f, env: storage_version(env=env),
        "ALLIANCE_QI_PUBLISH_STORAGE_VERSION",
        "latest",
        PublishError,
        r"storage_version \(ALLIANCE_QI_PUBLISH_STORAGE_VERSION\).*\(got 'latest'\)",
        id="publish-storage-version",
    ),
]


@pytest.mark.parametrize(("read", "var", "raw", "error", "message"), BAD_VALUES)
def test_a_bad_value_fails_naming_its_variable(tmp_path, read, var, raw, error, message):
    f = _write(tmp_path, BASE_SOURCES)
    with pytest.raises(error, match=message) as exc:
        read(f, {var: raw})
    assert isinstance(exc.value, SettingsError)  # one base type for every area


def test_a_bad_file_value_names_the_file_and_an_unknown_mart_key_is_rejected(tmp_path):
    f = _write(tmp_path, "marts:\n  min_cell: abc\n")
    with pytest.raises(MartSettingsError, match=rf"min_cell \({re.escape(str(f))}\).*\(got 'abc'\)"):
        load_mart_settings(f, env={})
    f.write_text("marts:\n  min_cel: 5\n")
    with pytest.raises(MartSettingsError, match=rf"min_cel \({re.escape(str(f))}\): unknown setting"):
        load_mart_settings(f, env={})
    with pytest.raises(MartSettingsError, match="no such file"):
        load_mart_settings(tmp_path / "missing.yaml", env={})


def test_min_cell_is_defined_once_and_one_setting_reaches_marts_quality_and_report(monkeypatch):
    # one definition: every default is the same constant
    assert MartSettings.model_fields["min_cell"].default == MIN_CELL
    assert QualitySettings.model_fields["min_cell"].default == MIN_CELL
    assert format_count(MIN_CELL - 1) == f"&lt;{MIN_CELL}"
    assert inspect.signature(suppress).parameters["min_cell"].default == MIN_CELL
    # one setting: ALLIANCE_QI_MART_MIN_CELL changes the marts, the quality check and the report
    env = {"ALLIANCE_QI_MART_MIN_CELL": "3"}
    marts = load_mart_settings(env=env)
    quality = QualitySettings.from_env(env)
    assert (marts.min_cell, quality.min_cell) == (3, 3)
    assert quality.values({})["small_counts"] == [1, 2]
    clinic = two_therapists()
    build_marts(clinic.con, marts, key=KEY)
    assert {r[0] for r in clinic.rows("SELECT DISTINCT min_cell FROM marts.therapist_alliance")} == {3}
    assert render_report(clinic.con)[2] == 3
    # with no mart rows, the report still uses the size the marts were built with
    empty = Clinic()
    empty.build(min_cell=4)
    assert render_report(empty.con)[2] == 4


def test_dagster_config_uses_the_literal_types(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="'rest', 'bulk' or 'folder'"):
        FhirSourceConfig(kind="ftp")
    with pytest.raises(pydantic.ValidationError, match="'none', 'bearer', 'basic' or 'smart'"):
        FhirSourceConfig(auth_mode="oauth")
    # Dagster turns each Literal into an Enum config type, so the launchpad rejects a typo too
    source_fields = FhirSourceConfig.to_config_schema().as_field().config_type.fields
    warehouse_fields = WarehouseResource.to_config_schema().as_field().config_type.fields
    enums = {
        name: [v.config_value for v in fields[name].config_type.enum_values]
        for fields, name in [
            (source_fields, "kind"),
            (source_fields, "auth_mode"),
            (source_fields, "incremental"),
            (warehouse_fields, "validation"),
        ]
    }
    assert enums == {
        "kind": ["rest", "bulk", "folder"],
        "auth_mode": ["none", "bearer", "basic", "smart"],
        "incremental": ["auto", "last_updated", "date_window", "full"],
        "validation": ["used_elements", "strict"],
    }
    env = {"FHIR_SOURCE_KIND": "folder", "ALLIANCE_QI_LOCK_TIMEOUT_S": "30"}
    s = load_settings(_write(tmp_path, BASE_SOURCES), env=env)
    assert FhirSourcesResource.from_settings(s).source(None).kind == "folder"
    assert WarehouseResource.from_settings(s).lock_timeout_s == 30.0


def test_redirecting_the_default_source_leaves_its_write_back_behind(tmp_path):
    """sources.yaml enables write-back for the server it names; FHIR_BASE_URL pointing the source at
    another server (an EHR) turns it off there unless FHIR_WRITEBACK asks for it."""
    f = _write(
        tmp_path,
        "default_source: s\nsources:\n  s:\n    kind: rest\n    base_url: http://127.0.0.1:8090/fhir\n"
        "    writeback:\n      enabled: true\n      scopes: [system/Device.cu, system/Observation.cu, "
        "system/Flag.cu, system/Task.cu]\n",
    )

    def writeback(env: dict[str, str]) -> bool:
        return load_settings(f, env=env).sources["s"].writeback.enabled

    assert writeback({}) is True
    assert writeback({"FHIR_BASE_URL": "https://ehr.example.org/fhir"}) is False
    assert writeback({"FHIR_BASE_URL": "https://ehr.example.org/fhir", "FHIR_WRITEBACK": "on"}) is True
