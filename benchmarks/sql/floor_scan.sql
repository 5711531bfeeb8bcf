-- The floor's first query: every line of the QuestionnaireResponse NDJSON, counted. `ignore_errors`
-- keeps the planted truncated line as an all-NULL row, as a bare read would.
SELECT count(*) AS responses
FROM read_json($path, format = 'newline_delimited', ignore_errors = true);
