"""The S3 protocol end to end, against moto's S3 server on 127.0.0.1."""

import subprocess
import sys

import pytest
from remote_support import S3Server, family, same

import tensorstore as ts
from tensorstore import remote
from tensorstore.remote_objects import Objects, _Conflict


def test_push_pull_and_read_through_over_s3(tmp_path, s3):
    s3.create_bucket("hub")
    url = "s3://hub/team/models"
    fam = family()
    with ts.open(tmp_path / "a", "w", page_size="64KiB", block_bytes="4KiB") as s:
        for name, t in fam.items():
            s.add_model(name, t)
        assert s.push(url).generation == 1
    report = ts.pull(url, tmp_path / "b", ["full"])
    assert report.stored_bytes_fetched == {m["model"]: m for m in remote.remote_ls(url)["models"]}["full"]["stored_bytes"]
    with ts.open(tmp_path / "node", "a", remote=url) as s:
        assert same(s.load_model("grown"), fam["grown"])
    assert remote.verify_remote(url) == []


def test_s3_conditional_create_refuses_a_second_writer(s3):
    s3.create_bucket("cond")
    objects = Objects("s3://cond/x")
    objects.put("heads/a", b"1", create=True)
    with pytest.raises(_Conflict):
        objects.put("heads/a", b"2", create=True)
    assert objects.get("heads/a") == b"1"


def test_missing_bucket_is_a_one_line_error(tmp_path, s3):
    with ts.open(tmp_path / "a", "a") as s:
        s.add_model("m", family()["base"])
        with pytest.raises(ts.RemoteNotFoundError, match="bucket does not exist") as e:
            s.push("s3://no-such-bucket/x")
    assert "\n" not in str(e.value)
    done = subprocess.run([sys.executable, "-m", "tensorstore", "pull", "s3://no-such-bucket/x", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "bucket does not exist" in done.stderr
    assert not (tmp_path / "b").exists()


def test_wrong_credentials_are_a_one_line_error_that_names_no_secret(tmp_path, monkeypatch):
    server = S3Server(auth=True)  # checks signatures: no IAM user has these keys
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
        with pytest.raises(ts.RemoteAccessError, match="refused the credentials") as e:
            ts.pull("s3://hub/x", tmp_path / "b")
        assert isinstance(e.value, PermissionError) and "s3cr3t" not in str(e.value) and "\n" not in str(e.value)
    finally:
        server.stop()
