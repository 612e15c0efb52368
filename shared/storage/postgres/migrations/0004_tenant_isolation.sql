-- Tenant isolation, version 4: row-level security on every table that holds tenant data, and no self-granted
-- operator scope.
-- Every policy below admits exactly the rows of the tenant named by the transaction-local setting
-- `tenantflow.tenant_id` (set_config(..., true)). The `tenantflow.scope = 'operator'` escape of 0001/0002 is gone:
-- any role could set it. The few reads that legitimately span tenants go through the SECURITY DEFINER functions
-- at the end — owned by the owner role, fixed queries, no dynamic SQL, pinned search_path, read-only, EXECUTE for
-- the app role only (`tenantflow db migrate` grants it).
-- The owner (who runs migrations and owns those functions) may read every row (`<table>_owner_read`, FOR SELECT
-- TO the migrating role); its writes are bound by the tenant policies like anyone's (FORCE ROW LEVEL SECURITY).

DROP POLICY IF EXISTS credentials_tenant ON credentials;
DROP POLICY IF EXISTS runs_tenant ON runs;

CREATE POLICY tenants_tenant ON tenants
    USING (id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY api_keys_tenant ON api_keys
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY credentials_tenant ON credentials
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY runs_tenant ON runs
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY usage_records_tenant ON usage_records
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY usage_daily_tenant ON usage_daily
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY usage_run_days_tenant ON usage_run_days
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY budgets_tenant ON budgets
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY budget_counters_tenant ON budget_counters
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY schedules_tenant ON schedules
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));
CREATE POLICY replay_guard_tenant ON replay_guard
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_run_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_run_days FORCE ROW LEVEL SECURITY;
ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE budgets FORCE ROW LEVEL SECURITY;
ALTER TABLE budget_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_counters FORCE ROW LEVEL SECURITY;
ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
ALTER TABLE replay_guard ENABLE ROW LEVEL SECURITY;
ALTER TABLE replay_guard FORCE ROW LEVEL SECURITY;

-- The owner reads everything (the functions below run as the owner); it is never the app's login.
CREATE POLICY tenants_owner_read ON tenants FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY api_keys_owner_read ON api_keys FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY credentials_owner_read ON credentials FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY runs_owner_read ON runs FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY usage_daily_owner_read ON usage_daily FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY usage_run_days_owner_read ON usage_run_days FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY schedules_owner_read ON schedules FOR SELECT TO CURRENT_USER USING (true);

-- Cross-tenant reads the app needs, and nothing more. Each returns fixed columns of a fixed query.
-- An API key is presented before its tenant is known: one key by its id.
CREATE FUNCTION tenantflow_api_key(p_key_id text) RETURNS SETOF public.api_keys
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.api_keys WHERE key_id = p_key_id $$;
-- Operator listing and encryption-key rotation (webhook secrets are encrypted, bound to their tenant).
CREATE FUNCTION tenantflow_tenants() RETURNS SETOF public.tenants
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.tenants ORDER BY id $$;
-- Encryption-key rotation: which credentials to re-encrypt (names only; each is then read in its tenant's scope).
CREATE FUNCTION tenantflow_credentials_not_under_key(p_key_id text, p_limit integer)
    RETURNS TABLE (tenant_id text, name text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.tenant_id, c.name FROM public.credentials c
          WHERE c.secret_blob IS NOT NULL AND c.key_id IS DISTINCT FROM p_key_id
          ORDER BY c.tenant_id, c.name LIMIT least(greatest(p_limit, 0), 1000) $$;
-- The timer's sweep of runs whose worker stopped (ids only; each run is then read in its tenant's scope).
CREATE FUNCTION tenantflow_stale_runs(p_started_before text, p_limit integer)
    RETURNS TABLE (tenant_id text, run_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT r.tenant_id, r.run_id FROM public.runs r
          WHERE r.status = 'running'
            AND coalesce(r.document->>'started_at', r.document->>'created_at') < p_started_before
          ORDER BY r.created_at LIMIT least(greatest(p_limit, 0), 1000) $$;
-- The timer fans out every tenant's schedules; the operator finds one by id.
CREATE FUNCTION tenantflow_schedules() RETURNS SETOF public.schedules
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.schedules ORDER BY tenant_id, id $$;
CREATE FUNCTION tenantflow_schedule(p_id text) RETURNS SETOF public.schedules
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.schedules WHERE id = p_id $$;
-- Operator usage across tenants: the daily read model, filtered by day.
CREATE FUNCTION tenantflow_usage_daily(p_start date, p_end date) RETURNS SETOF public.usage_daily
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.usage_daily
          WHERE (p_start IS NULL OR day >= p_start) AND (p_end IS NULL OR day <= p_end) $$;
CREATE FUNCTION tenantflow_usage_run_days(p_start date, p_end date) RETURNS SETOF public.usage_run_days
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM public.usage_run_days
          WHERE (p_start IS NULL OR day >= p_start) AND (p_end IS NULL OR day <= p_end) $$;

-- 0003's lease sweep walks every tenant: under row-level security on `tenants` it reads the list through
-- tenantflow_tenants() (it still works on each tenant's leases under that tenant's own scope).
CREATE OR REPLACE FUNCTION tf_release_expired(p_now timestamptz, p_limit integer) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_tenant text;
    v_ids text[];
    v_count integer := 0;
BEGIN
    FOR v_tenant IN SELECT id FROM tenantflow_tenants() LOOP
        EXIT WHEN v_count >= p_limit;
        PERFORM set_config('tenantflow.tenant_id', v_tenant, true);
        v_ids := ARRAY(SELECT lease_id FROM budget_leases WHERE tenant_id = v_tenant AND expires_at < p_now
                       ORDER BY expires_at LIMIT p_limit - v_count);
        IF cardinality(v_ids) > 0 THEN
            PERFORM tf_book(v_tenant, jsonb_build_object('released', to_jsonb(v_ids)));
            v_count := v_count + cardinality(v_ids);
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

REVOKE ALL ON FUNCTION tenantflow_api_key(text), tenantflow_tenants(),
    tenantflow_credentials_not_under_key(text, integer), tenantflow_stale_runs(text, integer),
    tenantflow_schedules(), tenantflow_schedule(text), tenantflow_usage_daily(date, date),
    tenantflow_usage_run_days(date, date) FROM PUBLIC;
