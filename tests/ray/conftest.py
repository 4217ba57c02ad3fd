import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole session (starting one takes seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_executor(ray_cluster):
    from tensorstore.ray_executor import RayExecutor

    ex = RayExecutor()  # joins the session's cluster; shutdown leaves it running
    yield ex
    ex.shutdown()
