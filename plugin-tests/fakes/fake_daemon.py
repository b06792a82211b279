#!/usr/bin/env python3
"""Stand-ins for bitcoind, bitcoin-cli, lightningd and lightning-cli, just enough
for contrib/startup_regtest.sh's `start`, `status` and `stop` to run without real
nodes (test_contrib.py::test_start_returns_with_output_captured).

What matters is how the daemons start: like the real ones, `bitcoind -daemon` and
`lightningd --daemon` fork, the parent exits once the child is up, and the child
keeps every descriptor it inherited. A script that starts them with its own
stdout/stderr therefore never lets a reader of its output see the end of file.

Which program to be is taken from the name it is called by (the files beside
this one are links to it). State lives in the data directories the script gives.
"""
import json
import os
import signal
import sys
import time

NODE_IDS = {
    "l1": "02" + "11" * 32,
    "l2": "03" + "22" * 32,
}


def opt(args, name):
    """The value of `-name=...`/`--name=...` in args, or None."""
    for a in args:
        for prefix in ("-" + name + "=", "--" + name + "="):
            if a.startswith(prefix):
                return a[len(prefix):]
    return None


def read_config(path):
    conf = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    conf.setdefault(k, v)
    except OSError:
        pass
    return conf


def alive(pidfile):
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def daemonize(pidfile, logfile=None):
    """Fork like the real daemons: the parent returns (exit 0) once the child
    wrote its pid file; the child keeps the inherited descriptors and runs until
    SIGTERM."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        os.read(r, 1)
        sys.exit(0)
    os.close(r)
    os.setsid()
    with open(pidfile, "w") as f:
        f.write("{}\n".format(os.getpid()))
    if logfile:
        with open(logfile, "a") as f:
            f.write("fake daemon started\n")
    os.write(w, b"x")
    os.close(w)
    signal.signal(signal.SIGTERM, lambda *_: (os.unlink(pidfile) if os.path.exists(pidfile) else None,
                                              os._exit(0)))
    # Deliberately no close of stdin/stdout/stderr here: that is the point.
    while True:
        time.sleep(1)


def stop(pidfile):
    pid = alive(pidfile)
    if pid is None:
        return 1
    os.kill(pid, signal.SIGTERM)
    return 0


def height(btc_dir):
    try:
        with open(os.path.join(btc_dir, "height")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def bitcoind(args):
    datadir = opt(args, "datadir")
    pidfile = opt(args, "pid") or os.path.join(datadir, "bitcoind.pid")
    if "-daemon" in args:
        daemonize(pidfile)
    return 2


def bitcoin_cli(args):
    datadir = opt(args, "datadir")
    rest = [a for a in args if not a.startswith("-")]
    pidfile = os.path.join(datadir, "bitcoind.pid")
    if alive(pidfile) is None:
        print("error: Could not connect to the server", file=sys.stderr)
        return 1
    cmd = rest[0] if rest else ""
    if cmd == "stop":
        print("Bitcoin Core stopping")
        return stop(pidfile)
    if cmd == "generatetoaddress":
        h = height(datadir) + int(rest[1])
        with open(os.path.join(datadir, "height"), "w") as f:
            f.write(str(h))
        print(json.dumps(["00" * 32] * int(rest[1])))
        return 0
    if cmd == "getblockcount":
        print(height(datadir))
        return 0
    if cmd in ("getblockchaininfo", "createwallet"):
        print(json.dumps({"chain": "regtest", "blocks": height(datadir)}))
        return 0
    print("error: method not found: {}".format(cmd), file=sys.stderr)
    return 1


def lightningd(args):
    if "--help" in args:
        print("Usage: lightningd\n--network <arg>  Select the network")
        return 0
    ldir = opt(args, "lightning-dir")
    conf = read_config(os.path.join(ldir, "config"))
    if "--daemon" in args:
        daemonize(conf.get("pid-file", os.path.join(ldir, "lightningd.pid")), conf.get("log-file"))
    return 2


def flat(value, prefix=""):
    """lightning-cli -F: key=value lines."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flat(v, "{}.{}".format(prefix, k) if prefix else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flat(v, "{}[{}]".format(prefix, i))
    else:
        yield "{}={}".format(prefix, value)


def lightning_cli(args):
    ldir = opt(args, "lightning-dir")
    conf = read_config(os.path.join(ldir, "config"))
    if alive(conf.get("pid-file", "")) is None:
        print("lightning-cli: Connecting to 'lightning-rpc': Connection refused", file=sys.stderr)
        return 1
    words = [a for a in args if not a.startswith("-")]
    cmd = words[0] if words else ""
    node = os.path.basename(ldir.rstrip("/"))
    h = height(conf.get("bitcoin-datadir", ""))
    if cmd == "getinfo":
        host, port = conf.get("addr", "127.0.0.1:0").rsplit(":", 1)
        out = {"id": NODE_IDS.get(node, NODE_IDS["l1"]), "blockheight": h,
               "binding": [{"type": "ipv4", "address": host, "port": int(port)}]}
    elif cmd == "newaddr":
        out = {"p2tr": "bcrt1p" + "q" * 58}
    elif cmd == "listfunds":
        out = {"outputs": [{"amount_msat": 5000000000000, "status": "confirmed"}], "channels": []}
    elif cmd == "connect":
        out = {"id": words[1].split("@")[0], "features": "", "direction": "out"}
    elif cmd == "waitblockheight":
        out = {"blockheight": h}
    elif cmd == "stop":
        stop(conf["pid-file"])
        out = "Shutdown complete"
    else:
        print('{{"code": -32601, "message": "Unknown command \'{}\'"}}'.format(cmd), file=sys.stderr)
        return 1
    if "-F" in args:
        print("\n".join(flat(out)))
    else:
        print(json.dumps(out))
    return 0


def main():
    name = os.path.basename(sys.argv[0])
    run = {"bitcoind": bitcoind, "bitcoin-cli": bitcoin_cli,
           "lightningd": lightningd, "lightning-cli": lightning_cli}.get(name)
    if run is None:
        print("fake_daemon.py: call me as bitcoind, bitcoin-cli, lightningd or lightning-cli",
              file=sys.stderr)
        return 2
    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
