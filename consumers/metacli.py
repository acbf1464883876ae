"""`switchboard meta map|unmap|maps|forwards`: which worker app gets each Instagram account's
comments (by media owner id), and what became of the latest comments.

A comment whose owner was mapped to no app is recorded `ignored` with the owner id; map it,
then `switchboard replay --since <when> --event meta.instagram` sends what was ignored (what
was forwarded already is not sent again).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TextIO

from consumers.store import Store
from consumers.store.apps import AppSQL
from ingress.settings import Settings

OWNER = re.compile(r"[0-9]{1,32}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    meta = sub.add_parser("meta", help="Instagram comments: owner → worker app mapping")
    actions = meta.add_subparsers(dest="action", required=True, metavar="ACTION")
    mapping = actions.add_parser("map", help="send an Instagram account's comments to an app")
    mapping.add_argument("owner", help="the Instagram user id that owns the media")
    mapping.add_argument("app", help="a worker app (switchboard apps add)")
    actions.add_parser("unmap", help="stop forwarding an owner's comments").add_argument("owner")
    actions.add_parser("maps", help="the owner → app mapping")
    forwards = actions.add_parser("forwards", help="the latest comments and their outcome")
    forwards.add_argument("--limit", type=int, default=20)


async def run(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    settings.require("database_url")
    assert settings.database_url is not None
    owner = getattr(args, "owner", None)
    if owner is not None and OWNER.fullmatch(owner) is None:
        sys.stderr.write(f"switchboard meta {args.action}: an owner id is digits, got {owner!r}\n")
        return 2
    store = await Store.connect(settings.database_url, max_size=1)
    try:
        async with store.transaction() as tx:
            if args.action == "map":
                if await AppSQL(tx.conn).get_app(args.app) is None:
                    sys.stderr.write(f"switchboard meta map: no app {args.app!r}\n")
                    return 1
                await tx.map_owner(args.owner, args.app)
                out.write(f"comments on media of {args.owner} go to {args.app}\n")
            elif args.action == "unmap":
                if not await tx.unmap_owner(args.owner):
                    sys.stderr.write(f"switchboard meta unmap: {args.owner} is not mapped\n")
                    return 1
                out.write(f"{args.owner} unmapped: its comments are recorded ignored\n")
            elif args.action == "maps":
                for row in await tx.owner_maps():
                    out.write(f"{row.owner_id}\t{row.app}\n")
            else:
                for f in await tx.forwards(limit=args.limit):
                    out.write(
                        f"{f.comment_key}\t{f.outcome}\towner={f.owner_id or '-'}\t"
                        f"app={f.app or '-'}\tattempts={f.attempts}\t{f.detail or ''}\n"
                    )
    finally:
        await store.close()
    return 0
