"""The `tenantflow` command line. Exit codes: 0 ok, 1 a run failed, 2 invalid input / flow / setting.

Each command imports what it needs when it runs, so `tenantflow validate` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.engine.model import Flow
    from shared.services.operator import CredentialInput, Operator
    from shared.settings import Settings

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


def print_json(value: Any) -> None:
    """Machine-readable output: one JSON document, ending with a newline (dates as ISO strings)."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=json_default))


def json_default(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class Progress:
    """`label: N done` on stderr, rewritten in place — only when stderr is a terminal (never in logs or pipes)."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.active = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.count = done
        if self.active:
            self.stream.write(f"\r{self.label}: {done}" + (f"/{total}" if total is not None else "") + " done")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active and self.count:
            self.stream.write("\n")
            self.stream.flush()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tenantflow")
    except PackageNotFoundError:  # running from a checkout that was never `pip install -e .`-ed
        return "unknown"


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
            steps = len(flow.walk())
            print(f"{path}: ok (flow {flow.id}, {steps} step{'s' if steps != 1 else ''})")
        warning = deadline_warning(flow, settings)
        if warning:
            print(f"{path}: warning: {warning}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(paths)} flow files invalid", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def deadline_warning(flow: Flow, settings: Settings) -> str | None:
    """Why a run of `flow` may not finish before the run deadline of a queue, timer or CLI run, or None."""
    from shared.engine.worst_case import MAX_RETRY_WAIT, ModelCallLimits, flow_worst_case

    limits = ModelCallLimits(settings.model_timeout_seconds, settings.model_max_attempts, MAX_RETRY_WAIT)
    worst = flow_worst_case(flow, limits)
    if worst.seconds <= settings.run_deadline_seconds:
        return None
    total = "is unbounded" if math.isinf(worst.seconds) else f"of {worst.seconds:g} s"
    share = "a loop bound known only at run time" if math.isinf(worst.step_seconds) else f"{worst.step_seconds:g} s"
    return (f"flow {flow.id}: worst case {total} exceeds the run deadline of {settings.run_deadline_seconds:g} s "
            f"(TENANTFLOW_RUN_DEADLINE_SECONDS); step {worst.step_id} dominates with {share} (one model call: up to "
            f"{limits.worst_case_seconds():g} s). A run that long ends failed (deadline_exceeded): fewer loop rounds "
            "(max_iterations, concurrency) or a shorter model timeout keep it inside")


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
    async with services(args) as svc:
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
    if args.tenants_command in ("webhook-secret", "members"):
        return await tenants_local(args)
    async with operator_for(args) as operator:
        if args.tenants_command == "add":
            added = await operator.add_tenant(args.tenant, args.name)
            print(f"tenant {added.tenant['id']} added ({added.tenant['name']})")
            print("API key (shown once; store it now):")
            print(added.key.key.reveal())
        elif args.tenants_command == "list":
            tenants = await operator.list_tenants()
            if args.json:
                print_json(tenants)
            for tenant in [] if args.json else tenants:
                print(f"{tenant['id']:<24} {tenant['status']:<10} {tenant['name']}")
        elif args.tenants_command == "suspend":
            await operator.suspend_tenant(args.tenant)
            print(f"tenant {args.tenant} suspended")
        elif args.tenants_command == "activate":
            await operator.activate_tenant(args.tenant)
            print(f"tenant {args.tenant} active")
        elif args.keys_command == "create":
            issued = await operator.create_key(args.tenant)
            print(f"key {issued.key_id} created for tenant {args.tenant} (shown once):")
            print(issued.key.reveal())
        elif args.keys_command == "revoke":
            await operator.revoke_key(args.tenant, args.key_id)
            print(f"key {args.key_id} revoked")
        else:
            keys = await operator.list_keys(args.tenant)
            if args.json:
                print_json(keys)
            for key in [] if args.json else keys:
                revoked = key["revoked_at"] and datetime.fromisoformat(key["revoked_at"])
                state = f"revoked {revoked:%Y-%m-%d}" if revoked else "active"
                print(f"{key['key_id']}  {state}  created {datetime.fromisoformat(key['created_at']):%Y-%m-%d %H:%M}")
    return EXIT_OK


async def tenants_local(args: argparse.Namespace) -> int:
    """`tenants webhook-secret` and `tenants members`: on the local store only (the operator API has no route)."""
    async with services(args) as svc:
        if args.tenants_command == "webhook-secret":
            secret = await (svc.tenants.rotate_webhook_secret(args.tenant) if args.rotate
                            else svc.tenants.webhook_secret(args.tenant))
            print(secret.reveal())
        else:
            await tenant_members(svc, args)
    return EXIT_OK


async def tenant_members(svc: Any, args: argparse.Namespace) -> None:
    from shared.services.members import TenantMembers

    members = TenantMembers(svc.stores.tenants, svc.stores.members)
    if args.members_command == "add":
        added = await members.add(args.tenant, args.principal)
        print(f"{args.principal} {'added to' if added else 'was already a member of'} tenant {args.tenant}")
    elif args.members_command == "remove":
        if not await members.remove(args.tenant, args.principal):
            raise CliError(f"tenant {args.tenant} has no member {args.principal}")
        print(f"{args.principal} removed from tenant {args.tenant}")
    else:
        principals = await members.list(args.tenant)
        if args.json:
            print_json(principals)
        for principal in [] if args.json else principals:
            print(principal)


async def cmd_credentials(args: argparse.Namespace) -> int:
    if args.credentials_command in ("test", "rotate-key"):
        return await credentials_local(args)
    async with operator_for(args) as operator:
        if args.credentials_command == "set":
            view = await operator.set_credential(args.tenant, args.name, credential_input(args))
            print(f"credential {view['name']} saved for tenant {args.tenant} (version {view['version']})")
        elif args.credentials_command == "import":
            await import_credential(operator, args)
        elif args.credentials_command == "list":
            rows = await operator.list_credentials(args.tenant)
            if args.json:
                print_json(rows)
            for row in [] if args.json else rows:
                print(f"{row['name']:<20} {row['kind']:<13} {row.get('endpoint') or '-':<45} auth={row['auth']} "
                      f"api_key={row.get('api_key') or '-'} v{row['version']}")
        else:
            await operator.delete_credential(args.tenant, args.name)
            print(f"credential {args.name} deleted for tenant {args.tenant}")
    return EXIT_OK


def credential_input(args: argparse.Namespace) -> CredentialInput:
    """`credentials set`'s flags as the operator's CredentialInput (secrets from stdin and the environment only)."""
    from shared.secret import Secret
    from shared.services.operator import CredentialInput

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
    return CredentialInput(kind=args.kind, endpoint=args.endpoint, api_version=args.api_version,
                           auth="entra" if args.entra else "key", api_key=api_key,
                           config=parse_pairs(args.config, "--config"), secrets=secrets)


async def credentials_local(args: argparse.Namespace) -> int:
    """`credentials test` and `credentials rotate-key`: they need this machine's keys and network, not the API's."""
    async with services(args) as svc:
        if args.credentials_command == "test":
            return await test_credential(svc, args)
        with Progress("re-encrypting credentials") as progress:
            report = await svc.credentials.rotate_key(progress=progress.update)
        with Progress("checking webhook secrets") as progress:
            webhooks = await svc.tenants.rotate_key(progress=progress.update)
        print(f"re-encrypted {report.rotated} credentials and {webhooks.rotated} webhook secrets under the "
              f"current key; {report.remaining + webhooks.remaining} remaining")
        for name in report.unreadable:
            print(f"unreadable with every configured key: {name}", file=sys.stderr)
        if report.remaining + webhooks.remaining:
            return EXIT_RUN_FAILED
    return EXIT_OK


async def import_credential(operator: Operator, args: argparse.Namespace) -> None:
    """`credentials import T -f CONN.yaml [--replace]`: a prompt flow connection file as a tenant credential."""
    from shared.promptflow.connections import ConnectionImportError, read_connection
    from shared.services.operator import CredentialInput, OperationRefused

    try:
        credential = read_connection(Path(args.file), os.environ, sys.stdin.readline)
    except ConnectionImportError as exc:
        raise CliError(str(exc)) from None
    try:
        await operator.get_credential(args.tenant, credential.name)
        exists = True
    except OperationRefused as exc:
        if exc.field != "name":  # the tenant itself is unknown
            raise
        exists = False
    if exists and not args.replace:
        raise CliError(f"tenant {args.tenant} already has a credential {credential.name}; pass --replace to "
                       "replace it")
    view = await operator.set_credential(args.tenant, credential.name, CredentialInput(
        kind=credential.kind, endpoint=credential.endpoint, api_version=credential.api_version,
        auth="entra" if credential.entra else "key", api_key=credential.api_key, config=dict(credential.configs),
        secrets=dict(credential.secrets)))
    verb = "replaced" if exists else "imported"
    print(f"credential {view['name']} ({view['kind']}) {verb} for tenant {args.tenant} from {args.file} "
          f"(version {view['version']})")


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
        count = len(exc.findings)
        print(f"error: {args.folder}: not imported ({count} problem{'s' if count != 1 else ''}; --partial imports "
              "what can be converted)" if not args.partial else f"error: {args.folder}: not imported", file=sys.stderr)
        return EXIT_INVALID
    for finding in result.refused:
        print(f"not imported: {finding}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(result.text, encoding="utf-8")
        print(f"flow {result.flow_id} written to {args.out}", file=sys.stderr)
    else:
        print(result.text, end="")
    return EXIT_OK


async def test_credential(svc: Any, args: argparse.Namespace) -> int:
    """`credentials test T NAME`: a 1-token call through the real model port, one attempt, bounded by --timeout."""
    from shared.connections.openai_model import OpenAIModelPort
    from shared.services.credential_check import check_credential
    from shared.telemetry import TracedModelPort, telemetry_configured

    importlib.import_module("openai")  # loaded before the clock starts: the latency is the call's, not the import's
    port = OpenAIModelPort(svc.endpoints, max_attempts=1, timeout=args.timeout)
    traced = TracedModelPort(port) if telemetry_configured() else port
    try:
        check = await check_credential(svc.credentials, traced, args.tenant, args.name, args.model)
    finally:
        await port.close()
    if args.json:
        print_json(check.to_dict())
    else:
        def yes_no(value: bool | None) -> str:
            return "not tried" if value is None else ("yes" if value else "no")

        latency = f"{check.latency_ms} ms" if check.latency_ms is not None else "-"
        print(f"credential {check.credential} of tenant {check.tenant} at {check.endpoint_host or '-'} "
              f"(deployment {check.model}): {'ok' if check.ok else 'FAILED'}")
        print(f"  reachable: {yes_no(check.reachable)}  authenticated: {yes_no(check.authenticated)}  "
              f"latency: {latency}")
        print(f"  {'reason: ' + (check.code or '') + ': ' if not check.ok else ''}{check.reason}",
              file=sys.stdout if check.ok else sys.stderr)
    return EXIT_OK if check.ok else EXIT_RUN_FAILED


async def cmd_usage(args: argparse.Namespace) -> int:
    from shared.services.usage import to_csv

    async with operator_for(args) as operator:
        summary = await operator.usage(args.tenant, args.from_day, args.to_day, args.group_by)
    if args.format == "json" or args.json:
        print_json(summary)
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
    async with operator_for(args) as operator:
        if args.budgets_command == "set":
            status = await operator.set_budget(args.tenant, args.monthly_tokens, args.monthly_cost)
        else:
            status = await operator.budget(args.tenant)
    if getattr(args, "json", False):
        print_json(status)
        return EXIT_OK
    print(f"tenant {status['tenant']}  period {status['period']}  resets {status['reset']}")
    print(f"  tokens: {status['used_tokens']} used + {status['reserved_tokens']} reserved of "
          f"{status['monthly_tokens'] if status['monthly_tokens'] is not None else 'no limit'}")
    print(f"  cost:   {status['used_cost']} used + {status['reserved_cost']} reserved of "
          f"{status['monthly_cost'] if status['monthly_cost'] is not None else 'no limit'}")
    return EXIT_OK


async def cmd_schedules(args: argparse.Namespace) -> int:
    async with operator_for(args) as operator:
        if args.schedules_command == "add":
            schedule = await operator.add_schedule(args.tenant, args.flow, args.cron, parse_pairs(args.input))
            print(f"schedule {schedule['id']} added: tenant {schedule['tenant']} flow {schedule['flow']} "
                  f"cron {schedule['cron']!r}")
        elif args.schedules_command == "list":
            schedules = await operator.list_schedules(args.tenant)
            if args.json:
                print_json(schedules)
            for item in [] if args.json else schedules:
                state = "enabled" if item["enabled"] else "disabled"
                print(f"{item['id']}  {item['tenant']:<16} {item['flow']:<20} {item['cron']:<16} {state}  "
                      f"{json.dumps(item['inputs'])}")
        else:
            await operator.remove_schedule(args.schedule_id)
            print(f"schedule {args.schedule_id} removed")
    return EXIT_OK


async def cmd_dashboard_link(args: argparse.Namespace) -> int:
    """A signed, expiring, read-only dashboard link for one tenant (or, with --operator, all of them)."""
    from datetime import UTC, datetime

    from shared.services.dashboard_access import dashboard_url, parse_ttl, sign_dashboard_token

    if not args.operator and not args.tenant:
        raise CliError("dashboard-link: name a tenant, or give --operator for an all-tenants link")
    try:
        expires_at = datetime.now(UTC) + parse_ttl(args.ttl)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    async with services(args) as svc:
        key = svc.settings.encryption_keys[0].key
    token = sign_dashboard_token(key, args.tenant, args.operator, expires_at)
    try:
        url = dashboard_url(args.base_url, token)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json({"url": url, "tenant": None if args.operator else args.tenant, "operator": args.operator,
                    "expires_at": expires_at.replace(microsecond=0)})
    else:
        scope = "all tenants (operator)" if args.operator else f"tenant {args.tenant}"
        print(f"read-only dashboard of {scope}, valid until {expires_at:%Y-%m-%d %H:%M} UTC:", file=sys.stderr)
        print(url)
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
    if settings.store == "table":
        return await migrate_table(settings)
    if settings.store != "postgres":
        print(f"nothing to migrate: TENANTFLOW_STORE is {settings.store} (its schema is kept up to date at start)")
        return EXIT_OK
    try:
        applied = await migrate_postgres(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return EXIT_OK


async def migrate_table(settings: Settings) -> int:
    """Azure Table storage has no schema; `db migrate` carries wave 1's budget counters into the usage partitions."""
    from shared.connections.azure_credential import AppAzureCredential
    from shared.storage.table.client import TableClients
    from shared.storage.table.upgrade import carry_over_counters

    assert settings.table_connection is not None  # Settings.from_env guarantees it for this store
    credential = AppAzureCredential()
    tables = TableClients(settings.table_connection.reveal(), settings.table_prefix, credential)
    try:
        await tables.open()
        carried = await carry_over_counters(tables)
    finally:
        await tables.close()
        await credential.close()
    if carried is None:
        print("schema is up to date (no wave 1 counters table)")
        return EXIT_OK
    print(f"budget counters: {carried.carried} carried over from the old counters table, {carried.kept} already there")
    for drift in carried.drifts:
        print(f"  {drift} (the new counter follows the ledger)")
    return EXIT_OK


async def cmd_models(args: argparse.Namespace) -> int:
    """Gateway model aliases: `models set|list|remove`."""
    async with operator_for(args) as operator:
        if args.models_command == "set":
            alias = await operator.set_model(args.tenant, args.alias, args.credential, args.deployment, args.price_as)
            priced = f", priced as {alias['price_as']}" if alias["price_as"] else ""
            print(f"model {alias['alias']} of tenant {args.tenant}: credential {alias['credential']}, "
                  f"deployment {alias['deployment']}{priced}")
        elif args.models_command == "list":
            aliases = await operator.list_models(args.tenant)
            if args.json:
                print_json(aliases)
            for a in [] if args.json else aliases:
                print(f"{a['alias']:<24} {a['credential']:<20} {a['deployment']:<24} {a['price_as'] or '-'}")
        else:
            await operator.remove_model(args.tenant, args.alias)
            print(f"model {args.alias} of tenant {args.tenant} removed")
    return EXIT_OK


async def cmd_smoke(args: argparse.Namespace) -> int:
    """`smoke --url URL --operator-key K [--endpoint E --api-key-stdin]`: a deployment checked end to end."""
    from shared.smoke import run_smoke

    target = remote_target(args)
    if target is None:
        raise CliError("smoke needs the app's URL: --url URL (or TENANTFLOW_URL), e.g. http://127.0.0.1:7071")
    api_key = None
    if args.api_key_stdin:
        api_key = sys.stdin.readline().strip()
        if not api_key:
            raise CliError("smoke: --api-key-stdin: no API key on standard input")
    if bool(args.endpoint) != bool(api_key):
        raise CliError("smoke: give --endpoint and --api-key-stdin together (neither: the emulator at "
                       "http://127.0.0.1:8765)")
    passed = await run_smoke(*target, endpoint=args.endpoint, api_key=api_key, model=args.model)
    return EXIT_OK if passed else EXIT_RUN_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "models": cmd_models,
    "validate": cmd_validate,
    "run": cmd_run,
    "tenants": cmd_tenants,
    "credentials": cmd_credentials,
    "usage": cmd_usage,
    "budgets": cmd_budgets,
    "schedules": cmd_schedules,
    "dashboard-link": cmd_dashboard_link,
    "serve": cmd_serve,
    "emulator": cmd_emulator,
    "db": cmd_db,
    "import": cmd_import,
    "smoke": cmd_smoke,
}


def tenant_must_exist(args: argparse.Namespace | None) -> str | None:
    """The tenant a command names, when it must already exist: every command but `tenants add` and `run` (which, on
    the embedded SQLite store, adds an unknown tenant with a notice; on other stores the run service refuses it)."""
    tenant = getattr(args, "tenant", None)
    if not isinstance(tenant, str) or args is None or args.command == "run":
        return None
    if args.command == "tenants" and args.tenants_command == "add":
        return None
    return tenant


class services:
    """`async with services(args) as svc:` — the composition root for one CLI command. An unknown tenant named by
    the command is an error here, before the command does anything."""

    def __init__(self, args: argparse.Namespace | None = None) -> None:
        self.args = args

    async def __aenter__(self) -> Any:
        from shared.bootstrap import build_services

        self.svc = await build_services()
        tenant = tenant_must_exist(self.args)
        if tenant is not None and await self.svc.stores.tenants.get(tenant) is None:
            await self.svc.close()
            raise CliError(f"unknown tenant {tenant!r} (`tenantflow tenants list` shows the tenants)")
        return self.svc

    async def __aexit__(self, *exc: Any) -> None:
        await self.svc.close()


# Commands that `--url URL --operator-key K` runs against a deployed app, through its operator HTTP API. Every other
# command works on this machine only: given --url, it stops with an error saying so.
REMOTE_COMMANDS = frozenset({
    "tenants add", "tenants list", "tenants suspend", "tenants activate", "tenants keys create", "tenants keys list",
    "tenants keys revoke", "credentials set", "credentials list", "credentials delete", "credentials import",
    "budgets set", "budgets show", "schedules add", "schedules list", "schedules remove", "usage", "smoke",
    "models set", "models list", "models remove",
})


def command_path(args: argparse.Namespace) -> str:
    """`tenants keys create`, `usage`, … — the subcommand names the user typed."""
    parts = [args.command]
    for dest in (f"{args.command.replace('-', '_')}_command", "keys_command", "members_command"):
        value = getattr(args, dest, None)
        if isinstance(value, str):
            parts.append(value)
    return " ".join(parts)


def check_remote_use(args: argparse.Namespace) -> None:
    path = command_path(args)
    if getattr(args, "url", None) and path not in REMOTE_COMMANDS:
        raise CliError(f"`tenantflow {path}` works on this machine's store only; --url runs only: "
                       + ", ".join(sorted(REMOTE_COMMANDS)))


def remote_target(args: argparse.Namespace) -> tuple[str, str] | None:
    """(URL, operator key) from --url / --operator-key, else TENANTFLOW_URL / TENANTFLOW_OPERATOR_KEY; None: local."""
    from shared.operator_client import api_base

    url = getattr(args, "url", None) or os.environ.get("TENANTFLOW_URL")
    if not url:
        return None
    key = getattr(args, "operator_key", None) or os.environ.get("TENANTFLOW_OPERATOR_KEY")
    if not key:
        raise CliError("--url needs the app's operator key: --operator-key K, or TENANTFLOW_OPERATOR_KEY "
                       "(`azd env get-value TENANTFLOW_OPERATOR_KEY`)")
    try:
        api_base(url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return url, key


class operator_for:
    """`async with operator_for(args) as operator:` — the deployed app's operator API with --url (or TENANTFLOW_URL),
    else this machine's services. The command is the same code either way."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.svc: Any = None

    async def __aenter__(self) -> Operator:
        target = remote_target(self.args)
        if target is not None:
            from shared.operator_client import RemoteOperator

            self.operator: Operator = RemoteOperator(*target)
            return self.operator
        from shared.bootstrap import build_services
        from shared.services.operator import LocalOperator

        self.svc = await build_services()
        self.operator = LocalOperator(self.svc)
        return self.operator

    async def __aexit__(self, *exc: Any) -> None:
        await self.operator.close()
        if self.svc is not None:
            await self.svc.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenantflow", description="Multi-tenant, metered LLM flows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    parser.add_argument("--version", action="version", version=f"tenantflow {package_version()}")
    parser.add_argument("--url", help="run tenants, keys, credentials set|list|delete|import, budgets, schedules, "
                        "usage or smoke against a deployed app: its base URL without /api (default: TENANTFLOW_URL)")
    parser.add_argument("--operator-key", help="the app's operator key for --url (better: TENANTFLOW_OPERATOR_KEY)")
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
    tsub.add_parser("list").add_argument("--json", action="store_true", help="print a JSON list")
    for name in ("suspend", "activate"):
        tsub.add_parser(name).add_argument("tenant")
    t = tsub.add_parser("webhook-secret", help="print the tenant's webhook signing secret")
    t.add_argument("tenant")
    t.add_argument("--rotate", action="store_true", help="replace it with a new one first")
    t = tsub.add_parser("members", help="principals (App Service Authentication) who may see the dashboard")
    msub = t.add_subparsers(dest="members_command", required=True)
    for name in ("add", "remove"):
        m = msub.add_parser(name)
        m.add_argument("tenant")
        m.add_argument("principal", help="an Entra object id or a user name (UPN / email)")
    m = msub.add_parser("list")
    m.add_argument("tenant")
    m.add_argument("--json", action="store_true", help="print a JSON list")
    t = tsub.add_parser("keys", help="API keys")
    ksub = t.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser("create").add_argument("tenant")
    k = ksub.add_parser("list")
    k.add_argument("tenant")
    k.add_argument("--json", action="store_true", help="print a JSON list")
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
    c.add_argument("--json", action="store_true", help="print a JSON list (secrets as ******)")
    c = csub.add_parser("test", help="a 1-token call with the credential: reachability, auth and latency")
    c.add_argument("tenant")
    c.add_argument("name")
    c.add_argument("--model", default="gpt-4o-mini", help="the deployment / model to call (default gpt-4o-mini)")
    c.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the answer (default 15)")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object")
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
    p.add_argument("--group-by", default="day", choices=("day", "model", "flow", "tenant", "key"))
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))
    p.add_argument("--json", action="store_true", help="the same as --format json")

    p = sub.add_parser("budgets", help="per-tenant monthly budgets")
    bsub = p.add_subparsers(dest="budgets_command", required=True)
    b = bsub.add_parser("set")
    b.add_argument("tenant")
    b.add_argument("--monthly-tokens", type=int)
    b.add_argument("--monthly-cost", help="decimal, e.g. 25.00")
    b = bsub.add_parser("show")
    b.add_argument("tenant")
    b.add_argument("--json", action="store_true", help="print the budget status as one JSON object")

    p = sub.add_parser("schedules", help="per-tenant schedules (run by the `schedules` timer)")
    ssub = p.add_subparsers(dest="schedules_command", required=True)
    s = ssub.add_parser("add")
    s.add_argument("tenant")
    s.add_argument("flow")
    s.add_argument("--cron", required=True, help='5 fields, e.g. "*/5 * * * *" (UTC)')
    s.add_argument("--input", action="append", metavar="KEY=VALUE")
    s = ssub.add_parser("list")
    s.add_argument("tenant", nargs="?")
    s.add_argument("--json", action="store_true", help="print a JSON list")
    ssub.add_parser("remove").add_argument("schedule_id")

    p = sub.add_parser("dashboard-link", help="print a signed, expiring, read-only dashboard link")
    p.add_argument("tenant", nargs="?", help="the tenant (omit with --operator)")
    p.add_argument("--ttl", default="1h", help="how long the link works: 30m, 1h, 7d (default 1h, at most 31d)")
    p.add_argument("--base-url", default="http://127.0.0.1:7071",
                   help="the app's base URL without /api (default http://127.0.0.1:7071, `tenantflow serve`)")
    p.add_argument("--operator", action="store_true", help="an all-tenants (operator) link")
    p.add_argument("--json", action="store_true", help="print {url, tenant, operator, expires_at}")

    p = sub.add_parser("smoke", help="check a deployment end to end with a throwaway tenant")
    p.add_argument("--url", default=argparse.SUPPRESS, help="the app's base URL without /api")
    p.add_argument("--operator-key", default=argparse.SUPPRESS, help="the app's operator key "
                   "(better: TENANTFLOW_OPERATOR_KEY)")
    p.add_argument("--endpoint", help="the model endpoint the throwaway tenant's credential names (default: the "
                   "emulator at http://127.0.0.1:8765)")
    p.add_argument("--api-key-stdin", action="store_true", help="read that endpoint's API key from standard input")
    p.add_argument("--model", default="gpt-4o-mini", help="the deployment support-reply calls (default gpt-4o-mini)")

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
                                    "TENANTFLOW_POSTGRES_DSN's role; on Azure Table storage, carry wave 1's budget "
                                    "counters over (a deploy step; idempotent)")

    p = sub.add_parser("models", help="gateway model aliases of a tenant")
    gsub = p.add_subparsers(dest="models_command", required=True)
    g = gsub.add_parser("set")
    g.add_argument("tenant")
    g.add_argument("alias", help="the name the tenant's applications send as `model`")
    g.add_argument("--credential", required=True, metavar="NAME", help="one of the tenant's credentials")
    g.add_argument("--deployment", required=True, metavar="D", help="the deployment (or model) behind it")
    g.add_argument("--price-as", metavar="MODEL", help="price calls as this price-file model")
    g = gsub.add_parser("list")
    g.add_argument("tenant")
    g.add_argument("--json", action="store_true", help="print a JSON list")
    g = gsub.add_parser("remove")
    g.add_argument("tenant")
    g.add_argument("alias")
    return parser


# Every subcommand's help line and example, shown by `tenantflow <command> --help` (a test checks that each
# subcommand has one). Keyed by the command path.
EXAMPLES: dict[str, tuple[str, str]] = {
    "validate": ("validate flow files (default: the flows directory)", "tenantflow validate flows/support-reply.yaml"),
    "run": ("run a flow for a tenant",
            'tenantflow run support-reply --tenant contoso --input ticket="Where is my order?" --json'),
    "tenants": ("manage tenants", "tenantflow tenants add contoso --name 'Contoso Ltd'"),
    "tenants add": ("add a tenant; prints its first API key alone as the last line",
                    "KEY=$(tenantflow tenants add contoso --name 'Contoso Ltd' | tail -1)"),
    "tenants list": ("list tenants", "tenantflow tenants list --json"),
    "tenants suspend": ("suspend a tenant: its runs and API calls are refused", "tenantflow tenants suspend contoso"),
    "tenants activate": ("re-activate a suspended tenant", "tenantflow tenants activate contoso"),
    "tenants webhook-secret": ("print the tenant's webhook signing secret",
                               "SECRET=$(tenantflow tenants webhook-secret contoso)"),
    "tenants members": ("principals (App Service Authentication) who may see the tenant's dashboard",
                        "tenantflow tenants members add contoso ann@contoso.com"),
    "tenants members add": ("let a principal (Entra object id or user name) see the tenant's dashboard",
                            "tenantflow tenants members add contoso ann@contoso.com"),
    "tenants members remove": ("take a principal's access away",
                               "tenantflow tenants members remove contoso ann@contoso.com"),
    "tenants members list": ("list the tenant's members", "tenantflow tenants members list contoso --json"),
    "tenants keys": ("API keys of a tenant", "tenantflow tenants keys create contoso"),
    "tenants keys create": ("create an API key; prints it alone as the last line (shown once)",
                            "KEY=$(tenantflow tenants keys create contoso | tail -1)"),
    "tenants keys list": ("list a tenant's API keys (ids and state, never the keys)",
                          "tenantflow tenants keys list contoso --json"),
    "tenants keys revoke": ("revoke an API key by its id", "tenantflow tenants keys revoke contoso 3f9c0a1b2d4e"),
    "credentials": ("manage tenant credentials", "tenantflow credentials list contoso"),
    "credentials set": ("store (or replace) a tenant's credential, encrypted",
                        "echo \"$AZURE_OPENAI_KEY\" | tenantflow credentials set contoso foundry --kind azure_openai "
                        "--endpoint https://contoso.openai.azure.com --api-key-stdin"),
    "credentials list": ("list a tenant's credentials (secrets as ******)",
                         "tenantflow credentials list contoso --json"),
    "credentials test": ("make a 1-token call with a credential; report reachability, auth and latency",
                         "tenantflow credentials test contoso foundry --model gpt-4o-mini"),
    "credentials rotate-key": ("re-encrypt every credential and webhook secret under the current encryption key",
                               "TENANTFLOW_ENCRYPTION_KEY=k2:NEW,k1:OLD tenantflow credentials rotate-key"),
    "credentials delete": ("delete a tenant's credential", "tenantflow credentials delete contoso foundry"),
    "usage": ("token usage and cost from the ledger",
              "tenantflow usage --tenant contoso --from 2026-11-01 --group-by model --format csv"),
    "budgets": ("per-tenant monthly budgets", "tenantflow budgets set contoso --monthly-cost 25.00"),
    "budgets set": ("set a tenant's monthly token and/or cost limit",
                    "tenantflow budgets set contoso --monthly-tokens 1000000 --monthly-cost 25.00"),
    "budgets show": ("show a tenant's budget and what this month used", "tenantflow budgets show contoso --json"),
    "schedules": ("per-tenant schedules (run by the `schedules` timer)",
                  "tenantflow schedules add contoso support-reply --cron @daily --input ticket=nightly"),
    "schedules add": ("add a schedule: 5-field cron (UTC) or @hourly, @daily, @weekly, @monthly, @yearly",
                      'tenantflow schedules add contoso support-reply --cron "*/15 9-17 * * mon-fri" --input ticket=x'),
    "schedules list": ("list schedules, of one tenant or all", "tenantflow schedules list contoso --json"),
    "schedules remove": ("remove a schedule by its id", "tenantflow schedules remove 5d41402abc4b"),
    "dashboard-link": ("print a signed, expiring, read-only dashboard link",
                       "tenantflow dashboard-link contoso --ttl 8h --base-url https://func-x.azurewebsites.net"),
    "serve": ("serve the HTTP functions locally (for curl and the dashboard)", "tenantflow serve --port 7071"),
    "emulator": ("run the offline Azure OpenAI-compatible emulator", "tenantflow emulator --port 8765 --api-key dev"),
    "credentials import": ("import a prompt flow connection YAML as a tenant credential (secrets from stdin or env)",
                           "echo \"$AZURE_OPENAI_KEY\" | tenantflow credentials import contoso -f azure_openai.yaml"),
    "import": ("import flows from other tools",
               "tenantflow import promptflow ./chat-with-history --out flows/chat.yaml"),
    "import promptflow": ("convert a prompt flow folder (flow.dag.yaml) into a Tenantflow flow",
                          "tenantflow import promptflow ./web-classification --out flows/classify.yaml --partial"),
    "models": ("gateway model aliases of a tenant (the `model` its OpenAI clients send)",
               "tenantflow models set contoso chat --credential foundry --deployment prod-chat"),
    "models set": ("add or replace an alias: one of the tenant's credentials and a deployment behind it",
                   "tenantflow models set contoso chat --credential foundry --deployment prod-chat "
                   "--price-as gpt-4o-mini"),
    "models list": ("list a tenant's model aliases", "tenantflow models list contoso --json"),
    "models remove": ("remove a model alias", "tenantflow models remove contoso chat"),
    "smoke": ("check a deployment end to end: throwaway tenant, credential, a support-reply run, usage, budget",
              "tenantflow smoke --url https://func-x.azurewebsites.net --endpoint https://x.openai.azure.com "
              "--api-key-stdin"),
    "db": ("database schema (PostgreSQL; budget counters on Table storage)", "tenantflow db migrate"),
    "db migrate": ("apply pending PostgreSQL migrations as the owner role and grant the app role; on Table storage, "
                   "carry wave 1's budget counters over (a deploy step)",
                   "tenantflow db migrate   # with TENANTFLOW_POSTGRES_MIGRATION_DSN (the owner) set"),
}


def subcommands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser, Any]]:
    """(command path, its parser, the subparsers action of its parent) for every subcommand, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                child_path = f"{path} {name}".strip()
                found.append((child_path, child, action))
                found += subcommands(child, child_path)
    return found


def listed_help(parent: Any, name: str) -> str | None:
    """The help line a subcommand has in its parent's --help listing (argparse lists only those given one)."""
    return next((choice.help for choice in parent._choices_actions if choice.dest == name), None)


def describe_commands(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Gives every subcommand in EXAMPLES a help line in its parent's listing, a description and an example (the
    --help epilog). Kept in one table so that the parser code above stays short."""
    for path, child, parent in subcommands(parser):
        if path not in EXAMPLES:
            continue
        summary, example = EXAMPLES[path]
        name = path.rsplit(" ", 1)[-1]
        if listed_help(parent, name) is None:
            parent._choices_actions.append(parent._ChoicesPseudoAction(name, (), summary))
            parent._choices_actions.sort(key=lambda choice: list(parent.choices).index(choice.dest))
        child.description = child.description or summary[0].upper() + summary[1:] + "."
        child.epilog = f"example:\n  {example}"
        child.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = describe_commands(build_parser())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    handler = COMMANDS[args.command]
    from shared.telemetry import configure_telemetry, shutdown_telemetry

    try:
        configure_telemetry()  # only when an exporter is set in the environment (e.g. OTEL_TRACES_EXPORTER=console)
        check_remote_use(args)
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
    finally:
        shutdown_telemetry()


def describe_error(exc: Exception) -> tuple[str, int]:
    from shared.engine.errors import FlowError, InputError
    from shared.services.catalog import FlowNotFound
    from shared.services.operator import OperationRefused
    from shared.services.runs import RunRefused
    from shared.settings import SettingsError
    from shared.storage.ports import StoreUnavailable

    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, OperationRefused):  # the same line whether the local store or the app's API refused
        return str(exc), EXIT_INVALID
    if type(exc).__name__ == "RemoteError":  # shared.operator_client (not imported here: it loads httpx)
        return str(exc), EXIT_RUN_FAILED
    if isinstance(exc, StoreUnavailable):  # the cause in one line: read-only, disk full, corrupt, refused host:port
        return f"store unavailable: {exc}", EXIT_RUN_FAILED
    if isinstance(exc, InputError):
        return "invalid input: " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items()), EXIT_INVALID
    if isinstance(exc, (FlowError, FlowNotFound, RunRefused, SettingsError)):
        return str(exc), EXIT_INVALID
    known = {"CredentialError", "TenantError", "ConnectionFileError", "PriceFileError", "StorageError",
             "AlreadyExists", "NotFound", "StepFailure", "DecryptionError", "ScheduleError", "UsageQueryError",
             "RunNotCompleted", "SchemaNotReady", "AliasError"}
    if any(cls.__name__ in known for cls in type(exc).__mro__):
        return str(exc), EXIT_INVALID
    logging.getLogger("tenantflow").debug("unexpected error", exc_info=True)
    return f"internal error ({type(exc).__name__}); run with TENANTFLOW_DEBUG=1 for details", EXIT_RUN_FAILED


if __name__ == "__main__":
    sys.exit(main())
