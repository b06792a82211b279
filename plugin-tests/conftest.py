"""pyln-testing setup for the cln-lsps1 integration tests.

These tests start real ``bitcoind`` (regtest) and ``lightningd`` processes, the
way Core Lightning's own ``tests/`` do. Where either is not on PATH, or the
plugin binary is not built, every test in this directory is reported SKIPPED
(with the reason) instead of failing, so ``pytest plugin-tests`` always
collects cleanly.

Environment:
- ``CLN_LSPS1_BIN``: the plugin binary to load (default:
  ``<repo>/target/debug/cln-lsps1``; build it with ``cargo build``).
- pyln-testing's own knobs apply too: ``TEST_DIR`` (where node directories
  go, default /tmp), ``TIMEOUT`` (seconds, default 60), ``SLOW_MACHINE=1``,
  ``TEST_DEBUG=1``, ``VALGRIND=1``.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

try:
    # Provides node_factory, bitcoind, executor, directory, teardown_checks, ...
    from pyln.testing.fixtures import *  # noqa: F401,F403
    PYLN_IMPORT_ERROR = None
except ImportError as e:  # collection must still work; every test is skipped below
    PYLN_IMPORT_ERROR = e

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
CLIENT_PLUGIN = HERE / "plugins" / "lsps_client.py"
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "cln-lsps1"

# lightningd starts plugins/lsps_client.py through "#!/usr/bin/env python3": make
# sure that resolves to *this* interpreter (the venv that has pyln-client), even
# when pytest was started as /path/to/venv/bin/python -m pytest without
# activating the venv. Nodes copy os.environ when they are created.
_venv_bin = os.path.dirname(os.path.abspath(sys.executable))
if _venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _venv_bin + os.pathsep + os.environ.get("PATH", "")


def lsps1_bin_path() -> Path:
    env_bin = os.environ.get("CLN_LSPS1_BIN")
    return Path(env_bin).resolve() if env_bin else DEFAULT_BIN


def _skip_reason():
    """Why these tests cannot run here, or None if they can."""
    problems = []
    if PYLN_IMPORT_ERROR is not None:
        problems.append(
            "pyln-testing is not importable ({}); pip install -r plugin-tests/requirements.txt"
            .format(PYLN_IMPORT_ERROR))
    missing = [b for b in ("lightningd", "bitcoind", "bitcoin-cli") if shutil.which(b) is None]
    if missing:
        problems.append(
            "needs Core Lightning and Bitcoin Core on PATH; not found: {}".format(", ".join(missing)))
    binary = lsps1_bin_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        problems.append(
            "plugin binary {} is not built (run `cargo build`, or set CLN_LSPS1_BIN)".format(binary))
    return "; ".join(problems) or None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "no_rig: runs without lightningd/bitcoind (stand-ins or nothing at all)")


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason is None:
        return
    if os.environ.get("LSPS1_REQUIRE_RIG") == "1":
        # CI has the real-node rig: a test that would skip is a failure there.
        raise pytest.UsageError("LSPS1_REQUIRE_RIG=1 but the real-node tests cannot run: " + reason)
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("no_rig") is not None:
            continue
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(marker)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # pyln-testing's `directory` fixture reads item.rep_call to decide whether
    # to keep a failed test's node directories (as Core Lightning's conftest does).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def lsps1_bin():
    """Absolute path (str) of the cln-lsps1 plugin binary under test."""
    return str(lsps1_bin_path())


@pytest.fixture(scope="session")
def client_plugin():
    """Absolute path (str) of the Python LSPS0 client plugin."""
    return str(CLIENT_PLUGIN)
