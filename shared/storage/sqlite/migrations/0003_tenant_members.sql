-- Principals (App Service Authentication) who may see a tenant's dashboard.
CREATE TABLE tenant_members (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    principal TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, principal)
);
CREATE INDEX tenant_members_principal ON tenant_members (principal, tenant_id);
