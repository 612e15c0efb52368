-- Bookkeeping of the run path in one round trip per transaction (issue 10).
-- budget_leases: a reservation held by one model call of one run until its charge or release commits, or it
-- expires and the timer's sweep releases it. budget_counters.reserved_* is always the sum of the leases held,
-- and budget_counters.used_* the sum of the ledger: both move only in the functions below.
CREATE TABLE budget_leases (
    tenant_id text NOT NULL,
    lease_id text NOT NULL,
    run_id text NOT NULL,
    period text NOT NULL,
    tokens bigint NOT NULL,
    cost numeric(24, 10) NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, lease_id)
);
CREATE INDEX budget_leases_run ON budget_leases (tenant_id, run_id);
CREATE INDEX budget_leases_expiry ON budget_leases (tenant_id, expires_at);
ALTER TABLE budget_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_leases FORCE ROW LEVEL SECURITY;
CREATE POLICY budget_leases_tenant ON budget_leases
    USING (tenant_id = current_setting('tenantflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tenantflow.tenant_id', true));

-- New usage records (JSON array of usage_records rows): each is inserted unless its key exists, and only the new
-- ones update the daily read model, the distinct-run index and the tenant's `used` budget counters.
CREATE FUNCTION tf_insert_usage(p_records jsonb) RETURNS bigint LANGUAGE sql AS $$
WITH batch AS (
    SELECT DISTINCT ON (tenant_id, run_id, step_id, iteration, attempt) *
    FROM jsonb_populate_recordset(NULL::usage_records, p_records)
), new AS (
    INSERT INTO usage_records SELECT * FROM batch ON CONFLICT DO NOTHING
    RETURNING tenant_id, day, model, flow_id, run_id, prompt_tokens, completion_tokens, total_tokens, cost, recorded_at
), daily AS (
    INSERT INTO usage_daily
    SELECT tenant_id, day, model, flow_id, sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(cost),
           count(cost), count(*)
    FROM new GROUP BY tenant_id, day, model, flow_id
    ON CONFLICT (tenant_id, day, model, flow_id) DO UPDATE SET
        prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens,
        total_tokens = usage_daily.total_tokens + EXCLUDED.total_tokens,
        cost = CASE WHEN EXCLUDED.cost IS NULL THEN usage_daily.cost
                    ELSE coalesce(usage_daily.cost, 0) + EXCLUDED.cost END,
        priced_records = usage_daily.priced_records + EXCLUDED.priced_records,
        records = usage_daily.records + EXCLUDED.records
), run_days AS (
    INSERT INTO usage_run_days SELECT DISTINCT tenant_id, day, model, flow_id, run_id FROM new
    ON CONFLICT DO NOTHING
), used AS (
    INSERT INTO budget_counters AS c (tenant_id, period, used_tokens, used_cost)
    SELECT tenant_id, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM'), sum(total_tokens), coalesce(sum(cost), 0)
    FROM new GROUP BY 1, 2
    ON CONFLICT (tenant_id, period) DO UPDATE SET used_tokens = c.used_tokens + EXCLUDED.used_tokens,
                                                  used_cost = c.used_cost + EXCLUDED.used_cost
)
SELECT count(*) FROM new
$$;

-- One BookBatch (see shared/storage/models.py) of one tenant, atomically: create the run (a run id that exists
-- stops the batch), charge the records, release leases, reserve a lease under the limits, save the finished run
-- and release every lease it still holds. Sets the tenant scope itself, so a call is one statement: one trip.
CREATE FUNCTION tf_book(p_tenant text, p_batch jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_run jsonb := p_batch->'create_run';
    v_finish jsonb := p_batch->'finish_run';
    v_lease jsonb := p_batch->'reserve';
    v_released text[] := ARRAY(SELECT jsonb_array_elements_text(coalesce(p_batch->'released', '[]'::jsonb)));
    v_created boolean;
    v_reserved boolean;
    v_counters budget_counters;
    v_rows bigint;
    v_inserted bigint := 0;
BEGIN
    PERFORM set_config('tenantflow.tenant_id', p_tenant, true);
    IF v_run IS NOT NULL THEN
        INSERT INTO runs (run_id, tenant_id, flow_id, status, idempotency_key, created_at, document)
        VALUES (v_run->>'run_id', p_tenant, v_run->>'flow_id', v_run->>'status', v_run->>'idempotency_key',
                (v_run->>'created_at')::timestamptz, v_run->'document')
        ON CONFLICT (run_id) DO NOTHING;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_created := v_rows = 1;
        IF NOT v_created THEN
            RETURN jsonb_build_object('created', false);
        END IF;
    END IF;
    IF jsonb_array_length(coalesce(p_batch->'records', '[]'::jsonb)) > 0 THEN
        v_inserted := tf_insert_usage(p_batch->'records');
    END IF;
    WITH gone AS (
        DELETE FROM budget_leases
        WHERE tenant_id = p_tenant AND (lease_id = ANY(v_released) OR run_id = v_finish->>'run_id')
        RETURNING period, tokens, cost
    ), sums AS (SELECT period, sum(tokens) AS tokens, sum(cost) AS cost FROM gone GROUP BY period)
    UPDATE budget_counters c SET reserved_tokens = greatest(c.reserved_tokens - s.tokens, 0),
                                 reserved_cost = greatest(c.reserved_cost - s.cost, 0)
    FROM sums s WHERE c.tenant_id = p_tenant AND c.period = s.period;
    IF v_lease IS NOT NULL THEN
        INSERT INTO budget_counters (tenant_id, period) VALUES (p_tenant, v_lease->>'period') ON CONFLICT DO NOTHING;
        IF EXISTS (SELECT 1 FROM budget_leases WHERE tenant_id = p_tenant AND lease_id = v_lease->>'lease_id') THEN
            v_reserved := true;  -- a replay: held already
        ELSE
            UPDATE budget_counters SET reserved_tokens = reserved_tokens + (v_lease->>'tokens')::bigint,
                                       reserved_cost = reserved_cost + (v_lease->>'cost')::numeric
            WHERE tenant_id = p_tenant AND period = v_lease->>'period'
              AND (p_batch->'limits'->>'tokens' IS NULL OR used_tokens + reserved_tokens
                   + (v_lease->>'tokens')::bigint <= (p_batch->'limits'->>'tokens')::bigint)
              AND (p_batch->'limits'->>'cost' IS NULL OR used_cost + reserved_cost
                   + (v_lease->>'cost')::numeric <= (p_batch->'limits'->>'cost')::numeric);
            v_reserved := FOUND;
            IF v_reserved THEN
                INSERT INTO budget_leases VALUES (p_tenant, v_lease->>'lease_id', v_lease->>'run_id',
                    v_lease->>'period', (v_lease->>'tokens')::bigint, (v_lease->>'cost')::numeric,
                    (v_lease->>'expires_at')::timestamptz);
            END IF;
        END IF;
        SELECT * INTO v_counters FROM budget_counters WHERE tenant_id = p_tenant AND period = v_lease->>'period';
    END IF;
    IF v_finish IS NOT NULL THEN
        UPDATE runs SET status = v_finish->>'status', document = v_finish->'document'
        WHERE tenant_id = p_tenant AND run_id = v_finish->>'run_id';
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        IF v_rows = 0 THEN
            RAISE EXCEPTION 'run % not found', v_finish->>'run_id' USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    RETURN jsonb_build_object('created', v_created, 'reserved', v_reserved, 'inserted', v_inserted,
                              'counters', CASE WHEN v_lease IS NULL THEN NULL ELSE to_jsonb(v_counters) END);
END
$$;

-- The timer's sweep: releases expired leases, tenant by tenant (each under its own scope, so row-level security
-- holds and no cross-tenant read is needed). Returns how many were released.
CREATE FUNCTION tf_release_expired(p_now timestamptz, p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_tenant text;
    v_ids text[];
    v_count integer := 0;
BEGIN
    FOR v_tenant IN SELECT id FROM tenants ORDER BY id LOOP
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
