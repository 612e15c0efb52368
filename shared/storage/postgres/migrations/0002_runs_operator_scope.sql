-- Operator work may list runs across tenants (the timer's sweep of runs whose worker stopped), in a transaction
-- that sets `tenantflow.scope` = 'operator' for itself; request paths still see only their tenant's runs.
DROP POLICY runs_tenant ON runs;
CREATE POLICY runs_tenant ON runs
    USING (tenant_id = current_setting('tenantflow.tenant_id', true)
           OR current_setting('tenantflow.scope', true) = 'operator')
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true)
                OR current_setting('tenantflow.scope', true) = 'operator');
