"""`python -m ingress [--host H] [--port P]`: serve the ingress with uvicorn."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import uvicorn

from ingress import logs, topology
from ingress.app import create_app
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.spool import Spool, SpoolInUse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingress", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: PORT, else 8000)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        topo = topology.load(settings.streams_path)
        settings.require("redis_url")
        settings.require_webhook_auth()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"switchboard ingress: {problem}", file=sys.stderr)  # noqa: T201
        return 2
    logs.configure(settings.log_format, settings.log_level)
    port = args.port or settings.port
    # One spool per listening port: a restarted ingress on the same port drains what its
    # predecessor spooled. Keep SWITCHBOARD_HOME on a persistent disk.
    spool = settings.home.resolve() / "spool" / f"events-{port}.spool"
    try:
        _probe(spool)
    except SpoolInUse as exc:
        print(f"switchboard ingress: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    app = create_app(settings, topo, spool_path=spool)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully, restoring
    # the handler it found first. Finding this one, the process exits 0 instead of dying by it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=port,
        log_config=None,
        access_log=False,
        # Graceful stop: finish in-flight requests (each is one XADD) before exiting.
        timeout_graceful_shutdown=10,
    )
    return 0


def _probe(path: Path) -> None:
    """Refuse at once, in one line, when another ingress holds the spool (the app's lifespan
    takes it for good; refusing there would come with uvicorn's traceback)."""
    spool = Spool(path, max_bytes=1)
    try:
        spool.hold()
    except OSError:
        return  # the lifespan logs an unusable spool; the ingress still serves through Redis
    spool.release()


if __name__ == "__main__":
    sys.exit(main())
