-- The QI report's "patients not on track" panel: the one row of report_not_on_track (open episodes by
-- flag, flags by method, alliance alerts; small counts already suppressed with complements).
SELECT
    open_episodes,
    not_on_track,
    on_track,
    insufficient_data,
    flagged_empirical,
    flagged_rule_based,
    alliance_drop_alerts,
    low_early_alliance_alerts,
    not_on_track_quantile,
    feedback_horizon_sessions
FROM {{ schema }}.report_not_on_track;
