"""SpamAssassin text extraction, labels and split, on synthetic emails (no npm needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tensorstore.corpora import spam

MULTIPART = """\
From: someone@example.com
Received: from mx.example.com by relay.example.org
Subject: Cheap =?utf-8?q?offer?= now
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"

--XX
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Buy one, get one fre=
e!
--XX
Content-Type: text/html; charset="iso-8859-1"

<html><head><style>p {color: red}</style><script>var x = 1;</script></head>
<body><p>Caf&eacute; &amp; <b>more</b></p></body></html>
--XX
Content-Type: image/gif
Content-Transfer-Encoding: base64

R0lGODlhAQABAAAAACw=
--XX--
"""


def test_clean_text_keeps_subject_and_readable_body_only():
    text = spam.clean_text(MULTIPART)
    assert text.startswith("Cheap offer now")  # RFC 2047 encoded word decoded
    assert "Buy one, get one free!" in text  # quoted-printable soft break undone
    assert "Café & more" in text  # tags gone, entities decoded
    for noise in ("Received", "relay.example.org", "<b>", "color: red", "var x", "R0lGOD"):
        assert noise not in text
    assert "  " not in text


def test_clean_text_survives_an_unknown_charset():
    raw = 'Subject: hi\nContent-Type: text/plain; charset="x-no-such-charset"\n\nhello there\n'
    assert spam.clean_text(raw) == "hi . hello there"


def test_labels_of_both_tasks():
    assert [spam.label("spam", f) for f in spam.FOLDERS] == [0, 0, 0, 1, 1]
    assert [spam.label("kind", f) for f in spam.FOLDERS] == [0, 0, 1, 2, 2]
    assert all(spam.TASKS[t][spam.label(t, "spam-2")] == "spam" for t in spam.TASKS)
    with pytest.raises(KeyError, match="unknown task"):
        spam.label("ham", "spam-1")


def _emails(per_folder: dict[str, int]) -> list[spam.Email]:
    return [spam.Email(f, f"{i:05d}", "") for f, n in per_folder.items() for i in range(n)]


def test_split_is_stratified_disjoint_and_fixed_by_seed():
    emails = _emails({f: 30 for f in spam.FOLDERS} | {"hard-ham-1": 7})
    heldout, train = spam.split(emails, heldout_per_folder=5, train_per_folder=10, seed=0)
    assert not set(heldout) & set(train)
    folders = np.array([e.folder for e in emails])
    assert {f: int((folders[heldout] == f).sum()) for f in spam.FOLDERS} == dict.fromkeys(spam.FOLDERS, 5)
    # hard-ham-1 runs out: 5 held out leave only 2 for training.
    assert {f: int((folders[train] == f).sum()) for f in spam.FOLDERS} == dict.fromkeys(spam.FOLDERS, 10) | {"hard-ham-1": 2}
    again = spam.split(emails, 5, 10, seed=0)
    other = spam.split(emails, 5, 10, seed=1)
    assert np.array_equal(again[0], heldout) and np.array_equal(again[1], train)
    assert not np.array_equal(other[0], heldout)


def test_corpus_path_without_download_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORSTORE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not cached"):
        spam.corpus_path(download=False)
