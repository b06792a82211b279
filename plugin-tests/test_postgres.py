"""Two LSP nodes sharing one PostgreSQL order book, against real nodes.

l1 and l2 both run cln-lsps1 with `lsps1-db=postgres://...` on the same database and each
serves REST; l3 is the client buying a channel (its node id is the REST order's
`public_key`); l4 pays the invoice over its channel to l1. The order is created on l1, read
by id on l2, paid, and opened by l1 alone: each plugin drives only the orders its own node
sold. The per-address limit on unpaid REST orders counts the orders of both nodes.

PostgreSQL is a throw-away cluster started here from the distribution's binaries (Debian's
/usr/lib/postgresql/<version>/bin, or LSPS1_PG_BIN, or PATH). Without them the test is
SKIPPED with the reason, unless LSPS1_REQUIRE_POSTGRES=1, where that is a failure. Skipped
like the rest of this directory where lightningd, bitcoind or the plugin binary are missing.
"""
import ctypes
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from test_lifecycle import ORDER, pay_in_background
from lsps_util import (
    TIMEOUT,
    assert_no_broken,
    only_one,
    peer_channels,
    plugin_active,
    sync_blockheight,
    wait_for,
    wait_for_logged,
)

LSP_FUNDS_SAT = 10**7        # each LSP's wallet: well above the order
PAYER_CHANNEL_SAT = 10**6    # l4 -> l1, to pay the order with


# --- A throw-away PostgreSQL -------------------------------------------------------------------

def _pg_bin_dir():
    """The directory holding initdb and postgres: LSPS1_PG_BIN, PATH, or Debian's
    /usr/lib/postgresql/<version>/bin (newest version first)."""
    env = os.environ.get("LSPS1_PG_BIN")
    if env:
        return env if os.path.isfile(os.path.join(env, "initdb")) else None
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres")):
            # Debian links the server into PATH; its own directory has createdb too.
            return os.path.dirname(os.path.realpath(os.path.join(d, "initdb")))
    try:
        versions = os.listdir("/usr/lib/postgresql")
    except OSError:
        return None
    dirs = [os.path.join("/usr/lib/postgresql", v, "bin") for v in versions]
    dirs = [d for d in dirs if os.path.isfile(os.path.join(d, "initdb"))]

    def version(d):
        v = os.path.basename(os.path.dirname(d))
        return [int(p) if p.isdigit() else 0 for p in v.split(".")]
    return max(dirs, key=version) if dirs else None


def _server_user():
    """(uid, gid) to run the server as, or None: PostgreSQL refuses to run as root, so
    under root it runs as the `postgres` user the Debian package creates."""
    if os.getuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no `postgres` user to run the server as")
    return pw.pw_uid, pw.pw_gid


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A cluster in a temporary directory, listening on a loopback port (and a unix
    socket in that directory), with trust authentication for user lsps1."""

    def __init__(self, bin_dir, user):
        self.bin_dir = bin_dir
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="lsps1-pg-")
        if user is not None:
            os.chown(self.dir, *user)
            os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = _free_port()
        self.proc = None

    def _preexec(self):
        user = self.user

        def run():
            if user is not None:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            # After the credentials change (which clears it): the server goes when this
            # process does, so no test run leaves one behind.
            try:
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        return run

    def _run(self, name, *args, **kw):
        env = dict(os.environ, LC_ALL="C")
        return subprocess.run([os.path.join(self.bin_dir, name)] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=self.dir,
                              preexec_fn=self._preexec(), timeout=60, **kw)

    def log_tail(self):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def start(self):
        out = self._run("initdb", "-D", self.data, "-U", "lsps1", "--auth=trust", "--no-sync",
                        "-E", "UTF8", "--locale=C")
        if out.returncode != 0:
            raise RuntimeError("initdb failed: " + out.stderr.decode(errors="replace"))
        log = open(self.log, "wb")
        if self.user is not None:
            os.chown(self.log, *self.user)
        self.proc = subprocess.Popen(
            [os.path.join(self.bin_dir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            env=dict(os.environ, LC_ALL="C"), cwd=self.dir, preexec_fn=self._preexec())
        log.close()
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited ({}): {}".format(self.proc.returncode, self.log_tail()))
            if time.time() > deadline:
                raise RuntimeError("postgres did not listen within 30 s: " + self.log_tail())
            time.sleep(0.05)

    def create_db(self, name):
        """createdb `name`; returns its URL over the loopback port."""
        deadline = time.time() + 10
        while True:
            out = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "lsps1", name)
            if out.returncode == 0:
                return "postgres://lsps1@127.0.0.1:{}/{}".format(self.port, name)
            # Listening already, but maybe still refusing startup packets for a moment.
            if time.time() > deadline:
                raise RuntimeError("createdb {}: {}".format(name, out.stderr.decode(errors="replace")))
            time.sleep(0.2)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _unavailable(reason):
    if os.environ.get("LSPS1_REQUIRE_POSTGRES") == "1":
        pytest.fail("LSPS1_REQUIRE_POSTGRES=1 but PostgreSQL cannot run here: " + reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres():
    """One PostgreSQL server for this module, stopped at its end."""
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries{} (apt-get install postgresql, or set LSPS1_PG_BIN)".format(
            " in LSPS1_PG_BIN={}".format(os.environ["LSPS1_PG_BIN"]) if os.environ.get("LSPS1_PG_BIN") else ""))
    try:
        user = _server_user()
    except RuntimeError as e:
        _unavailable(str(e))
    pg = Postgres(bin_dir, user)
    try:
        pg.start()
    except Exception:
        pg.stop()
        raise
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(postgres, request):
    """A fresh database for each test: pyln's node ids repeat from test to test, so a
    shared one would show a test the orders of the previous one as its own."""
    return postgres.create_db("t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50])


# --- REST ----------------------------------------------------------------------------------------

def http(base, path, body=None):
    """(status, parsed JSON or text) of one REST request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def rest_ok(base, path, body=None):
    status, got = http(base, path, body)
    assert status == 200, (path, status, got)
    return got


def rest_funded(base):
    """The LSP's wallet funds show in get_info (the plugin caches them), so orders can be made."""
    info = rest_ok(base, "/get_info")
    return int(info["max_initial_lsp_balance_sat"]) > int(info["min_initial_lsp_balance_sat"])


def listed_ids(node, **params):
    res = node.rpc.call("lsps1-listorders", params)
    assert isinstance(res.get("orders"), list), res
    return [o["order_id"] for o in res["orders"]]


# --- Test ----------------------------------------------------------------------------------------

def test_two_nodes_share_one_order_book(node_factory, executor, bitcoind, lsps1_bin, pg_url):
    """An order sold by l1 is read by id on l2 (CREATED, then COMPLETED), opened by l1
    only, listed by l2 only with all_nodes; the unpaid-orders-per-IP limit spans both."""
    from pyln.testing.utils import reserve_unused_port

    ports = [reserve_unused_port(), reserve_unused_port()]
    lsp = [{
        "plugin": lsps1_bin,
        "lsps1-db": pg_url,
        "lsps1-rest-bind": "127.0.0.1:{}".format(port),
        "lsps1-rest-max-unpaid-orders-per-ip": 1,
        "may_reconnect": True,
    } for port in ports]
    # Started together (get_nodes starts them in parallel): both plugins migrate the
    # fresh database at once, which the schema lock must serialize.
    l1, l2, l3, l4 = node_factory.get_nodes(4, opts=lsp + [{"may_reconnect": True}, {"may_reconnect": True}])
    base1, base2 = ["http://127.0.0.1:{}/api/v1".format(p) for p in ports]

    # 1. Both plugins run on the shared store.
    for node, port in ((l1, ports[0]), (l2, ports[1])):
        wait_for(lambda: plugin_active(node, lsps1_bin))
        # The URL carries no password, so it is logged as given.
        wait_for_logged(node, r"cln-lsps1 serving LSPS1 .*\(store PostgreSQL {},".format(re.escape(pg_url)))
        wait_for_logged(node, r"REST API listening on http://127.0.0.1:{}/api/v1/".format(port))
        st = node.rpc.call("lsps1-status", {})
        assert isinstance(st, dict), st

    # l2 is funded too, so that it could open the channel if it wrongly drove l1's order.
    l1.fundwallet(LSP_FUNDS_SAT)
    l2.fundwallet(LSP_FUNDS_SAT)
    l4.fundchannel(l1, PAYER_CHANNEL_SAT)
    # The client is connected to both LSPs: either could open to it.
    for lsp_node in (l1, l2):
        l3.rpc.connect(lsp_node.info["id"], "localhost", lsp_node.port)
    sync_blockheight(bitcoind, [l1, l2, l3, l4])
    wait_for(lambda: rest_funded(base1))

    # 2. Sold on l1 over REST for l3; l2 reads the same order by id.
    order = rest_ok(base1, "/create_order", dict(ORDER, public_key=l3.info["id"]))
    oid = order["order_id"]
    assert order["order_state"] == "CREATED" and order["payment"]["bolt11"]["state"] == "EXPECT_PAYMENT", order
    assert l4.rpc.decode(order["payment"]["bolt11"]["invoice"])["payee"] == l1.info["id"], order
    assert rest_ok(base2, "/get_order?order_id={}".format(oid)) == order

    # 3. Paid on l1: l1 holds the payment, opens, settles; l2 does nothing.
    paid = pay_in_background(executor, l4, order).result(TIMEOUT)
    assert paid["status"] == "complete", paid
    ch = only_one(peer_channels(l1, l3))
    assert ch["opener"] == "local", ch
    assert int(ch["funding"]["local_funds_msat"]) == int(ORDER["lsp_balance_sat"]) * 1000, ch
    assert peer_channels(l2, l3) == []
    assert [c["peer_id"] for c in l3.rpc.listpeerchannels()["channels"]] == [l1.info["id"]]
    got = rest_ok(base2, "/get_order?order_id={}".format(oid))
    assert got["order_state"] == "COMPLETED" and got["payment"]["bolt11"]["state"] == "PAID", got
    assert got["channel"]["funding_outpoint"] == "{}:{}".format(ch["funding_txid"], ch["funding_outnum"]), (got, ch)
    assert rest_ok(base1, "/get_order?order_id={}".format(oid)) == got

    # 4. The operator's list is per node unless all_nodes is asked for.
    assert listed_ids(l1) == [oid]
    assert listed_ids(l2) == []
    assert listed_ids(l2, all_nodes=True) == [oid]
    assert listed_ids(l2, all_nodes=True, state="COMPLETED") == [oid]

    # 5. One unpaid REST order from 127.0.0.1 on l1 uses up the limit (1) on l2 as well.
    unpaid = rest_ok(base1, "/create_order", dict(ORDER, public_key=l3.info["id"]))
    status, body = http(base2, "/create_order", dict(ORDER, public_key=l3.info["id"]))
    assert status == 403, (status, body)
    assert "unpaid" in body["message"], body
    assert sorted(listed_ids(l2, all_nodes=True)) == sorted([oid, unpaid["order_id"]])
    assert listed_ids(l2) == []

    assert_no_broken(l1)
    assert_no_broken(l2)
