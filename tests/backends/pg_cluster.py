"""A throwaway PostgreSQL cluster on a free 127.0.0.1 port, owned by `postgres` and started with the same
commands as scripts/services.sh, for tests and benchmarks that stop the server or need their own settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


class Cluster:
    def __init__(self, options: str = "") -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.root = Path(tempfile.mkdtemp(prefix="tf-pg-"))  # outside pytest's 0700 folders: postgres reads it
        self.bin, self.data, self.port, self.options = binaries, self.root / "pgdata", free_port(), options
        os.chmod(self.root, 0o755)
        self.data.mkdir()
        shutil.chown(self.data, "postgres", "postgres")
        self.as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self.as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-w", "-t", "60", "-o",
                         f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.data} "
                         f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off {self.options}", "start")

    def stop(self) -> None:
        self.as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
