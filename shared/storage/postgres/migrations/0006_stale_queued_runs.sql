-- The timer's sweep of runs left `queued` (their message lost): ids only; each run is then read in its tenant's
-- scope. Read-only SECURITY DEFINER with a pinned search_path, like the functions of 0004.
CREATE FUNCTION tenantflow_stale_queued_runs(p_created_before timestamptz, p_limit integer)
    RETURNS TABLE (tenant_id text, run_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT r.tenant_id, r.run_id FROM public.runs r
          WHERE r.status = 'queued' AND r.created_at < p_created_before
          ORDER BY r.created_at LIMIT least(greatest(p_limit, 0), 1000) $$;
