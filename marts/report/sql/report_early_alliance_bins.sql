-- The bands of the early alliance vs PHQ-9 chart: the rows of report_early_alliance_bins with a shown
-- count and mean (x = the band's middle, y = its mean PHQ-9 improvement), lowest band first.
SELECT (band_lower + band_upper) / 2 AS x,
       mean_phq9_improvement AS y,
       episodes,
       band_lower,
       band_upper
FROM {{ schema }}.report_early_alliance_bins
WHERE episodes IS NOT NULL AND mean_phq9_improvement IS NOT NULL
ORDER BY band;
