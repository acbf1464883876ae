"""`switchboard up`: the whole pipeline on one machine, embedded servers when no URLs are given."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from consumers import demoapp, servers
from consumers.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
    port_in_use,
    redis_binary,
)
from consumers.runner import ensure_group
from consumers.store import Store, schema
from ingress.connect import redis_client
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.topology import Topology

DEMO_TOKEN = "demo-bot-token"
DEMO_SECRET = "demo-webhook-secret"
DEMO_BOT_ID = "1"


def without_password(url: str) -> str:
    """A URL fit to print: a password, if the user's URL has one, never reaches the screen."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def project_root() -> Path:
    """The checkout holding schema.sql and scripts/ (the package lives inside it)."""
    return Path(__file__).resolve().parent.parent


def schema_sql() -> str:
    """The full schema, shipped inside the package (consumers/store/schema.sql, a copy of the
    repository's schema.sql), so an installed Switchboard migrates from any directory."""
    return schema.full_sql()


async def migrate(database_url: str) -> str:
    """`switchboard migrate`: the schema at this code's version; one line saying what was done."""
    store = await Store.connect(database_url, max_size=1)
    try:
        return await schema.migrate(store, schema_sql())
    finally:
        await store.close()


async def prepare(redis_url: str, database_url: str, topology: Topology) -> None:
    """Migrate the schema and create every group (both idempotent)."""
    print(f"switchboard up: {await migrate(database_url)}", flush=True)  # noqa: T201
    redis = redis_client(redis_url)
    try:
        for group, spec in topology.groups.items():
            await ensure_group(redis, topology.key(spec.stream), group)
    finally:
        await redis.aclose()


class LocalStack:
    """Embedded servers, then ingress and consumers (and the demo pair) as child processes."""

    def __init__(self, settings: Settings, topology: Topology, *, demo: bool) -> None:
        self.settings = settings
        self.topology = topology
        self.demo = demo
        self.home = settings.home
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.servers: list[EmbeddedRedis | EmbeddedPostgres] = []
        self._stop = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            env = self._start_servers()
            asyncio.run(prepare(env["REDIS_URL"], env["DATABASE_URL"], self.topology))
            self._start_children(env)
            self._record(env)
            self._announce(env)
            return self._supervise()
        finally:
            servers.remove(self.settings.servers_file, os.getpid())
            self._stop_all()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _start_servers(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.settings.redis_url is None:
            redis = EmbeddedRedis(self.home / "redis", free_port(6380))
            redis.start()
            self.servers.append(redis)
            env["REDIS_URL"] = redis.url
        if self.settings.database_url is None:
            pg = EmbeddedPostgres(self.home / "postgres", free_port(5433))
            pg.start()
            self.servers.append(pg)
            asyncio.run(Store.ensure_database(pg.url(), "switchboard"))
            env["DATABASE_URL"] = pg.url("switchboard")
        return env

    def _start_children(self, env: dict[str, str]) -> None:
        port = self.settings.port
        if port_in_use(port):
            raise ConfigError([f"port {port} is in use: set PORT to another port for the ingress"])
        env.setdefault("PORT", str(port))
        if self.demo:
            fake_port = free_port(3000)
            env.update(
                CHATWOOT_BASE_URL=f"http://127.0.0.1:{fake_port}",
                CHATWOOT_API_TOKEN=DEMO_TOKEN,
                CHATWOOT_WEBHOOK_SECRETS=DEMO_SECRET,
                CHATWOOT_BOT_ID=DEMO_BOT_ID,
            )
            scripts = project_root() / "scripts"
            self._spawn(
                "fake-chatwoot",
                [
                    str(scripts / "fake_chatwoot.py"),
                    "--port",
                    str(fake_port),
                    "--token",
                    DEMO_TOKEN,
                    "--secret",
                    DEMO_SECRET,
                    "--webhook-url",
                    f"http://127.0.0.1:{port}/webhooks/chatwoot",
                ],
                env,
            )
            self._start_demo_app(env)
        self._spawn("ingress", ["-m", "ingress"], env)
        self._spawn("consumers", ["-m", "consumers"], env)
        if self.demo:
            agent = [str(project_root() / "scripts" / "echo_agent.py")]
            self._spawn("echo-agent", [*agent, "--prefix", self.topology.prefix], env)
        self._wait_healthy(f"http://127.0.0.1:{port}/health")

    def _start_demo_app(self, env: dict[str, str]) -> None:
        """The echo worker app, registered, with a demo inbox routed to it (demoapp.py)."""
        app_port = free_port(8700)
        url = f"http://127.0.0.1:{app_port}/turns"
        streams = demoapp.streams_file(self.settings.streams_path, self.home)
        env.update(SWITCHBOARD_STREAMS=str(streams), ALLOW_HTTP_APPS="1", ALLOW_PRIVATE_APPS="1")
        secret = asyncio.run(demoapp.register(env["DATABASE_URL"], url))
        app_env = env | {"ECHO_APP_SECRET": secret}  # the environment, not argv: not in `ps`
        self._spawn("echo-app", [str(project_root() / "scripts" / "echo_app.py"),
                                 "--port", str(app_port)], app_env)  # fmt: skip

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.DEVNULL)
        self.children.append((name, process))

    def _wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._stop:
            if (problem := self._check_children()) is not None:
                raise ConfigError([f"{problem} while starting; its output is above"])
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        raise ConfigError([f"the ingress did not answer {url} within 30 s"])

    def _check_children(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def _record(self, env: dict[str, str]) -> None:
        """The servers file, for the commands run in another terminal (see servers.py)."""
        chosen = env | {"SWITCHBOARD_STREAMS": str(self.settings.streams_path.resolve())}
        if not self.demo:  # the user's own Chatwoot secrets stay in the user's environment
            chosen = {k: v for k, v in chosen.items() if k != "CHATWOOT_API_TOKEN"
                      and k != "CHATWOOT_WEBHOOK_SECRETS"}  # fmt: skip
        record = servers.Servers(
            pid=os.getpid(),
            home=str(self.home.resolve()),
            ingress_url=f"http://127.0.0.1:{env['PORT']}",
            env={k: v for k, v in chosen.items() if k in servers.KEYS},
        )
        servers.write(self.settings.servers_file, record)

    def _announce(self, env: dict[str, str]) -> None:
        port = env["PORT"]
        lines = [
            "",
            "Switchboard is up.",
            f"  webhooks:  http://127.0.0.1:{port}/webhooks/chatwoot",
            f"  redis:     {without_password(env['REDIS_URL'])}",
            f"  postgres:  {without_password(env['DATABASE_URL'])}",
            f"  look:      {redis_binary('redis-cli')} -u {without_password(env['REDIS_URL'])} "
            f"XRANGE {self.topology.key('events')} - + COUNT 5",
            f"  commands:  switchboard streams|doctor|dlq list, from any directory "
            f"(they read {self.settings.servers_file})",
        ]
        if self.demo:
            fake = env["CHATWOOT_BASE_URL"]
            lines += [
                "",
                "Demo: a fake Chatwoot and the echo agent are running. Be the customer:",
                f"  curl -s -X POST {fake}/_fake/customer -H 'content-type: application/json' "
                '-d \'{"content": "Hello, Switchboard!"}\'',
                "then see the bot's reply arrive in Chatwoot:",
                f"  curl -s {fake}/_fake/messages",
                *demoapp.banner(fake),
            ]
        lines += ["", "Ctrl-C stops everything.", ""]
        print("\n".join(lines), flush=True)  # noqa: T201 - this banner is the command's output

    def _supervise(self) -> int:
        while not self._stop:
            problem = self._check_children()
            if problem is not None:
                print(f"switchboard up: {problem}; stopping", file=sys.stderr)  # noqa: T201
                return 1
            time.sleep(0.2)
        return 0

    def _stop_all(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in reversed(self.servers):
            server.stop()
