"""Helpers shared by several test modules: import them from here (or use a conftest.py fixture),
never from another `test_*` module (tests/unit/test_test_layout.py enforces it).

- `fhir_stub`: a scripted FHIR server thread on 127.0.0.1 for client unit tests;
- `scoring_kit`: a tiny in-memory warehouse that runs the real staging and scoring SQL;
- `marts_clinic`: hand-built warehouses (`Clinic`) for the mart tests, with the test pseudonym key;
- `generated_warehouse`: one warehouse built on a generated clinic, shared by the publish, query-doc
  and report tests.
"""
