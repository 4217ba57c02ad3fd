"""The remote subcommands: push, pull, remote-ls, gc; errors are one line and exit 1."""

import json

from remote_support import family, same

import tensorstore as ts
from tensorstore.cli import main


def test_push_pull_ls_gc_from_the_command_line(tmp_path, capsys):
    url = (tmp_path / "remote").as_uri()
    fam = family()
    with ts.open(tmp_path / "a", "w", page_size="64KiB", block_bytes="4KiB") as s:
        for name, t in fam.items():
            s.add_model(name, t)
    assert main(["push", str(tmp_path / "a"), url, "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["generation"] == 1 and sorted(pushed["models"]) == sorted(fam)
    assert main(["push", str(tmp_path / "a"), url]) == 0
    assert "up to date at generation 1" in capsys.readouterr().out
    assert main(["remote-ls", url, "--json"]) == 0
    assert [m["model"] for m in json.loads(capsys.readouterr().out)["models"]] == sorted(fam)
    assert main(["pull", url, str(tmp_path / "b"), "--model", "full", "--model", "base"]) == 0
    assert "pulled 2 model(s)" in capsys.readouterr().out
    with ts.open(tmp_path / "b", "r") as s:
        assert sorted(s) == ["base", "full"] and same(s.load_model("full"), fam["full"])
    assert main(["gc", url, "--grace-minutes", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted_packs"] == 0  # everything is in use


def test_remote_errors_are_one_line_exit_1(tmp_path, capsys):
    url = (tmp_path / "remote").as_uri()
    assert main(["pull", url, str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tensorstore pull: error: no remote at") and err.count("\n") == 1
    assert main(["push", str(tmp_path / "missing"), url]) == 1
    assert "no store at" in capsys.readouterr().err
    with ts.open(tmp_path / "a", "a") as s:
        s.add_model("m", family()["base"])
    assert main(["push", str(tmp_path / "a"), "gopher://x/y"]) == 1
    assert "unknown scheme gopher://" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "a"), url]) == 0
    capsys.readouterr()
    assert main(["pull", url, str(tmp_path / "b"), "--model", "nope"]) == 1
    assert "no model 'nope' on the remote" in capsys.readouterr().err
    assert main(["gc", url, "--grace-minutes", "-1"]) == 1
