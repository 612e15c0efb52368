-- Principals (App Service Authentication) who may see a tenant's dashboard. Like tenants and api_keys, read across
-- tenants by design (a login looks up the principal's tenants), so no row-level security.
CREATE TABLE tenant_members (
    tenant_id text NOT NULL REFERENCES tenants(id),
    principal text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, principal)
);
CREATE INDEX tenant_members_principal ON tenant_members (principal, tenant_id);
