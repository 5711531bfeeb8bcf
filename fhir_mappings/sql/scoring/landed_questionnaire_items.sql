-- The items of each landed Questionnaire, for recognition and item mapping.
SELECT source, questionnaire_id, link_id, item_order, type, codes
FROM staging.questionnaire_items;
