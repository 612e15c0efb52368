"""The `tenantflow` command line. Exit codes: 0 ok, 1 a run failed, 2 invalid input / flow / setting.

Each command imports what it needs when it runs, so `tenantflow validate` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2


class CliError(Exception):
    """A one-line error for the user; exit code 2 unless given."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


def parse_pairs(pairs: list[str] | None, flag: str = "--input") -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {pair!r}: expected key=value")
        result[key] = value
    return result


# --- commands ----------------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from shared.connections.static import load_settings_connections
    from shared.engine.errors import FlowError
    from shared.engine.parser import parse_flow_file
    from shared.engine.validator import validate_flow
    from shared.services.catalog import flow_files
    from shared.settings import Settings

    settings = Settings.from_env()
    connections = load_settings_connections(settings)
    paths = flow_files([Path(p) for p in args.paths] if args.paths else [settings.flows_dir])
    if not paths:
        raise CliError("no flow files found")
    failed = 0
    for path in paths:
        try:
            flow = validate_flow(parse_flow_file(path), connections)
        except FlowError as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{path}: ok (flow {flow.id}, {len(flow.walk())} steps)")
    if failed:
        print(f"{failed} of {len(paths)} flow files invalid", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def step_progress() -> Any:
    """An observer printing each step as it finishes (stderr), for `run` on a terminal."""
    from shared.engine.observer import RunObserver, StepOutcome

    class StepProgress(RunObserver):
        def step_finished(self, step: StepOutcome) -> None:
            tokens = f"  {step.usage.total_tokens} tokens" if step.usage else ""
            label = f"{step.id}[{step.iteration}]" if step.iteration else step.id
            print(f"  {label:<28} {step.status:<9} {step.duration_ms:>9.1f} ms{tokens}", file=sys.stderr, flush=True)

    return StepProgress()


async def cmd_run(args: argparse.Namespace) -> int:
    from shared.services.runs import run_to_json

    inputs = parse_pairs(args.input)
    if args.inputs_json:
        try:
            inputs = {**json.loads(args.inputs_json), **inputs}
        except json.JSONDecodeError as exc:
            raise CliError(f"--inputs-json: not JSON: {exc.msg}") from None
    async with services() as svc:
        flow = svc.catalog.load_reference(args.flow)  # an id or a path (the CLI alone may name a path)
        if svc.settings.store == "sqlite" and await svc.stores.tenants.get(args.tenant) is None:
            # the embedded local store only: a developer's first run needs no set-up; server stores stay strict
            await svc.tenants.add(args.tenant)
            print(f"note: tenant {args.tenant!r} was not in the local store; added it "
                  f"(`tenantflow tenants keys create {args.tenant}` for an API key)", file=sys.stderr)
        observer = step_progress() if sys.stderr.isatty() else None
        run = await svc.runs.run(args.tenant, flow, inputs, "cli", from_strings=True, run_id=args.run_id,
                                 observer=observer)
    result = run_to_json(run)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"run {run.run_id}  tenant {run.tenant_id}  flow {run.flow_id}  {run.status}")
        for step in result["steps"]:
            tokens = step["usage"]["total_tokens"] if step["usage"] else ""
            line = f"  {step['id']:<24} {step['status']:<9} {step['duration_ms']:>9.2f} ms  {tokens}"
            print(line + (f"  {step['error']}" if step["error"] else ""))
        usage = result["usage"]
        print(f"tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = "
              f"{usage['total_tokens']}; cost {usage['cost']}")
        if run.outputs is not None:
            print(json.dumps(run.outputs, indent=2, ensure_ascii=False))
        if run.error:
            print(f"error: {run.error}", file=sys.stderr)
    return EXIT_OK if run.status == "succeeded" else EXIT_RUN_FAILED


async def cmd_tenants(args: argparse.Namespace) -> int:
    async with services() as svc:
        if args.tenants_command == "add":
            created = await svc.tenants.add(args.tenant, args.name)
            print(f"tenant {created.tenant.id} added ({created.tenant.name})")
            print("API key (shown once; store it now):")
            print(created.api_key.reveal())
        elif args.tenants_command == "list":
            for tenant in await svc.tenants.list():
                print(f"{tenant.id:<24} {tenant.status:<10} {tenant.name}")
        elif args.tenants_command == "suspend":
            await svc.tenants.suspend(args.tenant)
            print(f"tenant {args.tenant} suspended")
        elif args.tenants_command == "activate":
            await svc.tenants.activate(args.tenant)
            print(f"tenant {args.tenant} active")
        elif args.tenants_command == "webhook-secret":
            secret = await (svc.tenants.rotate_webhook_secret(args.tenant) if args.rotate
                            else svc.tenants.webhook_secret(args.tenant))
            print(secret.reveal())
        elif args.tenants_command == "keys":
            if args.keys_command == "create":
                key_id, key = await svc.tenants.create_key(args.tenant)
                print(f"key {key_id} created for tenant {args.tenant} (shown once):")
                print(key.reveal())
            elif args.keys_command == "revoke":
                if not await svc.tenants.revoke_key(args.tenant, args.key_id):
                    raise CliError(f"tenant {args.tenant} has no key {args.key_id}")
                print(f"key {args.key_id} revoked")
            else:
                for key in await svc.stores.tenants.list_api_keys(args.tenant):
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                    print(f"{key.key_id}  {state}  created {key.created_at:%Y-%m-%d %H:%M}")
    return EXIT_OK


async def cmd_credentials(args: argparse.Namespace) -> int:
    from shared.secret import Secret

    async with services() as svc:
        if args.credentials_command == "set":
            api_key = None
            if args.api_key_stdin:
                text = sys.stdin.readline().strip()
                if not text:
                    raise CliError(f"tenant {args.tenant}: credential {args.name}: no API key on standard input")
                api_key = Secret(text)
            secrets = {}
            for name, value in parse_pairs(args.secret_env, "--secret-env").items():
                if value not in os.environ:
                    raise CliError(f"--secret-env {name}: environment variable {value} is not set")
                secrets[name] = Secret(os.environ[value])
            view = await svc.credentials.set(
                args.tenant, args.name, args.kind, endpoint=args.endpoint, api_version=args.api_version,
                api_key=api_key, entra=args.entra, configs=parse_pairs(args.config, "--config"), secrets=secrets,
            )
            print(f"credential {view.name} saved for tenant {args.tenant} (version {view.version})")
        elif args.credentials_command == "import":
            await import_credential(svc, args)
        elif args.credentials_command == "list":
            rows = [view.to_dict() for view in await svc.credentials.list(args.tenant)]
            if args.json:
                print(json.dumps(rows, indent=2, default=str))
            for row in [] if args.json else rows:
                print(f"{row['name']:<20} {row['kind']:<13} {row.get('endpoint') or '-':<45} auth={row['auth']} "
                      f"api_key={row.get('api_key') or '-'} v{row['version']}")
        elif args.credentials_command == "delete":
            if not await svc.credentials.delete(args.tenant, args.name):
                raise CliError(f"tenant {args.tenant}: no credential {args.name}")
            print(f"credential {args.name} deleted for tenant {args.tenant}")
        elif args.credentials_command == "rotate-key":
            report = await svc.credentials.rotate_key()
            webhooks = await svc.tenants.rotate_key()
            print(f"re-encrypted {report.rotated} credentials and {webhooks.rotated} webhook secrets under the "
                  f"current key; {report.remaining + webhooks.remaining} remaining")
            for name in report.unreadable:
                print(f"unreadable with every configured key: {name}", file=sys.stderr)
            if report.remaining + webhooks.remaining:
                return EXIT_RUN_FAILED
    return EXIT_OK


async def import_credential(svc: Any, args: argparse.Namespace) -> None:
    """`credentials import T -f CONN.yaml [--replace]`: a prompt flow connection file as a tenant credential."""
    from shared.promptflow.connections import ConnectionImportError, read_connection

    try:
        credential = read_connection(Path(args.file), os.environ, sys.stdin.readline)
    except ConnectionImportError as exc:
        raise CliError(str(exc)) from None
    existing = await svc.credentials.get(args.tenant, credential.name)
    if existing is not None and not args.replace:
        raise CliError(f"tenant {args.tenant} already has a credential {credential.name}; pass --replace to "
                       "replace it")
    view = await svc.credentials.set(
        args.tenant, credential.name, credential.kind, endpoint=credential.endpoint,
        api_version=credential.api_version, api_key=credential.api_key, entra=credential.entra,
        configs=credential.configs, secrets=credential.secrets,
    )
    verb = "replaced" if existing is not None else "imported"
    print(f"credential {view.name} ({view.kind}) {verb} for tenant {args.tenant} from {args.file} "
          f"(version {view.version})")


def cmd_import(args: argparse.Namespace) -> int:
    """`import promptflow DIR [--out FILE] [--partial]`: a prompt flow folder as a Tenantflow flow."""
    from shared.connections.static import load_settings_connections
    from shared.promptflow.flows import PromptFlowError, import_promptflow
    from shared.settings import Settings

    connections = load_settings_connections(Settings.from_env())
    try:
        result = import_promptflow(Path(args.folder), connections, partial=args.partial)
    except PromptFlowError as exc:
        for finding in exc.findings:
            print(str(finding), file=sys.stderr)
        print(f"error: {args.folder}: not imported ({len(exc.findings)} problems; --partial imports what can be "
              "converted)" if not args.partial else f"error: {args.folder}: not imported", file=sys.stderr)
        return EXIT_INVALID
    for finding in result.refused:
        print(f"not imported: {finding}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(result.text, encoding="utf-8")
        print(f"flow {result.flow_id} written to {args.out}", file=sys.stderr)
    else:
        print(result.text, end="")
    return EXIT_OK


async def cmd_usage(args: argparse.Namespace) -> int:
    from shared.services.usage import UsageQuery, to_csv

    query = UsageQuery.parse(args.tenant, args.from_day, args.to_day, args.group_by)
    async with services() as svc:
        summary = await svc.usage.summary(query)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    elif args.format == "csv":
        print(to_csv(summary), end="")
    else:
        key = summary["group_by"]
        print(f"{key:<24} {'prompt':>10} {'completion':>11} {'total':>10} {'cost':>14} {'runs':>6}")
        for row in summary["rows"] + [{key: "TOTAL", **summary["totals"]}]:
            print(f"{row[key]:<24} {row['prompt_tokens']:>10} {row['completion_tokens']:>11} {row['total_tokens']:>10} "
                  f"{row['cost'] if row['cost'] is not None else '-':>14} {row['runs']:>6}")
    return EXIT_OK


async def cmd_budgets(args: argparse.Namespace) -> int:
    async with services() as svc:
        if args.budgets_command == "set":
            await svc.runs.active_tenant(args.tenant)
            if args.monthly_tokens is None and args.monthly_cost is None:
                raise CliError("budgets set: give --monthly-tokens and/or --monthly-cost")
            await svc.usage.set_budget(args.tenant, args.monthly_tokens, args.monthly_cost)
        status = await svc.usage.budget_status(args.tenant)
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(f"tenant {status['tenant']}  period {status['period']}  resets {status['reset']}")
    print(f"  tokens: {status['used_tokens']} used + {status['reserved_tokens']} reserved of "
          f"{status['monthly_tokens'] if status['monthly_tokens'] is not None else 'no limit'}")
    print(f"  cost:   {status['used_cost']} used + {status['reserved_cost']} reserved of "
          f"{status['monthly_cost'] if status['monthly_cost'] is not None else 'no limit'}")
    return EXIT_OK


async def cmd_schedules(args: argparse.Namespace) -> int:
    async with services() as svc:
        if args.schedules_command == "add":
            schedule = await svc.schedules.add(args.tenant, args.flow, args.cron, parse_pairs(args.input))
            print(f"schedule {schedule.id} added: tenant {schedule.tenant_id} flow {schedule.flow_id} "
                  f"cron {schedule.cron!r}")
        elif args.schedules_command == "list":
            for schedule in await svc.schedules.list(args.tenant):
                state = "enabled" if schedule.enabled else "disabled"
                print(f"{schedule.id}  {schedule.tenant_id:<16} {schedule.flow_id:<20} {schedule.cron:<16} {state}  "
                      f"{json.dumps(schedule.inputs)}")
        elif not await svc.schedules.remove(args.schedule_id):
            raise CliError(f"no schedule {args.schedule_id}")
        else:
            print(f"schedule {args.schedule_id} removed")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from shared.functions.local_server import serve

    serve(host=args.host, port=args.port)
    return EXIT_OK


async def cmd_emulator(args: argparse.Namespace) -> int:
    from shared.emulator.server import serve

    models = parse_pairs(args.model, "--model")
    await asyncio.to_thread(serve, host=args.host, port=args.port, api_keys=set(args.api_key or []) or None,
                            models=models)
    return EXIT_OK


async def cmd_db(args: argparse.Namespace) -> int:
    """`db migrate`: a deploy step, never run by the app at start (the app connects as the non-owner role)."""
    from shared.settings import Settings
    from shared.storage.postgres import migrate_postgres

    settings = Settings.from_env()
    if settings.store != "postgres":
        print(f"nothing to migrate: TENANTFLOW_STORE is {settings.store} (migrations are for postgres)")
        return EXIT_OK
    try:
        applied = await migrate_postgres(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "validate": cmd_validate,
    "run": cmd_run,
    "tenants": cmd_tenants,
    "credentials": cmd_credentials,
    "usage": cmd_usage,
    "budgets": cmd_budgets,
    "schedules": cmd_schedules,
    "serve": cmd_serve,
    "emulator": cmd_emulator,
    "db": cmd_db,
    "import": cmd_import,
}


class services:
    """`async with services() as svc:` — the composition root for one CLI command."""

    async def __aenter__(self) -> Any:
        from shared.bootstrap import build_services

        self.svc = await build_services()
        return self.svc

    async def __aexit__(self, *exc: Any) -> None:
        await self.svc.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenantflow", description="Multi-tenant, metered LLM flows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate flow files (default: the flows directory)")
    p.add_argument("paths", nargs="*")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    p = sub.add_parser("run", help="run a flow for a tenant")
    p.add_argument("flow", help="a flow id or a .yaml path")
    p.add_argument("--tenant", required=True)
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="an input (repeatable)")
    p.add_argument("--inputs-json", help="all inputs as one JSON object")
    p.add_argument("--run-id", help="idempotency: a run id that was used before returns that run")
    p.add_argument("--json", action="store_true", help="print the run as one JSON object")

    p = sub.add_parser("tenants", help="manage tenants")
    tsub = p.add_subparsers(dest="tenants_command", required=True)
    t = tsub.add_parser("add")
    t.add_argument("tenant")
    t.add_argument("--name")
    tsub.add_parser("list")
    for name in ("suspend", "activate"):
        tsub.add_parser(name).add_argument("tenant")
    t = tsub.add_parser("webhook-secret", help="print the tenant's webhook signing secret")
    t.add_argument("tenant")
    t.add_argument("--rotate", action="store_true", help="replace it with a new one first")
    t = tsub.add_parser("keys", help="API keys")
    ksub = t.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser("create").add_argument("tenant")
    ksub.add_parser("list").add_argument("tenant")
    k = ksub.add_parser("revoke")
    k.add_argument("tenant")
    k.add_argument("key_id")

    p = sub.add_parser("credentials", help="manage tenant credentials")
    csub = p.add_subparsers(dest="credentials_command", required=True)
    c = csub.add_parser("set")
    c.add_argument("tenant")
    c.add_argument("name")
    c.add_argument("--kind", required=True, choices=("azure_openai", "openai", "custom"))
    c.add_argument("--endpoint")
    c.add_argument("--api-version")
    group = c.add_mutually_exclusive_group()
    group.add_argument("--api-key-stdin", action="store_true", help="read the API key from standard input")
    group.add_argument("--entra", action="store_true", help="keyless: Microsoft Entra ID (managed identity)")
    c.add_argument("--config", action="append", metavar="KEY=VALUE", help="custom: a non-secret setting")
    c.add_argument("--secret-env", action="append", metavar="KEY=ENVVAR",
                   help="custom: a secret read from an environment variable (never from argv)")
    c = csub.add_parser("import", help="import a prompt flow connection YAML (azure_open_ai, open_ai, custom); "
                        "placeholder secrets are read from stdin, one line each, ${env:NAME} from the environment")
    c.add_argument("tenant")
    c.add_argument("-f", "--file", required=True, metavar="CONN.yaml")
    c.add_argument("--replace", action="store_true", help="replace an existing credential of that name")
    c = csub.add_parser("list")
    c.add_argument("tenant")
    c.add_argument("--json", action="store_true")
    csub.add_parser("rotate-key", help="re-encrypt every credential under the current encryption key")
    c = csub.add_parser("delete")
    c.add_argument("tenant")
    c.add_argument("name")

    p = sub.add_parser("import", help="import flows from other tools")
    isub = p.add_subparsers(dest="import_command", required=True)
    i = isub.add_parser("promptflow", help="convert a prompt flow folder (flow.dag.yaml) into a Tenantflow flow")
    i.add_argument("folder", metavar="DIR")
    i.add_argument("--out", metavar="FILE", help="write the flow here (default: standard output)")
    i.add_argument("--partial", action="store_true", help="write what converts; list the rest (default: fail)")

    p = sub.add_parser("usage", help="token usage and cost from the ledger")
    p.add_argument("--tenant", help="one tenant (default: all)")
    p.add_argument("--from", dest="from_day", metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="to_day", metavar="YYYY-MM-DD")
    p.add_argument("--group-by", default="day", choices=("day", "model", "flow", "tenant"))
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))

    p = sub.add_parser("budgets", help="per-tenant monthly budgets")
    bsub = p.add_subparsers(dest="budgets_command", required=True)
    b = bsub.add_parser("set")
    b.add_argument("tenant")
    b.add_argument("--monthly-tokens", type=int)
    b.add_argument("--monthly-cost", help="decimal, e.g. 25.00")
    b = bsub.add_parser("show")
    b.add_argument("tenant")
    b.add_argument("--json", action="store_true")

    p = sub.add_parser("schedules", help="per-tenant schedules (run by the `schedules` timer)")
    ssub = p.add_subparsers(dest="schedules_command", required=True)
    s = ssub.add_parser("add")
    s.add_argument("tenant")
    s.add_argument("flow")
    s.add_argument("--cron", required=True, help='5 fields, e.g. "*/5 * * * *" (UTC)')
    s.add_argument("--input", action="append", metavar="KEY=VALUE")
    ssub.add_parser("list").add_argument("tenant", nargs="?")
    ssub.add_parser("remove").add_argument("schedule_id")

    p = sub.add_parser("serve", help="serve the HTTP functions locally (for curl and the dashboard)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7071)

    p = sub.add_parser("emulator", help="run the offline Azure OpenAI-compatible emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", action="append", help="accepted key (repeatable); none: any key")
    p.add_argument("--model", action="append", metavar="DEPLOYMENT=MODEL",
                   help="the model a deployment reports in `model` (repeatable)")

    p = sub.add_parser("db", help="database schema (PostgreSQL)")
    dsub = p.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("migrate", help="apply pending migrations as TENANTFLOW_POSTGRES_MIGRATION_DSN's role and grant "
                                    "TENANTFLOW_POSTGRES_DSN's role (a deploy step; idempotent)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    handler = COMMANDS[args.command]
    try:
        result = handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every known error is a one-line message, never a traceback
        message, code = describe_error(exc)
        print(f"error: {message}", file=sys.stderr)
        if os.environ.get("TENANTFLOW_DEBUG"):
            raise
        return code


def describe_error(exc: Exception) -> tuple[str, int]:
    from shared.engine.errors import FlowError, InputError
    from shared.services.catalog import FlowNotFound
    from shared.services.runs import RunRefused
    from shared.settings import SettingsError
    from shared.storage.ports import StoreUnavailable

    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, StoreUnavailable):  # the cause in one line: read-only, disk full, corrupt, refused host:port
        return f"store unavailable: {exc}", EXIT_RUN_FAILED
    if isinstance(exc, InputError):
        return "invalid input: " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items()), EXIT_INVALID
    if isinstance(exc, (FlowError, FlowNotFound, RunRefused, SettingsError)):
        return str(exc), EXIT_INVALID
    known = {"CredentialError", "TenantError", "ConnectionFileError", "PriceFileError", "StorageError",
             "AlreadyExists", "NotFound", "StepFailure", "DecryptionError", "ScheduleError", "UsageQueryError",
             "RunNotCompleted", "SchemaNotReady"}
    if any(cls.__name__ in known for cls in type(exc).__mro__):
        return str(exc), EXIT_INVALID
    logging.getLogger("tenantflow").debug("unexpected error", exc_info=True)
    return f"internal error ({type(exc).__name__}); run with TENANTFLOW_DEBUG=1 for details", EXIT_RUN_FAILED


if __name__ == "__main__":
    sys.exit(main())
