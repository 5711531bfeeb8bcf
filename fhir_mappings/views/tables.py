"""The site views' staging tables, one step each (`pipelines/catalog.py`; `fhir_mappings/views/site.py`).

Read from the folder the settings name (`ALLIANCE_QI_VIEWS_DIR` / `views_dir`) when the catalog
loads; with no folder set there are none.
"""

from __future__ import annotations

from fhir_mappings.views.site import site_view_steps
from pipelines.catalog import StepSpec
from pipelines.settings import load_settings

STEPS: tuple[StepSpec, ...] = site_view_steps(load_settings().views_path())
