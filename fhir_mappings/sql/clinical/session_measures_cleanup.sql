-- Drop session_measures.sql's work tables once its counts are read.
DROP TABLE IF EXISTS linked_responses;
DROP TABLE IF EXISTS usable_responses;
DROP TABLE IF EXISTS usable_scores;
