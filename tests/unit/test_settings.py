"""Sources file + environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.settings import REPO_ROOT, SettingsError, load_settings


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
