-- The Questionnaire canonicals a source's responses cite (`{{ responses }}`: the warehouse's table or an
-- attached landing file's).
SELECT DISTINCT resource ->> 'questionnaire' AS canonical
FROM {{ responses }}
WHERE source = $source AND resource ->> 'questionnaire' IS NOT NULL
