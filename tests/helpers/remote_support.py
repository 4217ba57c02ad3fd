"""Helpers of the remote tests: a model family, bit-exact comparison, moto's S3 server."""

import os
import socket
import subprocess
import sys
import time

import ml_dtypes
import numpy as np



def family(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A base model and fine-tunes of it: one touches only the head, one every weight a
    little (stored as deltas), one adds a tensor; mixed dtypes."""
    rng = np.random.default_rng(seed)
    base = {
        "embed": rng.standard_normal((96, 64)).astype(np.float32),
        "layer.w": rng.standard_normal((64, 64)).astype(np.float32),
        "layer.b": rng.standard_normal(64).astype(ml_dtypes.bfloat16),
        "head": rng.standard_normal((64, 10)).astype(np.float16),
        "steps": np.array(1000, np.int64),
    }
    head_only = dict(base, head=(base["head"] + rng.standard_normal((64, 10)).astype(np.float16)).astype(np.float16))
    full = {k: (v + (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype)).astype(v.dtype) if v.dtype.kind == "f" or k == "layer.b" else v
            for k, v in base.items()}
    grown = dict(base, extra=rng.integers(0, 255, (40, 40), dtype=np.uint8))
    return {"base": base, "head-only": head_only, "full": full, "grown": grown}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server in its own process on 127.0.0.1."""

    def __init__(self, auth: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if auth:  # moto then checks every request's signature against its IAM users (there are none)
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start")
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


