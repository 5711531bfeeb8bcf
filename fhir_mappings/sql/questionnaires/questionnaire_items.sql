-- staging.questionnaire_items: one row per item (any depth, in form order) of each current
-- Questionnaire, from the rows registered as `questionnaire_items_frame`.
CREATE OR REPLACE TABLE staging.questionnaire_items AS
SELECT source, questionnaire_id, url, version, link_id,
       item_order::INTEGER AS item_order,  -- depth-first position in the form, from 1
       type,
       codes::VARCHAR[] AS codes           -- the item's code values
FROM questionnaire_items_frame;
