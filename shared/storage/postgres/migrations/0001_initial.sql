-- Tenantflow PostgreSQL schema, version 1.
-- Roles: this file runs as the OWNER role (TENANTFLOW_POSTGRES_MIGRATION_DSN). The app connects with
-- TENANTFLOW_POSTGRES_DSN as {app_role}: not the owner, not a superuser, no BYPASSRLS; it gets only DML rights.
-- Row-level security: credentials and runs are visible only to the transaction whose
-- `tenantflow.tenant_id` setting (set with set_config(..., true), i.e. transaction-local) names their tenant.
-- Operator work that spans tenants (key rotation, admin listings) sets `tenantflow.scope` = 'operator' for its
-- own transaction only; no request path sets it.
CREATE TABLE tenants (
    id text PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'suspended')),
    webhook_secret_blob text,
    created_at timestamptz NOT NULL
);
CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants(id),
    key_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
CREATE TABLE credentials (
    tenant_id text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    endpoint text,
    api_version text,
    auth text NOT NULL,
    configs jsonb NOT NULL DEFAULT '{}',
    secret_blob text,
    key_id text,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE runs (
    run_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    flow_id text NOT NULL,
    status text NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL,
    document jsonb NOT NULL
);
CREATE INDEX runs_tenant_created ON runs (tenant_id, created_at DESC);
CREATE INDEX runs_idempotency ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE usage_records (
    tenant_id text NOT NULL,
    run_id text NOT NULL,
    step_id text NOT NULL,
    iteration integer NOT NULL,
    attempt integer NOT NULL,
    flow_id text NOT NULL,
    model text NOT NULL,
    endpoint_host text NOT NULL,
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    total_tokens integer NOT NULL,
    cached_tokens integer NOT NULL,
    reasoning_tokens integer NOT NULL,
    cost numeric(20, 10),
    recorded_at timestamptz NOT NULL,
    day date NOT NULL,
    PRIMARY KEY (tenant_id, run_id, step_id, iteration, attempt)
);
-- Read model: per (tenant, day, model, flow) sums, maintained in the same statement that inserts new records,
-- so a tenant-month summary reads a few hundred rows instead of every record.
CREATE TABLE usage_daily (
    tenant_id text NOT NULL,
    day date NOT NULL,
    model text NOT NULL,
    flow_id text NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL,
    cost numeric(24, 10),
    priced_records bigint NOT NULL,
    records bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, model, flow_id)
);
CREATE INDEX usage_daily_day ON usage_daily (day);
-- Distinct runs per (tenant, day, model, flow), for the `runs` column of summaries.
CREATE TABLE usage_run_days (
    tenant_id text NOT NULL,
    day date NOT NULL,
    model text NOT NULL,
    flow_id text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (tenant_id, day, model, flow_id, run_id)
);
CREATE TABLE budgets (
    tenant_id text PRIMARY KEY,
    monthly_tokens bigint,
    monthly_cost numeric(20, 10)
);
CREATE TABLE budget_counters (
    tenant_id text NOT NULL,
    period text NOT NULL,
    reserved_tokens bigint NOT NULL DEFAULT 0,
    used_tokens bigint NOT NULL DEFAULT 0,
    reserved_cost numeric(24, 10) NOT NULL DEFAULT 0,
    used_cost numeric(24, 10) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period)
);
CREATE TABLE schedules (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    flow_id text NOT NULL,
    cron text NOT NULL,
    inputs jsonb NOT NULL,
    enabled boolean NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX schedules_tenant ON schedules (tenant_id, id);
CREATE TABLE replay_guard (
    tenant_id text NOT NULL,
    nonce text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, nonce)
);

ALTER TABLE credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY credentials_tenant ON credentials
    USING (tenant_id = current_setting('tenantflow.tenant_id', true)
           OR current_setting('tenantflow.scope', true) = 'operator')
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true)
                OR current_setting('tenantflow.scope', true) = 'operator');
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
CREATE POLICY runs_tenant ON runs
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
