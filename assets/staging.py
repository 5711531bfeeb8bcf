"""Staging layer assets, generated from the catalog: answers and Questionnaires
(`fhir_mappings/tables.py`), scoring (`staging.measure_scores` and the tables built with it), and
clinical staging (`fhir_mappings/clinical/tables.py`). Group `staging`, one asset per table."""

import dagster as dg

from assets.factory import step_assets
from pipelines.catalog import load_catalog

staging_assets: list[dg.AssetsDefinition] = step_assets(load_catalog().steps_in("staging"), load_catalog())
