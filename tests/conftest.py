"""Shared pytest configuration.

`--backend {cpu,cuda}` (default cpu) selects the backend of backend-parametrised tests (fixture
`backend_name`). Unless it is `cuda` (a real GPU), numba's CUDA simulator is switched on here, at
conftest import time, before anything imports numba.cuda (numba reads the flag once, at import),
so the kernels.cuda tests run on CPU-only CI. CPU (njit) kernels are unaffected by the flag.
"""

from __future__ import annotations

import os
import sys


def _wants_real_cuda(argv: list[str]) -> bool:
    for i, a in enumerate(argv):
        if a == "--backend" and i + 1 < len(argv) and argv[i + 1] == "cuda":
            return True
        if a == "--backend=cuda":
            return True
    return False


if not _wants_real_cuda(sys.argv):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    """The `--backend` option."""
    parser.addoption(
        "--backend",
        action="store",
        default="cpu",
        choices=("cpu", "cuda"),
        help="array/kernel backend for backend-parametrised tests (cuda needs CuPy and a GPU)",
    )


@pytest.fixture(scope="session")
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend name given by `--backend` ("cpu" unless asked)."""
    return request.config.getoption("--backend")


@pytest.fixture(scope="session")
def small_config():
    """The factory `small_config(**over) -> TrainConfig` of the shared small trainer set-up."""
    sys.path.insert(0, os.path.dirname(__file__))
    from smallcfg import small_config as factory

    return factory
