import os

import pytest

pytest.importorskip("obstore")

from remote_support import S3Server  # noqa: E402


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server's settings in this process's environment (obstore reads them there)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


_n = [0]


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path):
    """A fresh, empty remote of each local kind."""
    _n[0] += 1
    if request.param == "memory":
        return f"memory://test-{os.getpid()}-{_n[0]}"
    return (tmp_path / "remote").as_uri()
