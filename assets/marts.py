"""Mart assets, generated from the catalog (`marts/tables.py`): group `marts`, one asset per mart.

Mart settings come from `ALLIANCE_QI_MART_SETTINGS` / `ALLIANCE_QI_MART_*`, the pseudonym key from
`ALLIANCE_QI_PSEUDONYM_KEY` or `ALLIANCE_QI_PSEUDONYM_KEY_FILE` (never from Dagster config). Every
mart is rebuilt whole, so re-materialising changes nothing.
"""

import dagster as dg

from assets.factory import step_assets
from pipelines.catalog import load_catalog

mart_assets: list[dg.AssetsDefinition] = step_assets(load_catalog().steps_in("marts"), load_catalog())
