-- Write what the write-ahead log holds into the database file (after a file landed: the WAL goes).
CHECKPOINT
