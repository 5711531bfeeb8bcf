-- marts.report_not_on_track (marts/feedback.py): One row of counts for the practice from
-- marts.not_on_track: open episodes by flag, flags by method, alliance alerts. Suppressed afterwards.
SELECT count(*)::INTEGER AS open_episodes,
       (count(*) FILTER (WHERE flag = 'not_on_track'))::INTEGER AS not_on_track,
       (count(*) FILTER (WHERE flag = 'on_track'))::INTEGER AS on_track,
       (count(*) FILTER (WHERE flag = 'insufficient_data'))::INTEGER AS insufficient_data,
       (count(*) FILTER (WHERE flag = 'not_on_track' AND method LIKE '%empirical%'))::INTEGER
           AS flagged_empirical,
       (count(*) FILTER (WHERE flag = 'not_on_track' AND method NOT LIKE '%empirical%'))::INTEGER
           AS flagged_rule_based,
       (count(*) FILTER (WHERE alliance_drop_alert))::INTEGER AS alliance_drop_alerts,
       (count(*) FILTER (WHERE low_early_alliance_alert))::INTEGER AS low_early_alliance_alerts
FROM marts.not_on_track;
