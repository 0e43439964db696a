-- Rotation keeps the previous secret valid for a grace period.
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_valid_until INTEGER;
CREATE INDEX api_keys_updated ON api_keys(updated_at);
