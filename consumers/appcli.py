"""`switchboard apps add|list|update|remove`: the worker apps turns are pushed to.

Secrets are never printed, except a generated one, once, when `--print-secret` asks for it
(stdout only: a log or a terminal scrollback is no place for it). Bad input is one line on
stderr and exit 2; an unknown or taken name, exit 1.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TextIO

from consumers import egress, signing
from consumers.appclient import system_resolve
from consumers.store import Store
from consumers.store.apps import UNSET, AppSQL, Unset, WorkerApp
from ingress.settings import Settings
from ingress.topology import APP_NAME

MAX_TIMEOUT_S = 120.0
DEFAULT_TIMEOUT_S = 10.0


class BadInput(ValueError):
    """A value the command refuses; the message is the line shown."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    apps = sub.add_parser("apps", help="worker apps that turns are pushed to over HTTP")
    actions = apps.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a worker app")
    add.add_argument("name")
    add.add_argument("url")
    _secret_options(add)
    add.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS")
    add.add_argument("--disabled", action="store_true", help="register it without pushing")
    actions.add_parser("list", help="the worker apps (secrets masked)")
    update = actions.add_parser("update", help="change a worker app")
    update.add_argument("name")
    update.add_argument("--url")
    _secret_options(update, generate="--new-secret")
    update.add_argument("--timeout", type=float, metavar="SECONDS")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true")
    state.add_argument("--disable", action="store_true")
    actions.add_parser("remove", help="forget a worker app").add_argument("name")


def _secret_options(parser: argparse.ArgumentParser, generate: str | None = None) -> None:
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--secret", help="whsec_<base64> (default on add: generated)")
    if generate is not None:
        chosen.add_argument(generate, action="store_true", help="generate a new secret")
    parser.add_argument(
        "--print-secret", action="store_true", help="print a generated secret (once, to stdout)"
    )


async def run(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    try:
        return await _run(args, settings, out)
    except BadInput as exc:
        sys.stderr.write(f"switchboard apps {args.action}: {exc}\n")
        return 2


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    settings.require("database_url")
    assert settings.database_url is not None
    policy = egress.Policy(
        allow_http=settings.allow_http_apps, allow_private=settings.allow_private_apps
    )
    # Checked before connecting: bad input is refused even with the database down.
    if args.action in ("add", "update"):
        await _validate(args, policy)
    store = await Store.connect(settings.database_url, max_size=1)
    try:
        async with store.transaction() as tx:
            sql = AppSQL(tx.conn)
            if args.action == "list":
                out.write(render(await sql.list_apps()))
                return 0
            if args.action == "add":
                return await _add(sql, args, out)
            if args.action == "update":
                return await _update(sql, args, out)
            return _said(await sql.remove_app(args.name), f"removed {args.name}", args.name, out)
    finally:
        await store.close()


async def _validate(args: argparse.Namespace, policy: egress.Policy) -> None:
    if args.action == "add" and not APP_NAME.fullmatch(args.name):
        raise BadInput(
            "NAME must be 1-63 lower-case letters, digits, - or _, starting with a letter or digit"
        )
    if args.url is not None:
        try:
            await egress.check(args.url, policy, system_resolve)
        except egress.EgressError as exc:
            raise BadInput(f"URL: {exc}") from None
    if args.secret is not None:
        try:
            signing.key_of(args.secret)
        except signing.SecretError as exc:
            raise BadInput(f"--secret: {exc}") from None
    if args.timeout is not None and not 0 < args.timeout <= MAX_TIMEOUT_S:
        raise BadInput(f"--timeout must be above 0 and at most {MAX_TIMEOUT_S:g} seconds")


async def _add(sql: AppSQL, args: argparse.Namespace, out: TextIO) -> int:
    generated = args.secret is None
    secret = args.secret or signing.new_secret(secrets.token_bytes(signing.KEY_BYTES))
    added = await sql.add_app(args.name, args.url, secret, timeout_s=args.timeout,
                              enabled=not args.disabled)  # fmt: skip
    if not added:
        sys.stderr.write(f"switchboard apps add: an app named {args.name} exists (use update)\n")
        return 1
    out.write(f"added {args.name}\n")
    _shown_secret(secret if generated else None, args.print_secret, out)
    return 0


async def _update(sql: AppSQL, args: argparse.Namespace, out: TextIO) -> int:
    secret: str | Unset = UNSET
    if args.secret is not None:
        secret = args.secret
    elif args.new_secret:
        secret = signing.new_secret(secrets.token_bytes(signing.KEY_BYTES))
    enabled: bool | Unset = True if args.enable else False if args.disable else UNSET
    updated = await sql.update_app(
        args.name,
        url=args.url if args.url is not None else UNSET,
        secret=secret,
        timeout_s=args.timeout if args.timeout is not None else UNSET,
        enabled=enabled,
    )
    if _said(updated, f"updated {args.name}", args.name, out):
        return 1
    _shown_secret(secret if args.new_secret else None, args.print_secret, out)
    return 0


def _shown_secret(generated: str | Unset | None, asked: bool, out: TextIO) -> None:
    if not isinstance(generated, str):
        return
    if asked:
        out.write(f"secret: {generated}\n")
    else:
        out.write("a secret was generated (not shown: pass --print-secret to see it once)\n")


def _said(done: bool, line: str, name: str, out: TextIO) -> int:
    if not done:
        sys.stderr.write(f"switchboard apps: no app named {name}\n")
        return 1
    out.write(line + "\n")
    return 0


def render(apps: list[WorkerApp]) -> str:
    if not apps:
        return "no worker apps\n"
    rows = [("NAME", "URL", "SECRET", "TIMEOUT", "ENABLED")]
    rows += [
        (a.name, a.url, signing.masked(a.secret.reveal()), f"{a.timeout_s:g}s",
         "yes" if a.enabled else "no")
        for a in apps
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
