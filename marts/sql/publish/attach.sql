-- The new published file, attached beside the warehouse under a fresh alias, in the storage format
-- BI drivers can read.
ATTACH $path AS {{ alias }} (STORAGE_VERSION $storage_version);
