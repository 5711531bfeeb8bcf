-- The QI report's early alliance vs PHQ-9 section: the one row of report_early_alliance_fit (the
-- least-squares line, the episodes behind it, whether it is suppressed, and the early-session count).
SELECT episodes, intercept, slope, suppressed, early_sessions
FROM {{ schema }}.report_early_alliance_fit;
