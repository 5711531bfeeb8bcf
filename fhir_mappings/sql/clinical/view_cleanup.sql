-- A clinical view's work relations (the compiled rows over the current resources), also dropped
-- after a failed build.
DROP VIEW IF EXISTS {{ rows }};
DROP VIEW IF EXISTS {{ resources }};
