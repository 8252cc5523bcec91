-- API keys are shared through PostgreSQL so a key works on every node:
-- 1 once PostgreSQL has this key (or it came from there).
ALTER TABLE api_keys ADD COLUMN synced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX api_keys_unsynced ON api_keys (synced) WHERE synced = 0;
