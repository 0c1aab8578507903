"""A private PostgreSQL server for tests, from Debian's ``postgresql`` package.

It is a cluster of its own (``initdb`` into a temporary folder, ``pg_ctl start`` on a free
port of 127.0.0.1, its socket in that folder), never the machine's system service. PostgreSQL
refuses to run as root, so as root its processes run as the package's ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    bin: Path
    data: Path
    port: int
    user: str = "mlflow"

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.uri(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.data.parent, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


def start_postgres(port: int) -> Postgres:
    """initdb a new cluster in a new folder of /tmp (trust auth for one superuser, ``mlflow``)
    and start it. The folder is directly under /tmp because the ``postgres`` user must reach
    it, and pytest's own temporary folders are private to root."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="grt-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        folder.chmod(0o700)
    server = Postgres(bin=binaries, data=folder / "data", port=port)
    server._run(
        "initdb", "-D", str(server.data), "-U", server.user, "--auth=trust", "--encoding=UTF8", "--no-sync"
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    server._run(
        "pg_ctl", "-D", str(server.data), "-o", options, "-l", str(folder / "server.log"), "-w", "start"
    )
    return server
