-- mart_params: one row holding every threshold and setting the clinical staging and mart SQL read.
-- The SQL cross-joins it, so values are bound (never formatted into SQL text) and the same values are
-- copied into the threshold columns beside the rows they shaped.
CREATE OR REPLACE TEMP TABLE mart_params AS
SELECT $phq9_caseness::DOUBLE AS phq9_caseness,
       $phq9_reliable_change::DOUBLE AS phq9_reliable_change,
       $phq9_response_drop_fraction::DOUBLE AS phq9_response_drop_fraction,
       $phq9_remission_below::DOUBLE AS phq9_remission_below,
       $gad7_caseness::DOUBLE AS gad7_caseness,
       $gad7_reliable_change::DOUBLE AS gad7_reliable_change,
       $ors_clinical_cutoff::DOUBLE AS ors_clinical_cutoff,
       $ors_reliable_change::DOUBLE AS ors_reliable_change,
       $srs_concern_below::DOUBLE AS srs_concern_below,
       $wai_sr_low_alliance_mean::DOUBLE AS wai_sr_low_alliance_mean,
       $wai_therapist_low_alliance_mean::DOUBLE AS wai_therapist_low_alliance_mean,
       $wai_sr_reliable_drop::DOUBLE AS wai_sr_reliable_drop,
       $srs_reliable_drop::DOUBLE AS srs_reliable_drop,
       $dai10_positive_above::DOUBLE AS dai10_positive_above,
       $as_of_date::DATE AS as_of_date,
       $episode_gap_days::INTEGER AS episode_gap_days,
       $rupture_srs_rule::VARCHAR AS rupture_srs_rule,
       $repair_window_sessions::INTEGER AS repair_window_sessions,
       $early_sessions::INTEGER AS early_sessions,
       $pdc_threshold::DOUBLE AS pdc_threshold,
       $pdc_min_fills::INTEGER AS pdc_min_fills,
       $pdc_index_min_days::INTEGER AS pdc_index_min_days,
       $pdc_window_days::INTEGER AS pdc_window_days,
       $adherence_period::VARCHAR AS adherence_period,
       $baseline_window_sessions::INTEGER AS baseline_window_sessions,
       $baseline_window_days::INTEGER AS baseline_window_days,
       $min_cell::INTEGER AS min_cell,
       $ci_level::DOUBLE AS ci_level,
       $ci_z::DOUBLE AS ci_z,
       $funnel_z_inner::DOUBLE AS funnel_z_inner,
       $funnel_z_outer::DOUBLE AS funnel_z_outer;

-- Dispense statuses that count as supply, and appointment statuses counted as attended or missed.
CREATE OR REPLACE TEMP TABLE mart_dispense_statuses AS
SELECT unnest($dispense_statuses::VARCHAR[]) AS status;

CREATE OR REPLACE TEMP TABLE mart_appointment_statuses AS
SELECT unnest($appointment_attended::VARCHAR[]) AS status, 'attended' AS kind
UNION ALL
SELECT unnest($appointment_missed::VARCHAR[]), 'missed';
