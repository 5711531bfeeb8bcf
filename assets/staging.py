"""Staging layer assets, generated from the catalog (group `staging`, one asset per table):

- `answer_assets`: flattened answers, resolved Questionnaires and scoring (`fhir_mappings/tables.py`):
  `staging.measure_scores` and the tables built with it;
- `clinical_assets`: clinical staging (`fhir_mappings/clinical/tables.py`): sessions, episodes, ...
- `view_assets`: one per site ViewDefinition file (`fhir_mappings/views/tables.py`): `staging.view_<name>`.
"""

import dagster as dg

from assets.factory import step_assets
from fhir_mappings.clinical.tables import STEPS as CLINICAL_STEPS
from fhir_mappings.views.tables import STEPS as VIEW_STEPS
from pipelines.catalog import load_catalog

_clinical = {s.name for s in CLINICAL_STEPS}
_views = {s.name for s in VIEW_STEPS}
_staging = load_catalog().steps_in("staging")

answer_assets: list[dg.AssetsDefinition] = step_assets(
    [s for s in _staging if s.name not in _clinical | _views], load_catalog()
)
clinical_assets: list[dg.AssetsDefinition] = step_assets(
    [s for s in _staging if s.name in _clinical], load_catalog()
)
view_assets: list[dg.AssetsDefinition] = step_assets(
    [s for s in _staging if s.name in _views], load_catalog()
)
staging_assets: list[dg.AssetsDefinition] = [*answer_assets, *clinical_assets, *view_assets]
