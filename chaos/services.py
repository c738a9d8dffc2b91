"""Private PostgreSQL and RabbitMQ for the fault suite, started and stopped by it alone.

The suite restarts and stops its services on purpose, so it never touches the shared ones
on 5432 and 5672: it makes its own PostgreSQL cluster (``initdb`` into ``var/chaos/pg`` as
the ``postgres`` OS user, port 27432) and its own RabbitMQ node (``kabuto-chaos@localhost``,
port 27672, its own configuration, cookie, database and logs under ``var/chaos/rabbit``).
Every ``rabbitmqctl`` call names the private node explicitly.

    python -m chaos.services stop     # what the Makefile's trap runs on any exit
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "var" / "chaos"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True, slots=True)
class PrivatePostgres:
    root: Path = ROOT / "pg"
    port: int = 27432

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/kabuto_chaos"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> str:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        return _run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.root / "data"), "-l",
             str(self.root / "server.log"), "-o", options, "-w", "-t", "60", *args]
        )  # fmt: skip

    def start(self) -> None:
        if not (self.root / "data" / "PG_VERSION").exists():
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True)
            shutil.chown(self.root, "postgres")
            _run(["runuser", "-u", "postgres", "--", "initdb", "-D", str(self.root / "data"), "-A", "trust",
                  "-U", "postgres"])  # fmt: skip
        if not self.running():
            self._pg_ctl("start")

    def running(self) -> bool:
        status = subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.root / "data"), "status"],
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        if (self.root / "data" / "PG_VERSION").exists() and self.running():
            self._pg_ctl("-m", "fast", "stop")


@dataclass(frozen=True, slots=True)
class PrivateRabbit:
    root: Path = ROOT / "rabbit"
    port: int = 27672
    node: str = "kabuto-chaos@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.root / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 1),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 120) -> str:
        return _run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env(), timeout=timeout)

    def start(self) -> None:
        if not self.running():  # a fresh node: no queue of an earlier run to elect leaders for
            shutil.rmtree(self.root / "mnesia", ignore_errors=True)
        for folder in ("home", "mnesia", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.root / "rabbitmq-env.conf").write_text("")
        if self.running():
            return
        for attempt in (1, 2):  # once more if the port was briefly taken (a client's ephemeral port)
            _run([str(RABBIT_BIN / "rabbitmq-server"), "-detached"], env=self.env())
            try:
                self.ctl("wait", str(self.root / "node.pid"), "--timeout", "120", timeout=150)
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(5)  # the failed node exits; then start again

    def running(self) -> bool:
        pid = self.root / "node.pid"
        if not pid.exists():
            return False
        try:
            os.kill(int(pid.read_text().strip()), 0)
        except (ValueError, ProcessLookupError):
            return False
        return True

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def stop(self) -> None:
        if self.running():
            self.ctl("stop", str(self.root / "node.pid"), timeout=60)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    services = (PrivatePostgres(), PrivateRabbit())
    if command == "start":
        for service in services:
            service.start()
    elif command == "stop":
        for service in services:
            try:
                service.stop()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"chaos: could not stop {type(service).__name__}: {exc}", file=sys.stderr)
    else:
        print("usage: python -m chaos.services start|stop", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
