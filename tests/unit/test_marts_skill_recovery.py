"""On a generated clinic, the skill use x alliance models of marts.alliance_associations recover the
generator's planted effects (demo.generator.SKILL_EFFECTS) in sign and size.

Size: the generator plants its coefficients for an episode that completes its planned sessions;
episodes that end early stop part-way down the same curve and PHQ-9 is clamped to 0-27, so the fit over
all closed episodes is attenuated. The test asks for the planted sign, an interval that excludes zero
(but for the additive model's skill use, below), and a magnitude between 40 % and 125 % of the
planted one (docs/marts.md gives the measured values).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from demo.generator import SKILL_EFFECTS
from tests.support.generated_warehouse import generated_warehouse_file


@pytest.fixture(scope="module")
def model_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    path: Path = generated_warehouse_file(tmp_path_factory)
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(
            "SELECT * FROM marts.alliance_associations WHERE question_id LIKE ? ORDER BY question_id",
            ["skill_alliance_%"],
        )
        cols = [d[0] for d in cur.description]
        return {r[0]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    finally:
        con.close()


@pytest.mark.parametrize(
    ("question_id", "planted"),
    [
        ("skill_alliance_moderation:skill_use", "skill_use"),
        ("skill_alliance_moderation:alliance", "alliance"),
        ("skill_alliance_moderation:skill_use_x_alliance", "skill_use_x_alliance"),
        ("skill_alliance_moderation:baseline_phq9", "baseline_phq9"),
        ("skill_alliance_additive:skill_use", "skill_use"),
        ("skill_alliance_additive:alliance", "alliance"),
    ],
)
def test_planted_effects_are_recovered_in_sign_and_size(model_rows, question_id, planted):
    row = model_rows[question_id]
    truth = SKILL_EFFECTS[planted]
    assert not row["suppressed"] and row["n"] >= 100
    assert row["ci_lower"] < row["estimate"] < row["ci_upper"]
    assert (row["estimate"] < 0) if truth < 0 else (row["estimate"] > 0), row
    if question_id != "skill_alliance_additive:skill_use":
        # the interval excludes zero on the planted side. Not asked of the additive model's skill use:
        # without the interaction its slope is the average over alliance levels, and on 149 episodes
        # of 12 therapists its clustered interval reaches just over 0 (-0.155 to 0.009)
        assert (row["ci_upper"] < 0) if truth < 0 else (row["ci_lower"] > 0), row
    assert 0.4 * abs(truth) <= abs(row["estimate"]) <= 1.25 * abs(truth), (row["estimate"], truth)


def test_both_models_rest_on_the_same_closed_episodes_and_all_therapists(model_rows):
    assert len(model_rows) == 7
    assert len({r["n"] for r in model_rows.values()}) == 1
    assert all("12 therapists" in r["detail"] for r in model_rows.values())
    assert all(r["unit"] == "closed episode" for r in model_rows.values())
