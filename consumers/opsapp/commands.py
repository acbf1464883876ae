"""`switchboard conversation ACCOUNT ID [--json]` and `switchboard ops [--host --port]`."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys

import msgspec

from consumers import service
from consumers.opsapp import reads
from consumers.timeline import render
from ingress.settings import Settings
from ingress.topology import Topology

NAMES = frozenset({"conversation", "ops"})
DEFAULT_PORT = 8100


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shown = sub.add_parser("conversation", help="one conversation's timeline")
    shown.add_argument("account", type=int)
    shown.add_argument("conversation", type=int, metavar="ID")
    shown.add_argument("--json", action="store_true", help="as JSON, for machines")
    served = sub.add_parser("ops", help="serve the ops page and its JSON views")
    served.add_argument("--host", default="127.0.0.1", help="address (other than 127.0.0.1 "
                        "only with OPS_TOKEN set)")  # fmt: skip
    served.add_argument("--port", type=int, default=DEFAULT_PORT)


def run(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    if args.command == "conversation":
        return asyncio.run(_conversation(args, settings, topology))
    return _serve(args, settings, topology)


async def _conversation(args: argparse.Namespace, settings: Settings, topo: Topology) -> int:
    async with service.connections(settings, topo) as (redis, store):
        found = await reads.conversation(store, redis, topo, args.account, args.conversation)
    if found is None:
        sys.stdout.write(f"no conversation {args.account}/{args.conversation}\n")
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.encode(found).decode() + "\n")
    else:
        sys.stdout.write(render(found))
    return 0


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    import uvicorn

    from consumers.opsapp.app import create_app

    # Replay and purge must never be open on a network by accident.
    if settings.ops_token is None and not loopback(args.host):
        sys.stderr.write(f"switchboard ops: OPS_TOKEN is not set: refusing to serve on "
                         f"{args.host}; set OPS_TOKEN, or serve on 127.0.0.1\n")  # fmt: skip
        return 2
    settings.require("redis_url", "database_url")
    app = create_app(settings, topology)
    where = f"http://{args.host}:{args.port}/"
    if settings.ops_token is None:
        sys.stdout.write(f"switchboard ops: OPS_TOKEN unset: no sign-in, serving {where} on "
                         "this machine only (127.0.0.1)\n")  # fmt: skip
    else:
        sys.stdout.write(f"switchboard ops: serving {where} (OPS_TOKEN required)\n")
    sys.stdout.flush()
    # As the ingress does: uvicorn re-raises the signal that stopped it; finding this handler,
    # the process exits 0 after its graceful stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)  # fmt: skip
    return 0
