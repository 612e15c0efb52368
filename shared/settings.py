"""Typed settings, read once from the environment (app settings on Azure).

Every setting the app reads is listed in `SETTING_NAMES`; infra/main.bicep and local.settings.example.json set
the same names (a test checks it). A required value that is missing fails fast with a message naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.secret import EncryptionKey, KeyFormatError, Secret, parse_encryption_keys

REPO_ROOT = Path(__file__).resolve().parent.parent
STORES = ("sqlite", "postgres", "table")
FUNCTION_TIMEOUT_SECONDS = 600  # host.json functionTimeout: the host stops any invocation after it (a test checks)

SETTING_NAMES = (
    "TENANTFLOW_STORE",
    "TENANTFLOW_SQLITE_PATH",
    "TENANTFLOW_DEFAULT_ENDPOINT",
    "TENANTFLOW_DEFAULT_API_KEY",
    "TENANTFLOW_POSTGRES_DSN",
    "TENANTFLOW_POSTGRES_MIGRATION_DSN",
    "TENANTFLOW_TABLE_CONNECTION",
    "TENANTFLOW_TABLE_PREFIX",
    "TENANTFLOW_QUEUE_CONNECTION",
    "TENANTFLOW_RUN_QUEUE",
    "TENANTFLOW_ENCRYPTION_KEY",
    "TENANTFLOW_ALLOWED_HOSTS",
    "TENANTFLOW_ALLOWED_HOST_SUFFIXES",
    "TENANTFLOW_ALLOWED_KEY_VAULTS",
    "TENANTFLOW_FLOWS_DIR",
    "TENANTFLOW_CONNECTIONS_FILE",
    "TENANTFLOW_PRICES_FILE",
    "TENANTFLOW_OPERATOR_KEY",
    "TENANTFLOW_CREDENTIAL_CACHE_TTL",
    "TENANTFLOW_API_KEY_CACHE_TTL",
    "TENANTFLOW_POSTGRES_POOL_SIZE",
    "TENANTFLOW_POSTGRES_ENTRA",
    "TENANTFLOW_MODEL_TIMEOUT_SECONDS",
    "TENANTFLOW_MODEL_MAX_ATTEMPTS",
    "TENANTFLOW_SYNC_LIMIT_SECONDS",
    "TENANTFLOW_RUN_DEADLINE_SECONDS",
    "TENANTFLOW_TRUST_EASY_AUTH",
    "TENANTFLOW_CAPTURE_PROMPTS",
)
# Read outside the running app, never app settings (infra/main.bicep must not set them; a test checks it):
# deploy-time, by `tenantflow db migrate` (the postprovision hook passes the owner's DSN to it) …
DEPLOY_SETTING_NAMES = ("TENANTFLOW_POSTGRES_MIGRATION_DSN",)
# … and by the CLI's remote mode (`tenantflow --url`), with TENANTFLOW_OPERATOR_KEY; `azd up` outputs both.
CLIENT_SETTING_NAMES = ("TENANTFLOW_URL",)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    store: str = "sqlite"
    sqlite_path: Path = REPO_ROOT / ".tenantflow" / "tenantflow.db"
    default_endpoint: str = "http://127.0.0.1:8765"
    default_api_key: Secret | None = None
    postgres_dsn: Secret | None = None
    postgres_migration_dsn: Secret | None = None  # owner role that applies migrations; the app role does not own
    table_connection: Secret | None = None
    table_prefix: str = "tf"
    queue_connection: Secret | None = None  # TENANTFLOW_QUEUE_CONNECTION, else AzureWebJobsStorage
    run_queue: str = "flow-runs"
    encryption_keys: tuple[EncryptionKey, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_host_suffixes: tuple[str, ...] = ()  # beyond the Microsoft/OpenAI ones, e.g. azure-api.net (APIM)
    allowed_key_vaults: tuple[str, ...] = ()  # vault names Key Vault references may read; none: no reference resolves
    flows_dir: Path = REPO_ROOT / "flows"
    connections_file: Path = REPO_ROOT / "shared" / "connections" / "static_connections.yaml"
    prices_file: Path = REPO_ROOT / "shared" / "services" / "prices.yaml"
    operator_key: Secret | None = None
    credential_cache_ttl: float = 60.0
    api_key_cache_ttl: float = 5.0  # revoke/suspend on another instance reach this one within it
    postgres_pool_size: int = 6  # per instance; × maximumInstanceCount must fit max_connections (infra/main.bicep)
    postgres_entra: bool = False  # sign in to PostgreSQL with the managed identity's Entra token, no password
    # one model call's worst case (timeout × attempts + retry waits) stays under the sync limit, and a flow of three
    # calls under host.json's functionTimeout (tests/deploy/test_time_limits.py)
    model_timeout_seconds: float = 45.0
    model_max_attempts: int = 3
    sync_limit_seconds: float = 200.0  # a sync run that may take longer answers 202 and runs from the queue
    # a queue, timer or CLI run ends `failed` (deadline_exceeded) after this; the rest of functionTimeout records it
    run_deadline_seconds: float = 570.0
    trust_easy_auth: bool = False  # honour x-ms-client-principal (only behind App Service Authentication)
    capture_prompts: bool = False  # model-call spans carry the messages and the completion (opt-in)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        store = (get("TENANTFLOW_STORE") or "sqlite").lower()
        if store not in STORES:
            raise SettingsError(f"TENANTFLOW_STORE: must be one of {', '.join(STORES)}, got {store!r}")
        postgres_dsn = get("TENANTFLOW_POSTGRES_DSN")
        if store == "postgres" and not postgres_dsn:
            raise SettingsError("TENANTFLOW_POSTGRES_DSN: required when TENANTFLOW_STORE=postgres")
        table_connection = get("TENANTFLOW_TABLE_CONNECTION")
        if store == "table" and not table_connection:
            raise SettingsError("TENANTFLOW_TABLE_CONNECTION: required when TENANTFLOW_STORE=table")
        raw_keys = get("TENANTFLOW_ENCRYPTION_KEY")
        try:
            keys = parse_encryption_keys(raw_keys) if raw_keys else ()
        except KeyFormatError as exc:
            raise SettingsError(str(exc)) from None
        if store != "sqlite" and not keys:
            raise SettingsError(f"TENANTFLOW_ENCRYPTION_KEY: required when TENANTFLOW_STORE={store}")
        trust_easy_auth = (get("TENANTFLOW_TRUST_EASY_AUTH") or "false").lower()
        if trust_easy_auth not in ("true", "false"):
            raise SettingsError(f"TENANTFLOW_TRUST_EASY_AUTH: must be true or false, got {trust_easy_auth!r}")
        capture_prompts = (get("TENANTFLOW_CAPTURE_PROMPTS") or "false").lower()
        if capture_prompts not in ("true", "false"):
            raise SettingsError(f"TENANTFLOW_CAPTURE_PROMPTS: must be true or false, got {capture_prompts!r}")
        defaults = cls()

        def number(name: str, default: float, minimum: float, maximum: float, integer: bool = False) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                raise SettingsError(f"{name}: not {'an integer' if integer else 'a number'}: {raw!r}") from None
            if not minimum <= value <= maximum:
                raise SettingsError(f"{name}: must be between {minimum:g} and {maximum:g}, got {raw}")
            return value

        entra_raw = (get("TENANTFLOW_POSTGRES_ENTRA") or "false").lower()
        if entra_raw not in ("true", "false"):
            raise SettingsError(f"TENANTFLOW_POSTGRES_ENTRA: must be true or false, got {entra_raw!r}")
        queue_connection = get("TENANTFLOW_QUEUE_CONNECTION") or get("AzureWebJobsStorage")
        return cls(
            store=store,
            sqlite_path=Path(get("TENANTFLOW_SQLITE_PATH") or defaults.sqlite_path),
            default_endpoint=get("TENANTFLOW_DEFAULT_ENDPOINT") or defaults.default_endpoint,
            default_api_key=secret_or_none(get("TENANTFLOW_DEFAULT_API_KEY")),
            postgres_dsn=secret_or_none(postgres_dsn),
            postgres_migration_dsn=secret_or_none(get("TENANTFLOW_POSTGRES_MIGRATION_DSN")),
            table_connection=secret_or_none(table_connection),
            table_prefix=get("TENANTFLOW_TABLE_PREFIX") or defaults.table_prefix,
            queue_connection=secret_or_none(queue_connection),
            run_queue=get("TENANTFLOW_RUN_QUEUE") or defaults.run_queue,
            encryption_keys=keys,
            allowed_hosts=comma_list(get("TENANTFLOW_ALLOWED_HOSTS")),
            allowed_host_suffixes=comma_list(get("TENANTFLOW_ALLOWED_HOST_SUFFIXES")),
            allowed_key_vaults=comma_list(get("TENANTFLOW_ALLOWED_KEY_VAULTS")),
            flows_dir=Path(get("TENANTFLOW_FLOWS_DIR") or defaults.flows_dir),
            connections_file=Path(get("TENANTFLOW_CONNECTIONS_FILE") or defaults.connections_file),
            prices_file=Path(get("TENANTFLOW_PRICES_FILE") or defaults.prices_file),
            operator_key=secret_or_none(get("TENANTFLOW_OPERATOR_KEY")),
            credential_cache_ttl=number("TENANTFLOW_CREDENTIAL_CACHE_TTL", defaults.credential_cache_ttl, 0, 86400),
            api_key_cache_ttl=number("TENANTFLOW_API_KEY_CACHE_TTL", defaults.api_key_cache_ttl, 0, 3600),
            postgres_pool_size=int(number("TENANTFLOW_POSTGRES_POOL_SIZE", defaults.postgres_pool_size, 1, 100, True)),
            postgres_entra=entra_raw == "true",
            model_timeout_seconds=number("TENANTFLOW_MODEL_TIMEOUT_SECONDS", defaults.model_timeout_seconds, 1, 600),
            model_max_attempts=int(number("TENANTFLOW_MODEL_MAX_ATTEMPTS", defaults.model_max_attempts, 1, 10, True)),
            sync_limit_seconds=number("TENANTFLOW_SYNC_LIMIT_SECONDS", defaults.sync_limit_seconds, 1, 230),
            run_deadline_seconds=checked_run_deadline(number("TENANTFLOW_RUN_DEADLINE_SECONDS",
                                                             defaults.run_deadline_seconds, 1, 86400)),
            trust_easy_auth=trust_easy_auth == "true",
            capture_prompts=capture_prompts == "true",
        )


def checked_run_deadline(seconds: float) -> float:
    if seconds >= FUNCTION_TIMEOUT_SECONDS:
        raise SettingsError(f"TENANTFLOW_RUN_DEADLINE_SECONDS: must be below host.json functionTimeout "
                            f"({FUNCTION_TIMEOUT_SECONDS} s), leaving time to record the run's end; got {seconds:g}")
    return seconds


def comma_list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in (value or "").split(",") if item.strip())


def secret_or_none(value: str | None) -> Secret | None:
    return Secret(value) if value else None
