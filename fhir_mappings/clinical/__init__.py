"""Clinical staging: sessions, treatment episodes, patients, dispenses and the other tables the marts read.

One SQL file per table in `fhir_mappings/sql/clinical/`, declared in `fhir_mappings/clinical/tables.py`.
"""
