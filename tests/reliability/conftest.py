"""Fixtures of the reliability suite: tmpfs mounts, and the counts each test reports.

Every test that counts something (loads, kills, flips, fuzz examples) records it with the
``counts`` fixture; the counts are printed at the end of the run under
"reliability counts", so the figures in docs/reliability.md come from a plain pytest run
(with ``-q``, as ``make test`` runs, one line says how many there are).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_COUNTS: list[tuple[str, str, object]] = []


@pytest.fixture
def counts(request):
    """``counts(key, value)`` records a figure under the running test's name."""

    def record(key: str, value: object) -> None:
        _COUNTS.append((request.node.name, key, value))

    return record


def pytest_terminal_summary(terminalreporter):
    if not _COUNTS:
        return
    if terminalreporter.verbosity < 0:  # -q, as `make test` runs: one line, not forty
        tests = len({test for test, _, _ in _COUNTS})
        terminalreporter.write_line(f"reliability counts: {len(_COUNTS)} figures from {tests} tests "
                                    "(run without -q to print them)")
        return
    terminalreporter.section("reliability counts")
    for test, key, value in _COUNTS:
        terminalreporter.write_line(f"{test}: {key} = {value}")


def _mount_refusal() -> str | None:
    if os.geteuid() != 0:
        return "mounting needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command"
    return None


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size)``: a fresh tmpfs of ``size`` (e.g. "64m"), unmounted after the test.

    Skips the test when this machine refuses to mount (not root, or a sandbox without
    CAP_SYS_ADMIN), which is detected by trying.
    """
    mounted: list[Path] = []

    def mount(size: str, options: str = "") -> Path:
        reason = _mount_refusal()
        if reason:
            pytest.skip(reason)
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        opts = f"size={size}" + (f",{options}" if options else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        _unmount(target)


@pytest.fixture
def bind_read_only(tmp_path):
    """``bind_read_only(src)``: ``src`` seen through a read-only bind mount, unmounted after."""
    mounted: list[Path] = []

    def bind(src: Path) -> Path:
        reason = _mount_refusal()
        if reason:
            pytest.skip(reason)
        target = tmp_path / f"ro{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(["mount", "--bind", str(src), str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"bind mounts are not permitted here: {proc.stderr.strip()}")
        mounted.append(target)
        proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"remounting read-only is not permitted here: {proc.stderr.strip()}")
        return target

    yield bind
    for target in reversed(mounted):
        _unmount(target)


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)  # busy: detach lazily
    assert not os.path.ismount(target), f"{target} is still mounted"
