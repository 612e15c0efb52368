-- Gateway model aliases: a tenant's model name → one of its own credentials and a deployment.
CREATE TABLE model_aliases (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    alias TEXT NOT NULL,
    credential TEXT NOT NULL,
    deployment TEXT NOT NULL,
    price_as TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, alias)
);
