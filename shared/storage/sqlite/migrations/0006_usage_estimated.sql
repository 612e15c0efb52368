-- Whether a usage record's tokens are an estimate (a gateway stream that ended before its usage chunk).
ALTER TABLE usage_records ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
