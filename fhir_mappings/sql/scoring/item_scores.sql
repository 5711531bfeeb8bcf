-- One row per item of each scored response: its score (reverse-keyed items reflected within the
-- instrument's item range), how many answers it had, and whether any answer lies outside the range.
CREATE OR REPLACE TEMP TABLE item_scores AS
SELECT answer.source, answer.response_id, answer.instrument, answer.item_number,
       count(*) AS n_answers,
       CASE WHEN item.reverse THEN instrument_def.item_lo + instrument_def.item_hi - min(answer.score)
            ELSE min(answer.score) END AS score,
       min(answer.score) < instrument_def.item_lo OR min(answer.score) > instrument_def.item_hi
           OR max(answer.score) < instrument_def.item_lo OR max(answer.score) > instrument_def.item_hi AS out_of_range,
       min(answer.score) AS raw_score
FROM answer_scores AS answer
JOIN response_routes AS route
  ON route.source = answer.source AND route.response_id = answer.response_id AND route.route = 'scored'
JOIN registry_instruments AS instrument_def ON instrument_def.instrument = answer.instrument
LEFT JOIN registry_items AS item
       ON item.instrument = answer.instrument AND item.item_number = answer.item_number
WHERE answer.role = 'item'
GROUP BY answer.source, answer.response_id, answer.instrument, answer.item_number, item.reverse,
         instrument_def.item_lo, instrument_def.item_hi;
