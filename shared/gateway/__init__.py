"""The OpenAI-compatible gateway: a tenant's own applications call its models through Tenantflow, by alias, with
the tenant's credentials, metering and budget applied."""
