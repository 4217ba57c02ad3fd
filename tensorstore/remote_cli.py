"""The remote subcommands of the command line: ``push``, ``pull``, ``remote-ls``, ``gc``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .units import format_size


def add_parsers(sub) -> None:
    p = sub.add_parser("push", help="publish the store's models to a remote (s3://, gs://, az://, file://); sends only what it lacks")
    p.add_argument("store", type=Path)
    p.add_argument("url", metavar="URL")
    p.add_argument("--model", action="append", dest="models", metavar="M", help="push only this model (repeatable)")
    p.add_argument("--json", action="store_true", help="print the push report as JSON")
    p.set_defaults(func=_push)

    q = sub.add_parser("pull", help="copy models from a remote into a store (created if missing); fetches only what it lacks")
    q.add_argument("url", metavar="URL")
    q.add_argument("store", type=Path)
    q.add_argument("--model", action="append", dest="models", metavar="M", help="pull only this model (repeatable)")
    q.add_argument("--json", action="store_true", help="print the pull report as JSON")
    q.set_defaults(func=_pull)

    r = sub.add_parser("remote-ls", help="list the models on a remote")
    r.add_argument("url", metavar="URL")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_remote_ls)

    g = sub.add_parser("gc", help="delete a remote's objects no recent snapshot needs (after a grace period)")
    g.add_argument("url", metavar="URL")
    g.add_argument("--grace-minutes", type=float, default=None,
                   help="never delete what changed more recently than this (default 60; must exceed the longest push)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_gc)


def _push(args: argparse.Namespace) -> int:
    from . import open as open_store

    if not args.store.exists():
        from .errors import StoreNotFoundError

        raise StoreNotFoundError(f"no store at {args.store}")
    with open_store(args.store, "r") as store:
        report = store.push(args.url, args.models)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    t = report.transfer
    if not report.models:
        print(f"{report.url}: up to date at generation {report.generation} ({len(report.unchanged)} models)")
    else:
        print(f"pushed {len(report.models)} model(s) to {report.url} (generation {report.generation}): "
              f"{report.blocks_sent} new blocks, {format_size(report.stored_bytes_sent)} in {report.packs_sent} pack(s); "
              f"{format_size(t['bytes_out'])} sent in {t['puts']} PUT(s)")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .remote import pull

    report = pull(args.url, args.store, args.models, progress_bar=None if not args.json else False)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    t = report.transfer
    print(f"pulled {len(report.models)} model(s) from {report.url} (generation {report.generation}) into {args.store}: "
          f"{report.blocks_fetched} blocks fetched, {report.blocks_local} found locally; "
          f"{format_size(t['bytes_in'])} received in {t['gets']} GET(s)"
          + (f"; {len(report.unchanged)} already up to date" if report.unchanged else ""))
    return 0


def _remote_ls(args: argparse.Namespace) -> int:
    from .remote import remote_ls

    info = remote_ls(args.url)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['url']}  generation {info['generation']}  {len(info['models'])} models  "
          f"{format_size(info['pack_bytes'])} in {info['packs']} packs")
    width = max((len(m["model"]) for m in info["models"]), default=5)
    for m in info["models"]:
        print(f"{m['model']:<{width}}  {m['tensors']:>5} tensors  {format_size(m['logical_bytes']):>10} logical  "
              f"{format_size(m['stored_bytes']):>10} stored" + (f"  domain {m['domain']}" if m["domain"] else ""))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from .remote import DEFAULT_GRACE_MINUTES, gc

    report = gc(args.url, grace_minutes=DEFAULT_GRACE_MINUTES if args.grace_minutes is None else args.grace_minutes)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{report.url}: deleted {report.deleted_packs} pack(s) ({format_size(report.deleted_bytes)}), "
          f"{report.deleted_snapshots} snapshot(s), {report.deleted_heads} head(s); "
          f"kept {report.kept_packs} pack(s) ({format_size(report.kept_bytes)})", file=sys.stdout)
    return 0
