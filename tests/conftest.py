"""Shared pytest fixtures.

Loopback Hub: ``pytest_configure`` starts one :class:`s3_hf.testing.hub_server.HubServer` for the session and sets
``HF_ENDPOINT`` / ``HF_HUB_DISABLE_XET=1`` / ``HF_TOKEN`` / ``HF_HOME`` *before* any test module imports
``huggingface_hub`` or ``datasets`` (both read ``HF_ENDPOINT`` at import time), so every Hub call of the suite goes
to 127.0.0.1 and the user's real token and cache are never touched. Keep this file free of top-level imports of
``datasets`` / ``huggingface_hub`` / ``transformers``.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

HUB_USER = "s3-tester"
HUB_TOKEN = "hf_s3_tester_write_token"
HUB_OTHER_USER = "someone-else"
HUB_OTHER_TOKEN = "hf_someone_else_token"

_hub_server = None
_hub_home = None


def pytest_configure(config):
    global _hub_server, _hub_home
    from s3_hf.testing.hub_server import HubServer

    _hub_server = HubServer(tokens={HUB_TOKEN: HUB_USER, HUB_OTHER_TOKEN: HUB_OTHER_USER}).start()
    _hub_home = tempfile.TemporaryDirectory(prefix="s3_hf_test_hf_home_")
    os.environ.update(_hub_server.client_env())
    os.environ["HF_TOKEN"] = HUB_TOKEN
    os.environ["HF_HOME"] = _hub_home.name
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.pop("HF_DATASETS_OFFLINE", None)


def pytest_unconfigure(config):
    global _hub_server, _hub_home
    if _hub_server is not None:
        _hub_server.stop()
        _hub_server = None
    if _hub_home is not None:
        _hub_home.cleanup()
        _hub_home = None


@pytest.fixture
def hub_server():
    """The session's loopback Hub; faults are cleared after each test. Check that the clients really point at it."""
    from huggingface_hub import constants

    if constants.ENDPOINT != _hub_server.url:
        pytest.fail(f"huggingface_hub was imported before conftest set HF_ENDPOINT ({constants.ENDPOINT})")
    _hub_server.clear_faults()
    yield _hub_server
    _hub_server.clear_faults()


@pytest.fixture
def hub_repo_id(hub_server) -> str:
    """A fresh dataset repo id in the test user's namespace (not created)."""
    return f"{HUB_USER}/s3-test-{uuid.uuid4().hex[:10]}"
