"""Writes local.settings.json for the services `make services-up` started, so `func start` (Core Tools) runs the
app against them: Azurite on the ports it got (AzureWebJobsStorage, the run queue, the table store) and PostgreSQL
as the store (owner and app roles, as deployed). Values the developer added are kept, and so are the encryption
and operator keys once made. Only the standard library: scripts/services.sh runs it with any python3.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # public


def azurite_connection(blob_port: int) -> str:
    """Azurite's well-known account, with blob, queue and table on three consecutive ports."""
    endpoint = "http://127.0.0.1:{}/" + AZURITE_ACCOUNT
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint.format(blob_port)};QueueEndpoint={endpoint.format(blob_port + 1)};"
            f"TableEndpoint={endpoint.format(blob_port + 2)};")


def postgres_dsn(port: int, user: str, database: str) -> str:
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def local_settings(existing: dict, example: dict, postgres_port: int, azurite_port: int,
                   database: str = "tenantflow") -> dict:
    """The example's values, then the developer's, then the services'; keys are made once and kept."""
    storage = azurite_connection(azurite_port)
    services = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage,
        "TENANTFLOW_STORE": "postgres",
        "TENANTFLOW_POSTGRES_DSN": postgres_dsn(postgres_port, "tenantflow_app", database),
        "TENANTFLOW_POSTGRES_MIGRATION_DSN": postgres_dsn(postgres_port, "tenantflow_owner", database),
        "TENANTFLOW_POSTGRES_ENTRA": "false",
        "TENANTFLOW_TABLE_CONNECTION": storage,
        "TENANTFLOW_QUEUE_CONNECTION": storage,
    }
    values = {**example.get("Values", {}), **existing.get("Values", {}), **services}
    if not values.get("TENANTFLOW_ENCRYPTION_KEY"):
        values["TENANTFLOW_ENCRYPTION_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    if not values.get("TENANTFLOW_OPERATOR_KEY"):
        values["TENANTFLOW_OPERATOR_KEY"] = secrets.token_hex(24)
    return {**existing, "IsEncrypted": False, "Values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deploy.local_settings", description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-port", type=int, required=True)
    parser.add_argument("--azurite-port", type=int, required=True, help="blob port; queue and table follow it")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "local.settings.json")
    args = parser.parse_args(argv)
    example = json.loads((REPO_ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    try:
        existing = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    except json.JSONDecodeError as exc:
        print(f"{args.out}: not JSON (line {exc.lineno}); fix or remove it", file=sys.stderr)
        return 2
    written = local_settings(existing, example, args.postgres_port, args.azurite_port)
    args.out.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out.name} for these services (func start reads it)")
    try:  # the app never migrates: apply the schema as `tenantflow db migrate` does in a deployment
        from shared.storage.postgres.database import migrate
    except ImportError:  # the project's packages are not installed yet (make setup): `tenantflow db migrate` later
        print("PostgreSQL not migrated yet: run `tenantflow db migrate` with these settings", file=sys.stderr)
        return 0
    values = written["Values"]
    asyncio.run(migrate(values["TENANTFLOW_POSTGRES_MIGRATION_DSN"], values["TENANTFLOW_POSTGRES_DSN"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
