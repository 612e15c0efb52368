-- Which API key started the run a usage record belongs to (NULL: no key — the CLI, a schedule, a webhook).
ALTER TABLE usage_records ADD COLUMN api_key_id TEXT;
