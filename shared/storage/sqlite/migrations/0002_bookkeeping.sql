-- Budget leases: a reservation held by one model call of one run, until its charge or release commits or it
-- expires (the timer's sweep releases it). budget_counters.reserved_* is always the sum of the leases held.
CREATE TABLE budget_leases (
    tenant_id TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    period TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    cost TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, lease_id)
);
CREATE INDEX budget_leases_run ON budget_leases(tenant_id, run_id);
CREATE INDEX budget_leases_expiry ON budget_leases(expires_at);
