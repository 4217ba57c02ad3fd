import os

from hypothesis import HealthCheck, settings

# CI machines are small and shared: no per-example deadline, fewer examples under CI.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")

# One BLAS / OpenMP thread in the tests and the processes they start (unless the caller set
# a count): the tests' matrices are small, and on a loaded 2-core machine threads that spin
# waiting for one another made the FAISS and numpy tests 3-4x slower (73 s against 19 s for
# tests/store/test_bench_compare.py and test_near_dedup.py at load 6). Set before numpy and
# FAISS load their thread pools; `make bench` (--benchmark-enable) keeps the machine's
# defaults, since its figures are what users get.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config):
    if config.getoption("benchmark_enable", default=False):
        return
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")
    from threadpoolctl import threadpool_limits

    config._thread_limits = threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))  # for libraries loaded already
