"""contrib/startup_regtest.sh against real nodes.

Runs the playground script the way a person does (`start`, its `lsps-call`
helper, `fund-client`, `stop`) in a temporary directory and on its own port
range, so that it never meets another playground or the pyln nodes. Skipped
like the rest of this directory (conftest.py) where lightningd, bitcoind or
the plugin binary are missing. The script gets the debug binary the other
tests use (CLN_LSPS1_BIN) and `--no-build`.

test_start_returns_with_output_captured needs no real nodes: it puts stand-in
daemons (fakes/) first on PATH, which fork and keep inherited descriptors the
way bitcoind and lightningd do, and checks that `start` and `stop` return
while their output goes to a pipe.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lsps_util import GET_INFO_SATS

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "fakes"
SCRIPT = REPO_ROOT / "contrib" / "startup_regtest.sh"
PORT_COUNT = 9  # LSPS1_REGTEST_PORT_BASE .. +8 (see the script's header)


def _ports_free(base):
    for port in range(base, base + PORT_COUNT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port_base():
    """A base whose 9 ports are free, away from the script's default (19850)."""
    start = 24000 + (os.getpid() % 400) * 20
    for i in range(200):
        base = 24000 + (start - 24000 + i * 20) % 8000
        if _ports_free(base):
            return base
    pytest.fail("no free range of {} ports on 127.0.0.1".format(PORT_COUNT))


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "({})".format(e)


class Playground:
    def __init__(self, work_dir, port_base, plugin_bin):
        self.work_dir = work_dir
        self.port_base = port_base
        self.env = dict(os.environ,
                        LSPS1_REGTEST_DIR=work_dir,
                        LSPS1_REGTEST_PORT_BASE=str(port_base),
                        CLN_LSPS1_BIN=plugin_bin)
        self.env.pop("LSP_EXTRA_CONFIG", None)

    def describe(self, proc):
        return "\n".join([
            "{} exited {}".format(" ".join(proc.args), proc.returncode),
            "--- stdout:", proc.stdout, "--- stderr:", proc.stderr,
            "--- l1/log (tail):", _tail(os.path.join(self.work_dir, "l1", "log")),
            "--- l2/log (tail):", _tail(os.path.join(self.work_dir, "l2", "log")),
        ])

    def run(self, *args, timeout=300, check=True):
        proc = subprocess.run(
            ["bash", str(SCRIPT)] + list(args), env=self.env, cwd=str(REPO_ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            timeout=timeout)
        if check:
            assert proc.returncode == 0, self.describe(proc)
        return proc

    def lcli(self, n, *args, check=True):
        proc = subprocess.run(
            ["lightning-cli", "--lightning-dir={}/l{}".format(self.work_dir, n),
             "--network=regtest"] + list(args),
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=120)
        if not check and proc.returncode != 0:
            return None
        assert proc.returncode == 0, self.describe(proc)
        return json.loads(proc.stdout)

    def pids(self):
        files = [os.path.join(self.work_dir, "bitcoin", "bitcoind.pid"),
                 os.path.join(self.work_dir, "l1", "lightningd.pid"),
                 os.path.join(self.work_dir, "l2", "lightningd.pid")]
        return [int(open(f).read().strip()) for f in files]


def _alive(pid):
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _short_tmp():
    # Short: lightningd's RPC socket path must fit in 108 bytes.
    return tempfile.mkdtemp(prefix="lsps1-contrib-", dir="/tmp" if os.path.isdir("/tmp") else None)


@pytest.mark.no_rig
def test_start_returns_with_output_captured():
    """`start` and `stop` return while their output goes to a pipe, although
    the daemons they start (stand-ins here) keep inherited descriptors open.

    Started with the script's own stdout/stderr, a daemon would hold the pipe
    open and subprocess.run would wait for an end of file until its timeout.
    """
    tmp = _short_tmp()
    work_dir = os.path.join(tmp, "rt")
    pg = Playground(work_dir, _free_port_base(), "/bin/true")
    pg.env["PATH"] = str(FAKES) + os.pathsep + pg.env.get("PATH", "")
    try:
        try:
            proc = pg.run("start", "--no-build", "--no-client-plugin", timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("`start` did not return within 30 s with its output captured: "
                        "a daemon kept the script's stdout/stderr open")
        assert "Regtest network is up" in proc.stdout, pg.describe(proc)
        pids = pg.pids()
        assert all(_alive(p) for p in pids), pids
        status = pg.run("status", timeout=30).stdout
        for what in ("bitcoind", "l1", "l2"):
            assert "{}: running".format(what) in status, status
        try:
            pg.run("stop", timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("`stop` did not return within 60 s with its output captured")
        assert not any(_alive(p) for p in pids), pids
    finally:
        pg.run("stop", check=False, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def playground(lsps1_bin):
    """A started playground; stopped and removed afterwards, whatever happened."""
    if shutil.which("lightning-cli") is None:
        pytest.skip("lightning-cli is not on PATH")
    tmp = _short_tmp()
    pg = Playground(os.path.join(tmp, "rt"), _free_port_base(), lsps1_bin)
    try:
        proc = pg.run("start", "--no-build", timeout=600)
        pg.start_stdout, pg.start_stderr = proc.stdout, proc.stderr
        yield pg
    finally:
        try:
            pg.run("stop", check=False, timeout=180)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _config_int(pg, n, name):
    """An integer option of node n, or None if this lightningd has no such option."""
    res = pg.lcli(n, "listconfigs", name, check=False)
    if res is None:
        return None
    return res["configs"][name]["value_int"]


def test_start_lsps_call_stop(playground):
    pg = playground
    assert "Regtest network is up" in pg.start_stdout, pg.start_stdout
    assert "cannot import pyln.client" not in pg.start_stderr, pg.start_stderr

    status = pg.run("status").stdout
    for what in ("bitcoind", "l1", "l2"):
        assert "{}: running".format(what) in status, status

    # Both nodes are up, on the ports derived from LSPS1_REGTEST_PORT_BASE.
    l1, l2 = pg.lcli(1, "getinfo"), pg.lcli(2, "getinfo")
    assert pg.port_base + 2 in [b.get("port") for b in l1["binding"]], l1
    assert pg.port_base + 3 in [b.get("port") for b in l2["binding"]], l2
    # Builds with cln-grpc / clnrest: each node has its own derived port.
    for n, info in ((1, l1), (2, l2)):
        grpc = _config_int(pg, n, "grpc-port")
        assert grpc in (None, pg.port_base + 3 + n), (n, grpc)
        rest = _config_int(pg, n, "clnrest-port")
        assert rest in (None, pg.port_base + 5 + n), (n, rest)

    # Node 2 is connected to node 1.
    peers = pg.lcli(2, "listpeers", l1["id"])["peers"]
    assert len(peers) == 1 and peers[0]["connected"], peers

    # The script's lsps-call helper: node 2 -> node 1 over LSPS0.
    resp = json.loads(pg.run("lsps-call", "lsps0.list_protocols").stdout)
    assert resp.get("jsonrpc") == "2.0" and "error" not in resp, resp
    assert resp["result"] == {"protocols": [1]}, resp

    resp = json.loads(pg.run("lsps-call", "lsps1.get_info", "{}").stdout)
    assert "error" not in resp, resp
    for k in GET_INFO_SATS:
        assert isinstance(resp["result"][k], str) and resp["result"][k].isdigit(), resp

    # -F: lightning-cli's flat output, as the printed hints use it.
    flat = pg.run("lsps-call", "-F", "lsps0.list_protocols").stdout.splitlines()
    assert "result.protocols[0]=1" in flat, flat

    pids = pg.pids()
    out = pg.run("stop", timeout=180).stdout
    assert "stopped" in out, out
    assert not any(_alive(p) for p in pids), pids
    status = pg.run("status").stdout
    for what in ("bitcoind", "l1", "l2"):
        assert "{}: stopped".format(what) in status, status

    pg.run("stop", "--clean", timeout=60)
    assert not os.path.exists(pg.work_dir)


def test_fund_client(playground):
    """fund-client gives node 2 a confirmed channel to node 1 (to pay orders with)."""
    pg = playground
    l1_id = pg.lcli(1, "getinfo")["id"]
    pg.run("fund-client", "500000", timeout=600)

    channels = pg.lcli(2, "listpeerchannels", l1_id)["channels"]
    normal = [c for c in channels if c["state"] == "CHANNELD_NORMAL" and c.get("opener") == "local"]
    assert len(normal) == 1, channels
    assert normal[0]["total_msat"] == 500000 * 1000, normal[0]

    height = pg.lcli(1, "getinfo")["blockheight"]
    pg.run("mine", "2")
    assert pg.lcli(1, "getinfo")["blockheight"] == height + 2
    assert pg.lcli(2, "getinfo")["blockheight"] == height + 2
