"""The ``tensorstore`` command line.

Exit status: 0 on success, 1 on a user error (one line on stderr saying what is wrong and
how to fix it, no traceback), 2 on bad usage (argparse's own message).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lmdb

from . import open as open_store
from .errors import ModelExistsError, StoreError
from .formats import PICKLE_SUFFIXES, SUFFIXES, pickle_refusal, read_model_dir, read_model_file, write_model_dir, write_safetensors
from .sharing import model_sharing
from .units import format_size


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv[:1] or "-V" in argv[:1]:
        print(version_line())
        return 0
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except _UsageError as exc:
        print(f"tensorstore {args.command}: usage error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError) as exc:
        print(f"tensorstore {args.command}: error: {cli_words(_one_line(exc), args.command)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path under a regular file, a read-only file system, a failing disk
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"tensorstore {args.command}: error: {exc.strerror or exc}{where}; check the path and the file system",
              file=sys.stderr)
        return 1
    except lmdb.Error as exc:  # what the store did not translate: damage deep in the LMDB file
        print(f"tensorstore {args.command}: error: the store's LMDB file is damaged ({_one_line(exc)}); restore it "
              "from a copy (`tensorstore verify --json STORE` for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tensorstore {args.command}: interrupted; the store is as it was before the interrupted change", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tensorstore ls | head`
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensorstore", description="A deduplicating store for neural network weights.")
    p.add_argument("-V", "--version", action="store_true", help="print the version, and which tensorstore is imported")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("add", help="add models from .safetensors or .npz files or model directories (one model per argument)")
    a.add_argument("store", type=Path)
    a.add_argument("files", type=Path, nargs="+", metavar="FILE|DIR",
                   help="a .safetensors or .npz file, or a model directory (model.safetensors, or shards with "
                        "model.safetensors.index.json; config and tokenizer files are kept with the model)")
    a.add_argument("--name", help="the model's name (only with one FILE|DIR; default: the file's stem or the directory's name)")
    a.add_argument("--replace", action="store_true", help="replace a model of the same name")
    a.add_argument("--domain", default="", help="dedup domain (tenant): blocks are shared only within one domain")
    a.add_argument("--page-size", help="page size for a new store, e.g. 1MiB")
    a.add_argument("--block-bytes", help="block size for a new store, e.g. 64KiB")
    a.add_argument("--json", action="store_true", help="print what was added as JSON")
    _ray_flag(a, "encode new blocks in Ray workers (this process chunks, hashes and commits)")
    a.set_defaults(func=_add)

    ls = sub.add_parser("ls", help="list the models, with the bytes each shares")
    ls.add_argument("store", type=Path)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_ls)

    st = sub.add_parser("stats", help="sizes and counts of the store")
    st.add_argument("store", type=Path)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_stats)

    ex = sub.add_parser("export", help="write one model to a safetensors file, or to a model directory")
    ex.add_argument("store", type=Path)
    ex.add_argument("model")
    ex.add_argument("out", type=Path, metavar="OUT.safetensors|OUTDIR",
                    help="a .safetensors file, or a new directory: the model's files as added (weights, index, config, tokenizer)")
    ex.add_argument("--max-shard-size", metavar="SIZE",
                    help="with OUTDIR: split the weights into shards of at most SIZE (e.g. 5GB) with an index")
    ex.set_defaults(func=_export)

    rm = sub.add_parser("rm", help="delete a model (space no other model needs is freed)")
    rm.add_argument("store", type=Path)
    rm.add_argument("model")
    rm.set_defaults(func=_rm)

    dd = sub.add_parser("dedup", help="let near-duplicate blocks share one representative, within an accuracy budget "
                                      "measured by --evaluator (without one: --dry-run, or --unchecked to accept the risk)")
    dd.add_argument("store", type=Path)
    dd.add_argument("--model", action="append", dest="models", metavar="M", help="a model to deduplicate (repeatable; default: all)")
    dd.add_argument("--evaluator", metavar="MODULE:FUNC", help="evaluate(name, tensors) -> accuracy, higher is better")
    dd.add_argument("--max-accuracy-drop", type=float, default=0.01, help="absolute accuracy budget per model (default 0.01)")
    dd.add_argument("--tolerance", type=float, default=None, help="largest relative L2 error per block (default 0.1 with --evaluator, 0.01 without)")
    dd.add_argument("--dry-run", action="store_true", help="plan and report; change nothing")
    dd.add_argument("--unchecked", action="store_true",
                    help="without --evaluator, change weights bounded only by --tolerance, accuracy unmeasured")
    dd.add_argument("--replace-bases", action="store_true",
                    help="let a base's blocks move toward a fine-tune's too (default: only fine-tunes move toward bases)")
    dd.add_argument("--json", action="store_true")
    _ray_flag(dd, "run the evaluations on Ray, several models at once (same result as without)")
    dd.set_defaults(func=_dedup)

    rp = sub.add_parser("repack", help="rewrite the pages to a layout that loads each model from fewer pages")
    rp.add_argument("store", type=Path)
    rp.add_argument("--algorithm", default="two-stage", help="two-stage (default), greedy-2, greedy-1 or baseline")
    rp.add_argument("--read-weight", type=float, help="weight of pages read per load against pages stored")
    rp.add_argument("--time-limit", type=float, default=10.0, help="seconds for the CP-SAT stage (default 10)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=_repack)

    cp = sub.add_parser("compact", help="re-encode every block in its smallest encoding and rewrite the pages")
    cp.add_argument("store", type=Path)
    cp.add_argument("--algorithm", default="two-stage", help="the page layout's packer, as for repack (default two-stage)")
    cp.add_argument("--time-limit", type=float, default=10.0, help="seconds for the CP-SAT stage (default 10)")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=_compact)

    sc = sub.add_parser("shared-cache", help="what the store's shared tensor cache holds; --clear removes unused tensors")
    sc.add_argument("store", type=Path)
    sc.add_argument("--cache", help="the cache: a name in /dev/shm or a directory (default: the store's own)")
    sc.add_argument("--clear", action="store_true", help="remove every tensor no process is using now")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=_shared_cache)

    v = sub.add_parser("verify", help="check every checksum and catalog cross-reference")
    v.add_argument("store", type=Path)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_verify)

    b = sub.add_parser("bench", help="compare the store with the alternatives on a model family (docs/benchmarks.md)")
    b.add_argument("--suite", choices=["compare", "core", "chunking", "neardup", "packing", "serving", "tolerance",
                                              "members", "contentrefs"],
                   default="compare",
                   help="compare: against safetensors, chunk dedup, zstd, tensor dedup (default); "
                        "core: ingest/load speed, sizes, scaling; chunking: row-aligned blocks against 2-D tiles; "
                        "neardup: LSH recall against brute force and search speed; packing: every packer on the store's layout; "
                        "serving: memory (PSS) and cold start of many processes, shared cache against safetensors; "
                        "tolerance: the near-dup pass's bytes, accuracy and evaluations at every tolerance level up to --tolerance; "
                        "members: per member, what the store's per-block encoding adds against the per-tensor ZipLLM-style baseline; "
                        "contentrefs: delta references by content against by position only, on minilm, minilm-renamed, "
                        "minilm-vocab and minilm-vocab-rows, or on the one corpus --corpus names other than digits "
                        "(--corpus scaling: the lookup's cost at 10^3-10^5 stored blocks)")
    b.add_argument("--corpus", default="digits",
                   help="digits (default), minilm, embedding (the sparse-embedding family), embedding-quick (its "
                        "synthetic stand-in), minilm-renamed, minilm-vocab, minilm-vocab-rows (minilm with tensors "
                        "renamed or vocabulary rows inserted), or a folder of .safetensors files (docs/corpus.md)")
    b.add_argument("--repeat", type=int, default=5, help="runs per timing; the median is reported")
    b.add_argument("--codec", choices=["raw", "auto"], default="raw", help="--suite core: how the stores encode new blocks (default raw)")
    b.add_argument("--max-accuracy-drop", type=float, default=0.005, help="near-dup budget per model (compare suite)")
    b.add_argument("--tolerance", type=float, default=0.05, help="near-dup relative L2 error per block (compare suite)")
    b.add_argument("--separate", action="store_true",
                   help="tolerance suite: also run an applied pass per level on a copy and compare its bytes")
    b.add_argument("--lossless-only", action="store_true",
                   help="compare suite: the lossless rows only (no evaluator, no near-dup pass, no cache simulation)")
    b.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the bytes per alternative (needs matplotlib)")
    b.add_argument("--workdir", help="where to put temporary stores (default: the system's temp dir)")
    b.add_argument("--processes", type=int, default=8, help="worker processes (serving suite)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)

    _remote_parsers(sub)

    d = sub.add_parser("demo", help="train a small model family, store it and report (no download)")
    d.add_argument("dir", type=Path, nargs="?",
                   help="keep the demo's store and files here (default: a temporary directory, deleted at the end)")
    d.set_defaults(func=_demo)
    return p


def _remote_parsers(sub) -> None:
    from .remote_cli import add_parsers  # push, pull, remote-ls, gc

    add_parsers(sub)


def _ray_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help=f"{what}; ADDRESS joins a cluster (auto, ray://HOST:10001), none starts a local one "
                             "(needs pip install 'tensorstore-dedup[ray]')")


def _executor(args):
    """The Ray executor ``--ray`` asks for, or a context that does nothing."""
    if args.ray is None:
        from contextlib import nullcontext

        return nullcontext()
    from .ray_executor import RayExecutor

    return RayExecutor(args.ray or None)


def _progress(args) -> bool:
    return sys.stderr.isatty() and not getattr(args, "json", False)


def _add(args) -> int:
    if args.name is not None and len(args.files) != 1:
        raise _UsageError("--name names one model; give exactly one FILE|DIR with it")
    if args.name is not None and not args.name.strip():
        raise _UsageError("--name must not be empty (leave it out to name the model after its file)")
    for f in args.files:  # check every file is there before the store is touched
        if not f.exists():
            raise FileNotFoundError(f"no such file or directory: {f}")
        if f.is_dir():
            continue
        if f.suffix.lower() in PICKLE_SUFFIXES:
            raise pickle_refusal(f)
        if f.suffix.lower() not in SUFFIXES:
            raise _UsageError(f"{f}: unknown file type {f.suffix!r}; expected {' or '.join(SUFFIXES)} or a model directory")
    created = not (args.store / "data.mdb").exists()
    made_dir = not args.store.exists()
    added = []
    executor = _executor(args)  # before the store is touched: a missing Ray changes nothing
    try:
        with executor, open_store(args.store, "a", page_size=args.page_size, block_bytes=args.block_bytes) as store:

            def add_all(txn) -> None:
                # Every FILE|DIR in one transaction: one that fails leaves none of them added.
                added.clear()
                for f in args.files:
                    name = args.name if args.name is not None else (f.resolve().name if f.is_dir() else f.stem)
                    try:
                        if f.is_dir():
                            tensors, meta, files = read_model_dir(f)
                        else:
                            (tensors, meta), files = read_model_file(f), None
                        before = store.state(txn).encoded_bytes
                        store.add_model(name, tensors, meta, replace=args.replace, domain=args.domain,
                                        progress_bar=_progress(args), files=files)
                    except ModelExistsError:
                        raise _FileError(f"{f}: model {name!r} already exists in {args.store}; add --replace to "
                                         "overwrite it; nothing was added") from None
                    except (StoreError, OSError) as exc:
                        text = cli_words(str(exc), "add")
                        raise _FileError((text if str(f) in text else f"{f}: {text}") + "; nothing was added") from None
                    # new bytes as stored: after dedup and encoding
                    added.append({"model": name, "file": str(f), "logical_bytes": sum(t.nbytes for t in tensors.values()),
                                  "new_bytes": store.state(txn).encoded_bytes - before, "files": sorted(files or ()),
                                  "skipped": list(meta.get("skipped_pickles", ()))})

            if args.ray is None:
                store.env.write(add_all)
            else:
                from .executor import encoding_on

                with encoding_on(executor):
                    store.env.write(add_all)
    except BaseException:
        if created:
            _remove_new_store(args.store, made_dir)
        raise
    if not args.json:
        for a in added:
            kept = f", {len(a['files'])} other files kept" if a["files"] else ""
            print(f"added {a['model']}: {format_size(a['logical_bytes'])}, {format_size(a['new_bytes'])} new "
                  f"({_pct(a['new_bytes'], a['logical_bytes'])} of its size){kept}")
            for skipped in a["skipped"]:
                print(f"  skipped {skipped}: pickled files are never loaded; the safetensors weights were stored")
    if args.json:
        print(json.dumps(added, indent=2))
    return 0


def _remove_new_store(path: Path, made_dir: bool) -> None:
    """Undo the creation of a store that a failed ``add`` made: no empty store is left.
    Only a store with no model that no other process has open is removed."""
    import tensorstore as ts
    from .environment import other_users

    if not (path / "data.mdb").exists() or other_users(path):
        return
    try:
        with ts.open(path, "r") as store:
            if len(store):
                return
    except StoreError:
        return
    for name in ("data.mdb", "lock.mdb"):
        (path / name).unlink(missing_ok=True)
    if made_dir:
        try:
            path.rmdir()
        except OSError:
            pass  # something else was put there meanwhile


def _ls(args) -> int:
    with open_store(args.store, "r") as store:
        rows = model_sharing(store.catalog())
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("(no models)")
        return 0
    width = max(len("model"), *(len(r.model) for r in rows))
    # shared: bytes of blocks other models hold too; the rest, private, as stored:
    # deltas of other blocks, compressed byte planes, raw.
    print(f"{'model':<{width}}  {'tensors':>7}  {'size':>10}  {'shared':>10}  {'private':>10}  "
          f"{'as delta':>10}  {'as packed':>10}  {'as raw':>10}")
    for r in rows:
        print(
            f"{r.model:<{width}}  {r.tensors:>7}  {format_size(r.logical_bytes):>10}  "
            f"{format_size(r.shared_bytes):>10}  {format_size(r.private_bytes):>10}  "
            f"{format_size(r.delta_bytes):>10}  {format_size(r.packed_bytes):>10}  {format_size(r.raw_bytes):>10}"
        )
    return 0


def _stats(args) -> int:
    with open_store(args.store, "r") as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s.to_dict(), indent=2))
        return 0
    print(f"models          {s.models}")
    print(f"tensors         {s.tensors}")
    print(f"logical bytes   {format_size(s.logical_bytes)}  (every tensor as added)")
    print(f"unique bytes    {format_size(s.unique_bytes)}  (distinct blocks)")
    encodings = ", ".join(f"{n} {name}" for name, n in s.encodings.items())
    print(f"encoded bytes   {format_size(s.encoded_bytes)}  (distinct blocks as stored: {encodings})")
    # Pages are fixed-size, so a small store's last page is mostly room for later adds:
    # that room is shown apart, and the ratio is of the blocks as stored, not of page bytes.
    print(f"stored bytes    {format_size(s.stored_bytes)}  ({s.pages} pages of {format_size(s.page_size)}: "
          f"{format_size(s.encoded_bytes)} of blocks, {format_size(s.padding_bytes)} room not yet filled)")
    print(f"file bytes      {format_size(s.file_bytes)}")
    print(f"blocks          {s.blocks} references, {s.unique_blocks} distinct (blocks of {format_size(s.block_bytes)})")
    ratio = s.logical_bytes / s.encoded_bytes if s.encoded_bytes else 1.0
    print(f"dedup ratio     {ratio:.2f}x  (logical / distinct blocks as stored)")
    return 0


def _compact(args) -> int:
    with open_store(args.store, "r+") as store:
        report = store.compact(args.algorithm, time_limit=args.time_limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    before, after = report.encoded_bytes_before, report.encoded_bytes_after
    print(f"re-encoded {report.reencoded_blocks} blocks: {format_size(before)} -> {format_size(after)} as stored "
          f"({_pct(after, before)}); {report.pack.pages_before} -> {report.pack.pages_after} pages")
    return 0


def _shared_cache(args) -> int:
    with open_store(args.store, "r", shared_cache=args.cache or True) as store:
        cache = store.shared_cache
        removed = cache.reclaim(keep_alive=0) if args.clear else 0
        usage = cache.usage() | {"removed": removed}
    if args.json:
        print(json.dumps(usage, indent=2))
        return 0
    if args.clear:
        print(f"removed {removed} unused tensors")
    print(f"{usage['directory']}: {usage['tensors']} tensors, {format_size(usage['bytes'])} "
          f"(budget {format_size(usage['max_bytes'])}), {usage['manifests']} model manifests")
    return 0


def _export(args) -> int:
    from .units import parse_size

    to_file = args.out.suffix.lower() == ".safetensors"
    if to_file and args.max_shard_size is not None:
        raise _UsageError("--max-shard-size splits a model directory; give an OUTDIR, not a .safetensors file")
    shard = parse_size(args.max_shard_size, "--max-shard-size") if args.max_shard_size is not None else None
    with open_store(args.store, "r") as store:
        tensors = store.load_model(args.model)
        meta = store.model_info(args.model).metadata
        files = {} if to_file else store.load_files(args.model)
    if to_file:
        write_safetensors(args.out, tensors, meta)
        print(f"exported {args.model} to {args.out}")
        return 0
    written = write_model_dir(args.out, tensors, meta, files, shard)
    print(f"exported {args.model} to {args.out}/: {len(written)} files")
    return 0


def _rm(args) -> int:
    with open_store(args.store, "r+") as store:
        before = store.stats().stored_bytes
        store.delete_model(args.model)
        freed = before - store.stats().stored_bytes
    print(f"deleted {args.model}; {format_size(freed)} of pages freed")
    return 0


def _load_evaluator(spec: str):
    import importlib

    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise _UsageError(f"--evaluator {spec!r} must be MODULE:FUNC, e.g. tensorstore.corpora.digits:evaluate")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the working directory, as `python -m` would have it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _EvaluatorLoadError(f"cannot import evaluator module {module_name!r}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise _EvaluatorLoadError(f"module {module_name!r} has no function {func_name!r}")
    return func


def _dedup(args) -> int:
    from .dedup import DEFAULT_TOLERANCE

    if not args.evaluator and not args.dry_run and not args.unchecked:
        raise _UncheckedError(
            "without --evaluator nothing measures accuracy, so no weights were changed; give --evaluator MODULE:FUNC, "
            "--dry-run to see what would change, or --unchecked to change weights bounded by --tolerance alone"
        )
    evaluate = _load_evaluator(args.evaluator) if args.evaluator else None
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    with open_store(args.store, "r" if args.dry_run else "r+") as store, _executor(args) as executor:
        report = store.dedup(args.models, evaluate=evaluate, max_accuracy_drop=args.max_accuracy_drop,
                             tolerance=tolerance, dry_run=args.dry_run, progress_bar=_progress(args),
                             keep_bases=not args.replace_bases, executor=executor)
    if args.json:
        print(json.dumps(report.to_dict() | {"bytes_saved": report.bytes_saved, "evaluations": report.evaluations}, indent=2))
        return 0
    verb = "would save" if report.dry_run else "saved"
    for m in report.models:
        acc = "" if m.accuracy_before is None else f", accuracy {m.accuracy_before:.4f} -> {m.accuracy_after:.4f}"
        print(f"{m.model}: {len(m.replaced)} of {m.candidates} candidate blocks, {verb} {format_size(m.bytes_saved)}"
              f", {m.evaluations} evaluations{acc}")
    print(f"total: {verb} {format_size(report.bytes_saved)} with {report.evaluations} evaluations")
    if not report.accuracy_checked:
        print(f"accuracy was NOT checked: no --evaluator was given; only the tolerance ({report.tolerance}) bounds each block's error")
    return 0


def _repack(args) -> int:
    with open_store(args.store, "r+") as store:
        report = store.repack(args.algorithm, read_weight=args.read_weight, time_limit=args.time_limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"repacked with {report.algorithm} ({report.status}, {report.solve_seconds:.1f} s)")
    print(f"  pages                 {report.pages_before} -> {report.pages_after}  (lower bound {report.lower_bound_pages})")
    print(f"  pages read per model  {report.mean_pages_read_before:.2f} -> {report.mean_pages_read_after:.2f} on average")
    return 0


def _verify(args) -> int:
    with open_store(args.store, "r") as store:
        report = store.verify()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        print(f"ok: {report.models} models, {report.blocks} blocks, {report.pages} pages checked")
    else:
        print(f"{len(report.problems)} problem(s) found:")
        for p in report.problems:
            print(f"  {p}")
    return 0 if report.ok else 1


def _bench(args) -> int:
    from .bench import core

    if args.repeat < 1:
        raise _UsageError("--repeat must be at least 1")
    if args.suite == "chunking":
        return _bench_chunking(args)
    if args.suite == "compare":
        return _bench_compare(args)
    if args.suite == "packing":
        from .bench import packing_suite

        rows = packing_suite.main(args.corpus, args.workdir)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['algorithm']:<10} pages {r['pages']} (bound {r['lower_bound_pages']}, x{r['pages_over_bound']:.4f}); "
                      f"per-tensor reads x{r['tensor_reads_over_bound']:.4f} of bound; per-model reads "
                      f"{r['model_pages_read_mean']:.1f} (bound {r['model_pages_read_bound_mean']:.1f}, x{r['model_reads_over_bound_mean']:.3f} "
                      f"mean, x{r['model_reads_over_bound_max']:.3f} worst); cost {r['cost']:.4f}; "
                      f"{r['solve_seconds']:.1f} s, {r['status']}")
        return 0
    if args.suite == "serving":
        return _bench_serving(args)
    if args.suite == "members":
        from .bench import members

        result = members.main(args.corpus, args.workdir)
        print(json.dumps(result, indent=2) if args.json else members.table(result))
        return 0
    if args.suite == "contentrefs":
        from .bench import contentrefs

        given = args.corpus if args.corpus != "digits" else None  # digits is --corpus's default
        results = contentrefs.main([given] if given else list(contentrefs.CORPORA), args.workdir, args.repeat)
        print(json.dumps(results, indent=2) if args.json else contentrefs.table(results))
        return 0
    if args.suite == "tolerance":
        from .bench import tolerance

        result = tolerance.main(args.corpus, args.workdir, args.max_accuracy_drop, args.tolerance, args.separate)
        print(json.dumps(result, indent=2) if args.json else tolerance.table(result))
        return 0
    if args.suite == "neardup":
        from .bench import neardup

        rows = neardup.main(args.corpus, args.workdir)
        print(json.dumps(rows, indent=2) if args.json else "\n".join(
            f"tolerance {r['tolerance']}: recall {r['recall']:.4f} ({r['found_by_lsh']} found by LSH, "
            f"{r['found_by_exhaustive']} by brute force), LSH {r['lsh_MBps']:.0f} MB/s, brute force "
            f"{r['exhaustive_MBps']:.0f} MB/s over {r['query_bytes'] / 1e6:.1f} MB of blocks" for r in rows))
        return 0
    from .corpora.registry import NAMES

    if args.corpus not in NAMES:
        raise _UsageError(f"--suite core runs on a named corpus: {', '.join(NAMES)}")
    result = core.main(args.corpus, args.repeat, args.workdir, args.codec)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"store core on {args.corpus} ({format_size(result['raw']['model_bytes'])}, {result['raw']['tensors']} tensors), "
          f"codec {args.codec}; {result['machine']}")
    for k, v in result["summary"].items():
        print(f"  {k:<28} {v:.4g}")
    return 0


def _bench_serving(args) -> int:
    from .bench import serving

    if args.processes < 1:
        raise _UsageError("--processes must be at least 1")
    result = serving.main(args.corpus, args.workdir, args.processes, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for r in result["memory"]:
        sh, st = r["shared"], r["safetensors"]
        print(f"{r['scenario']}: {r['processes']} processes, distinct bytes {format_size(r['distinct_bytes'])}; "
              f"PSS sum shared cache {format_size(sh['pss_sum'])} (idle {format_size(r['idle_shared_pss_sum'])}), "
              f"safetensors {format_size(st['pss_sum'])} (idle {format_size(r['idle_safetensors_pss_sum'])}); "
              f"above idle / distinct: {r['shared_over_distinct']:.2f} against {r['safetensors_over_distinct']:.2f}")
    c = result["cold_start"]
    print(f"cold start of {c['model']} ({format_size(c['model_bytes'])}) in a new process: shared cache "
          f"{c['shared_store_warm_s'] * 1e3:.1f} ms (store catalog cold: {c['shared_store_cold_s'] * 1e3:.1f} ms), "
          f"safetensors with a cold page cache {c['safetensors_cold_s'] * 1e3:.1f} ms: "
          f"x{c['speedup_store_warm']:.1f} (x{c['speedup_store_cold']:.1f})")
    return 0


def _bench_compare(args) -> int:
    from .bench import compare

    try:
        import zstandard  # noqa: F401 - one of the alternatives measured
    except ImportError:
        raise _UsageError("the compare suite needs zstandard: pip install 'tensorstore-dedup[bench]'") from None
    result = compare.main(args.corpus, args.workdir, args.repeat, args.max_accuracy_drop, args.tolerance,
                          lossless_only=args.lossless_only)
    if args.plot:
        _plot_bytes(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(compare.table(result))
    return 0


def _plot_bytes(result: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _UsageError("--plot needs matplotlib: pip install 'tensorstore-dedup[bench]'") from None
    alt = result["alternatives"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(list(alt), [a["bytes"] / 2**20 for a in alt.values()], color="#4c72b0")
    ax.set_xlabel("MiB on disk")
    ax.invert_yaxis()
    ax.set_title(f"{len(result['models'])} models, {result['logical_bytes'] / 2**20:.1f} MiB as added")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def _bench_chunking(args) -> int:
    from .bench.chunking import study
    from .corpora import registry

    if args.corpus not in registry.NAMES:
        raise _UsageError(f"the chunking study needs a fine-tuned family with a base: --corpus {' or '.join(registry.NAMES)}")
    corpus = registry.load(args.corpus)
    rows = study(corpus.family, corpus.root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    keys = [k for k in rows[0] if k not in ("block_bytes", "scheme")]
    print(f"{'block':>7} {'scheme':<6} " + " ".join(f"{k:>11}" for k in keys))
    for r in rows:
        print(f"{format_size(r['block_bytes']):>7} {r['scheme']:<6} " + " ".join(f"{100 * r[k]:>10.1f}%" for k in keys))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.dir)
    return 0


class _UncheckedError(StoreError, ValueError):
    """dedup without an evaluator, asked to change weights without --unchecked (exit 1)."""


# Library messages speak of the Python API; the command line speaks of its flags.
_CLI_WORDS = (
    ("; pass replace=True to overwrite it", "; add --replace to overwrite it"),
    ("; create one with mode 'a' or 'w-'", "; `tensorstore add STORE FILE` creates one"),
    ("; open it with mode 'r+' or 'a' to change it", ""),
    ("; open it with mode 'r'", "; commands that only read it (ls, stats, export, verify) still work"),
)
_ADD_FLAGS = (("page_size", "--page-size"), ("block_bytes", "--block-bytes"))


def cli_words(message: str, command: str | None = None) -> str:
    """``message`` with the API's words (``replace=True``, ``mode 'r'``) put in the CLI's."""
    for api, cli in _CLI_WORDS:
        message = message.replace(api, cli)
    if command == "add":
        for api, cli in _ADD_FLAGS:
            message = message.replace(api, cli)
    return message


def version_line() -> str:
    """``tensorstore X (path)``, or what went wrong when another ``tensorstore`` is imported."""
    from tensorstore_dedup import describe_import

    return describe_import()


class _FileError(StoreError):
    """One FILE|DIR of ``add`` failed; the message names it (exit 1)."""


class _EvaluatorLoadError(StoreError, ImportError):
    """The --evaluator could not be loaded: a user error (exit 1)."""


class _UsageError(ValueError):
    """Arguments that parse but do not fit together: exit status 2, like argparse's."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
