-- Principals (App Service Authentication) who may see a tenant's dashboard. Row-level security as every tenant
-- table; a login looks up a principal's tenants across tenants through tenantflow_member_tenants (read-only
-- SECURITY DEFINER with a pinned search_path, like the functions of 0004).
CREATE TABLE tenant_members (
    tenant_id text NOT NULL REFERENCES tenants(id),
    principal text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, principal)
);
CREATE INDEX tenant_members_principal ON tenant_members (principal, tenant_id);
ALTER TABLE tenant_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_members_tenant ON tenant_members
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY tenant_members_owner_read ON tenant_members FOR SELECT TO CURRENT_USER USING (true);
CREATE FUNCTION tenantflow_member_tenants(p_principal text) RETURNS TABLE (tenant_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT m.tenant_id FROM public.tenant_members m WHERE m.principal = p_principal
          ORDER BY m.tenant_id LIMIT 1000 $$;
