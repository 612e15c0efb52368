"""Plain async handlers (no azure.functions): run a flow, record usage, budgets, schedules, tenants."""
