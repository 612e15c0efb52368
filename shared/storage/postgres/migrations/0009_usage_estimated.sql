-- Whether a usage record's tokens are an estimate: a gateway stream whose client left and whose upstream ended
-- before its usage chunk is charged an estimate (prompt bound + ~4 characters per token served). The column is
-- last, so tf_insert_usage's `INSERT INTO usage_records SELECT * FROM jsonb_populate_recordset(…)` keeps lining
-- up; it is recreated only so that a row without the key (an app instance still running the previous version
-- during a deployment) is stored as not estimated instead of failing the NOT NULL.
ALTER TABLE usage_records ADD COLUMN estimated boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION tf_insert_usage(p_records jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
    v_defaults usage_records;  -- the values of keys a row leaves out: an app that predates a column still inserts
BEGIN
    v_defaults.estimated := false;
    WITH batch AS (
        SELECT DISTINCT ON (tenant_id, run_id, step_id, iteration, attempt) *
        FROM jsonb_populate_recordset(v_defaults, p_records)
    ), new AS (
        INSERT INTO usage_records SELECT * FROM batch ON CONFLICT DO NOTHING
        RETURNING tenant_id, day, model, flow_id, coalesce(api_key_id, '') AS api_key_id, run_id, prompt_tokens,
                  completion_tokens, total_tokens, cost, recorded_at
    ), daily AS (
        INSERT INTO usage_daily (tenant_id, day, model, flow_id, api_key_id, prompt_tokens, completion_tokens,
                                 total_tokens, cost, priced_records, records)
        SELECT tenant_id, day, model, flow_id, api_key_id, sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
               sum(cost), count(cost), count(*)
        FROM new GROUP BY tenant_id, day, model, flow_id, api_key_id
        ON CONFLICT (tenant_id, day, model, flow_id, api_key_id) DO UPDATE SET
            prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens,
            total_tokens = usage_daily.total_tokens + EXCLUDED.total_tokens,
            cost = CASE WHEN EXCLUDED.cost IS NULL THEN usage_daily.cost
                        ELSE coalesce(usage_daily.cost, 0) + EXCLUDED.cost END,
            priced_records = usage_daily.priced_records + EXCLUDED.priced_records,
            records = usage_daily.records + EXCLUDED.records
    ), run_days AS (
        INSERT INTO usage_run_days (tenant_id, day, model, flow_id, api_key_id, run_id)
        SELECT DISTINCT tenant_id, day, model, flow_id, api_key_id, run_id FROM new
        ON CONFLICT DO NOTHING
    ), used AS (
        INSERT INTO budget_counters AS c (tenant_id, period, used_tokens, used_cost)
        SELECT tenant_id, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM'), sum(total_tokens), coalesce(sum(cost), 0)
        FROM new GROUP BY 1, 2
        ON CONFLICT (tenant_id, period) DO UPDATE SET used_tokens = c.used_tokens + EXCLUDED.used_tokens,
                                                      used_cost = c.used_cost + EXCLUDED.used_cost
    )
    SELECT count(*) INTO v_count FROM new;
    RETURN v_count;
END
$$;
