"""A process that loads models through a store's shared tensor cache (multi-process tests).

    python shared_worker.py STORE CACHE MODEL[,MODEL...] [--hold]

Prints one JSON line: this process's shared-cache counters and a digest of every tensor it
loaded. With ``--hold`` it keeps the tensors mapped until its stdin closes (or it is killed).
"""

import dataclasses
import json
import sys

import xxhash

import tensorstore as ts


def main() -> None:
    store, cache, models = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    s = ts.open(store, "r", shared_cache=cache, shared_cache_bytes="64MiB")
    with s.reader() as r:
        loaded = {m: r.load_model(m) for m in models}
    digests = {f"{m}/{k}": xxhash.xxh3_64_hexdigest(v.tobytes()) for m, t in loaded.items() for k, v in t.items()}
    print(json.dumps({"stats": dataclasses.asdict(s.cache_stats().shared), "digests": digests}), flush=True)
    if "--hold" in sys.argv:
        sys.stdin.read()


if __name__ == "__main__":
    main()
