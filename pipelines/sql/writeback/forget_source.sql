-- Forget what was written to a source's server (its server was replaced by an empty one, as the demo
-- does every run): without this the log would say everything is there already and nothing is sent.
DELETE FROM ops.writeback_log WHERE source = $source;
