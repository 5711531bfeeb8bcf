-- Shared SQL, written once and installed on every warehouse connection (pipelines.sqlfiles.install_shared_macros).
-- Every layer reads resources and references through these macros, so "the newest version" and
-- "the id a reference points to" mean the same thing everywhere.

-- The pattern of a literal FHIR reference: `Type/id`, an absolute URL ending in `Type/id`, either one
-- with `/_history/<version>`. Group 1 is the type, group 2 the id (FHIR id charset, 1-64 chars).
-- pipelines/resources/fhir/references.py holds the same pattern for Python (a test keeps them equal).
CREATE OR REPLACE TEMP MACRO fhir_reference_pattern() AS
    '(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9.\-]{1,64})(?:/_history/[A-Za-z0-9.\-]{1,64})?$';

-- The resource type a reference points to (NULL for contained `#id`, logical or malformed references).
CREATE OR REPLACE TEMP MACRO ref_type(r) AS
    nullif(regexp_extract(r, fhir_reference_pattern(), 1), '');

-- The id a reference points to, when it points to a resource of type `t` (else NULL).
CREATE OR REPLACE TEMP MACRO ref_id(r, t) AS
    CASE WHEN ref_type(r) = t THEN nullif(regexp_extract(r, fhir_reference_pattern(), 2), '') END;

-- `Type/id` of a reference (the server base and `_history` stripped), NULL when it is not literal.
CREATE OR REPLACE TEMP MACRO ref_key(r) AS
    CASE WHEN ref_type(r) IS NOT NULL
         THEN ref_type(r) || '/' || regexp_extract(r, fhir_reference_pattern(), 2) END;

-- The id of a contained resource a reference points to (`#id`), else NULL.
CREATE OR REPLACE TEMP MACRO ref_contained(r) AS
    CASE WHEN starts_with(r, '#') THEN nullif(substr(r, 2), '') END;

-- The newest landed version of each (source, id) of a raw resource table, every column.
-- Order: meta.lastUpdated, then versionId as a number ("10" after "9"), then versionId as text (the
-- 'sha:' versions of servers that send none). Folder drops often lack lastUpdated: numeric order decides.
-- A resource whose newest version is a tombstone (`deleted`: a Bulk export listed it as deleted) is
-- left out, so it leaves staging and the marts.
CREATE OR REPLACE TEMP MACRO current_version(raw_table) AS TABLE
    SELECT *
    FROM query_table(raw_table)
    QUALIFY row_number() OVER (
        PARTITION BY source, id
        ORDER BY last_updated DESC NULLS LAST,
                 TRY_CAST(version_id AS BIGINT) DESC NULLS LAST,
                 version_id DESC
    ) = 1 AND deleted IS NOT TRUE;

-- The calendar date written in a FHIR date, dateTime or instant (its local date when it has an offset).
CREATE OR REPLACE TEMP MACRO fhir_date(s) AS TRY_CAST(left(s, 10) AS DATE);

-- Age in whole years on day d from a FHIR birthDate (YYYY, YYYY-MM or YYYY-MM-DD).
CREATE OR REPLACE TEMP MACRO age_at(b, d) AS CASE
    WHEN TRY_CAST(b AS DATE) IS NOT NULL
        THEN year(d) - year(TRY_CAST(b AS DATE))
             - CASE WHEN month(d) * 100 + day(d)
                         < month(TRY_CAST(b AS DATE)) * 100 + day(TRY_CAST(b AS DATE))
                    THEN 1 ELSE 0 END
    WHEN regexp_matches(b, '^[0-9]{4}') THEN year(d) - CAST(left(b, 4) AS INTEGER)
    END;
