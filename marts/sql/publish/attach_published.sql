-- A published file, read-only, on a fresh connection.
ATTACH $path AS published (READ_ONLY);
