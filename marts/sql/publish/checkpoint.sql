-- Everything of the published file into the file itself (no write-ahead log left beside it).
CHECKPOINT {{ alias }};
