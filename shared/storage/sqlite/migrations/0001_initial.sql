-- Tenantflow embedded store. Costs are TEXT decimals (never REAL); times are ISO 8601 UTC text.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    webhook_secret_blob TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
CREATE TABLE credentials (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    endpoint TEXT,
    api_version TEXT,
    auth TEXT NOT NULL,
    configs TEXT NOT NULL,
    secret_blob TEXT,
    key_id TEXT,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE runs (
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    flow_hash TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    document TEXT NOT NULL,
    idempotency_key TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id)
);
CREATE INDEX runs_tenant_created ON runs(tenant_id, created_at DESC);
CREATE INDEX runs_idempotency ON runs(tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE usage_records (
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    flow_id TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint_host TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost TEXT,
    recorded_at TEXT NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, step_id, iteration, attempt)
);
CREATE INDEX usage_tenant_day ON usage_records(tenant_id, day);
CREATE INDEX usage_day ON usage_records(day);
CREATE TABLE budgets (
    tenant_id TEXT PRIMARY KEY,
    monthly_tokens INTEGER,
    monthly_cost TEXT
);
CREATE TABLE budget_counters (
    tenant_id TEXT NOT NULL,
    period TEXT NOT NULL,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    used_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_cost TEXT NOT NULL DEFAULT '0',
    used_cost TEXT NOT NULL DEFAULT '0',
    PRIMARY KEY (tenant_id, period)
);
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    cron TEXT NOT NULL,
    inputs TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX schedules_tenant ON schedules(tenant_id, id);
CREATE TABLE replay_guard (
    tenant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, nonce)
);
