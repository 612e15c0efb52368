-- Gateway model aliases: a tenant's model name → one of its own credentials and a deployment. Row-level security
-- as every tenant table. Usage records learn whether their tokens were estimated (a gateway stream whose upstream
-- broke off before its usage chunk).
CREATE TABLE model_aliases (
    tenant_id text NOT NULL REFERENCES tenants(id),
    alias text NOT NULL,
    credential text NOT NULL,
    deployment text NOT NULL,
    price_as text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alias)
);
ALTER TABLE model_aliases ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_aliases FORCE ROW LEVEL SECURITY;
CREATE POLICY model_aliases_tenant ON model_aliases
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY model_aliases_owner_read ON model_aliases FOR SELECT TO CURRENT_USER USING (true);
