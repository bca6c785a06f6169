"""The fleet on two hosts: network namespaces as the hosts, real processes, real Redis.

Each "host" is a network namespace joined to the root namespace by a veth pair; its
services run under ``ip netns exec`` as the units run them (``python -m services.execution``
with an environment), and "losing the host" is SIGKILL to every process in it. The
exchange is the Binance stand-in, reached by the real python-binance code path at an
address of its own (:data:`VENUE_IP`), so a host cut off from the bus can still reach it.

* host loss: execution active on host A, standby on host B; A's processes are killed while
  orders flow; B takes over within the heartbeat TTL plus a second, and every order is
  placed at most once and reported exactly once (venue order log against
  ``execution.result``);
* partition: the master and the active execution on host A, the replica, three Sentinels
  and the standby execution elsewhere; A is cut off from them but still reaches the
  exchange; Sentinel promotes the replica; no order is sent from the minority side, and
  after the partition heals each order the majority side acknowledged is placed once.

Skipped, with the reason, where ``ip netns`` or ``redis-server`` is not available.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from tests.integration.bus.test_sentinel_failover import (
    DEPLOY,
    MASTER,
    entry,
    outcomes,
    sentinel_config,
    settle_all,
    until,
)

from quantum import localredis
from quantum.bus.envelope import encode, new_envelope
from quantum.bus.lease import Holder, lease_key
from quantum.bus.runner import publish
from quantum.contracts.streams import APPLY_RESULT
from quantum.observability.heartbeat import heartbeat_key, standby_key
from quantum.process.lifetime import die_with_parent
from quantum.replay.report import payloads
from quantum.risk import fleetstate
from quantum.standin.binance_rest import FuturesVenue

ROOT = Path(__file__).resolve().parents[3]
TTL_S = 3  # QT_HEARTBEAT_TTL_S of the services here: the lease's lifetime
CLAIM_INTERVAL_S = 0.5
# Addresses of this test process's own (two runs of the suite on one machine do not meet).
NET = f"10.{200 + os.getpid() % 50}"
VENUE_IP = f"{NET}.9.1"  # the stand-in exchange, on the root namespace's loopback
_TAG = f"{os.getpid() % 100_000}"


def _netns_works() -> str | None:
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = f"qtprobe{_TAG}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_WHY = _netns_works() or (None if localredis.server_binary() else "needs a redis-server binary")
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


def ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Host:
    """A network namespace with one veth link to the root namespace: ``root_ip`` on the
    root side, ``ip`` inside, and a route to the exchange at :data:`VENUE_IP`."""

    def __init__(self, name: str, index: int, work: Path) -> None:
        self.name = name
        self.ns = f"qt{_TAG}{name}"
        self.root_if, self.inner_if = f"qr{_TAG}{name}", f"qh{_TAG}{name}"
        self.subnet = f"{NET}.{index}.0/30"
        self.root_ip, self.ip = f"{NET}.{index}.1", f"{NET}.{index}.2"
        self.work = work / f"host-{name}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        ip("netns", "add", self.ns)
        ip("link", "add", self.root_if, "type", "veth", "peer", "name", self.inner_if,
           "netns", self.ns)
        ip("addr", "add", f"{self.root_ip}/30", "dev", self.root_if)
        ip("link", "set", self.root_if, "up")
        ip("-n", self.ns, "addr", "add", f"{self.ip}/30", "dev", self.inner_if)
        ip("-n", self.ns, "link", "set", self.inner_if, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "route", "add", f"{VENUE_IP}/32", "dev", self.inner_if)

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(self.work / log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    preexec_fn=die_with_parent(signal.SIGKILL))
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    def lose(self) -> int:
        """The host is gone: SIGKILL every process in it (no clean stop, no lease release)."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(10)  # reaped: a zombie would still look alive
        return len(pids)

    def cut_off(self) -> None:
        """A partition: nothing from this host reaches the other hosts' network any more
        (its route there is gone); the exchange (its own route) still answers."""
        ip("-n", self.ns, "route", "del", self.subnet, "dev", self.inner_if)

    def heal(self) -> None:
        ip("-n", self.ns, "route", "add", self.subnet, "dev", self.inner_if, "src", self.ip)

    def log(self, name: str) -> str:
        path = self.work / name
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""

    def remove(self) -> None:
        self.lose()
        ip("netns", "del", self.ns, check=False)
        ip("link", "del", self.root_if, check=False)


@pytest.fixture
def venue() -> Iterator[FuturesVenue]:
    ip("addr", "add", f"{VENUE_IP}/32", "dev", "lo", check=False)
    try:
        with FuturesVenue(prices={"BTCUSDT": 60_000.0}, balance=100_000.0,
                          host="0.0.0.0") as running:
            yield running
    finally:
        ip("addr", "del", f"{VENUE_IP}/32", "dev", "lo", check=False)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Host]]:
    made: dict[str, Host] = {}
    try:
        for index, name in ((1, "a"), (2, "b")):
            made[name] = Host(name, index, tmp_path)
        yield made
    finally:
        for host in made.values():
            host.remove()


def _port(url: str) -> str:
    return url.rstrip("/").rsplit(":", 1)[1]


def execution_env(venue: FuturesVenue, redis_url: str, instance: str, work: Path,
                  venue_host: str) -> dict[str, str]:
    """Execution's environment, as its env files give it (nothing of the test's own)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("QT_")}
    env.update({
        "PYTHONPATH": str(ROOT),
        "QT_REDIS_URL": redis_url,
        "QT_INSTANCE": instance,
        "QT_CLOCK": "wall",
        "QT_LOG_LEVEL": "info",
        "QT_METRICS_PORT": "0",
        "QT_BLOCK_MS": "50",
        "QT_HEARTBEAT_TTL_S": str(TTL_S),
        "QT_CLAIM_IDLE_MS": "1000",
        "QT_CLAIM_INTERVAL_S": str(CLAIM_INTERVAL_S),
        "QT_REPLICA_WAIT_MS": "500",
        "QT_EXCHANGE": "binance",
        "QT_BINANCE_API_KEY": venue.account.api_key,
        "QT_BINANCE_API_SECRET": venue.account.api_secret,
        "QT_BINANCE_REST_URL": f"http://{venue_host}:{_port(venue.rest_url)}",
        "QT_BINANCE_WS_URL": f"ws://{venue_host}:{_port(venue.ws_url)}/",
        "QT_BINANCE_POLL_INTERVAL_S": "0.2",
        "QT_BINANCE_TIMEOUT_S": "2",
        "QT_BINANCE_RECV_WINDOW_MS": "300",
        # An order the exchange does not know is declared not placed after recvWindow and
        # this margin (60 s in production; short so the test stays bounded).
        "QT_BINANCE_UNKNOWN_ORDER_MARGIN_S": "0.5",
        "QT_PROTECTIVE_ORDERS": "false",
        "QT_BOOK_RECORD_DIR": str(work / f"book-{instance}"),
    })
    return env


EXECUTION = [sys.executable, "-m", "services.execution"]


def holder(client: redis.Redis) -> str | None:
    raw = client.get(lease_key("execution"))
    return None if raw is None else Holder.parse(raw).consumer


def account(venue: FuturesVenue, client: redis.Redis, orders: list[Any]) -> dict[str, int]:
    """Every order accounted for exactly once: placed at most once at the venue, one
    fill if placed, one reject (declared not placed) if not, no report twice."""
    seen = outcomes(client)
    placed = Counter(o["clientOrderId"] for o in venue.snapshot()["order_log"])
    figures = {"placed": 0, "not_placed": 0}
    for order in orders:
        cid = order.client_order_id
        kinds = seen[cid]
        assert all(n == 1 for n in kinds.values()), (cid, kinds)
        assert placed[cid] <= 1, (cid, placed[cid])
        if placed[cid]:
            assert kinds["fill"] == 1 and kinds["reject"] == 0, (cid, kinds)
            figures["placed"] += 1
        else:
            assert kinds["reject"] == 1 and kinds["fill"] == 0, (cid, kinds)
            figures["not_placed"] += 1
    assert set(placed) <= {o.client_order_id for o in orders}
    return figures


def order_entry(i: int) -> dict[str, str | bytes]:
    order = entry(i)
    return encode(new_envelope(order, ts=int(time.time() * 1000), source="test",
                               key=order.plan_id))


# --- host loss ------------------------------------------------------------------------


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis both hosts reach at their root-side addresses (and the test on loopback)."""
    binary = localredis.server_binary()
    assert binary is not None
    port = localredis.free_port()
    work = tmp_path / "redis"
    work.mkdir()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", f"{NET}.1.1",
                             f"{NET}.2.1", "--protected-mode", "no", "--dir", str(work),
                             "--save", "", "--appendonly", "no",
                             "--logfile", str(work / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent(signal.SIGKILL))
    try:
        until("the bus answering", lambda: redis.Redis(port=port, socket_timeout=1).ping(), 10)
        yield port, proc
    finally:
        proc.kill()
        proc.wait(10)


def test_losing_the_active_host_hands_execution_to_the_standby_without_a_duplicate(
        hosts: dict[str, Host], venue: FuturesVenue, bus: tuple[int, Any],
        tmp_path: Path) -> None:
    a, b = hosts["a"], hosts["b"]
    port, _ = bus
    client = redis.Redis(port=port, socket_timeout=5)
    fleetstate.initialise(client, "pytest")
    a.spawn(EXECUTION, execution_env(venue, f"redis://{a.root_ip}:{port}/0", "a", tmp_path,
                                     VENUE_IP), "execution.log")
    until("execution active on host A", lambda: holder(client) == "execution-a"
          and client.exists(heartbeat_key("execution")), 60)
    b.spawn(EXECUTION, execution_env(venue, f"redis://{b.root_ip}:{port}/0", "b", tmp_path,
                                     VENUE_IP), "execution.log")
    until("execution standing by on host B",
          lambda: client.hexists(standby_key("execution"), "execution-b"), 60)
    orders = [entry(i) for i in range(24)]
    lost_at = taken_at = 0.0
    killed = 0
    try:
        for i, order in enumerate(orders):
            publish(client, [(APPLY_RESULT, new_envelope(order, ts=int(time.time() * 1000),
                                                         source="test", key=order.plan_id))])
            if i == 11:  # orders in flight on host A when it goes
                killed = a.lose()
                lost_at = time.monotonic()
                until("host B holding the lease", lambda: holder(client) == "execution-b",
                      TTL_S + 15, every=0.02)
                taken_at = time.monotonic()
            else:
                time.sleep(0.1)
        recovered_at = settle_all(client, orders, orders[12], 60)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- host A ---\n{a.log('execution.log')}\n"
                             f"--- host B ---\n{b.log('execution.log')}") from None
    figures = account(venue, client, orders)
    takeover_s = taken_at - lost_at
    assert killed >= 1
    # The standby takes over once the lease lapses: the TTL, its one-second renewal, and
    # slack for a loaded two-core machine.
    assert takeover_s <= TTL_S + CLAIM_INTERVAL_S + 3, takeover_s
    assert "lease_acquired" in b.log("execution.log")
    print(f"\nhost loss: lease taken over {takeover_s:.2f} s after the kill (TTL {TTL_S} s), "
          f"first order after it settled {recovered_at - lost_at:.2f} s after; "
          f"placed {figures['placed']}/{len(orders)}, declared not placed "
          f"{figures['not_placed']}, duplicated 0")


# --- partition ------------------------------------------------------------------------


class NsNode:
    """A ``redis-server`` (data node or Sentinel) on ``host`` (None: the root namespace),
    listening on loopback and ``address``."""

    def __init__(self, name: str, work: Path, address: str, host: Host | None) -> None:
        self.name, self.address, self.host = name, address, host
        self.port = localredis.free_port()
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str]) -> None:
        binary = localredis.server_binary()
        assert binary is not None
        # No password on these test nodes: protected mode would refuse the other hosts.
        argv = [binary, *args, "--port", str(self.port), "--bind", "127.0.0.1", self.address,
                "--protected-mode", "no", "--dir", str(self.work),
                "--logfile", str(self.work / "server.log")]
        if self.host is not None:
            self.proc = self.host.spawn(argv, dict(os.environ), f"{self.name}.out")
        else:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL,
                                         preexec_fn=die_with_parent(signal.SIGKILL))
        until(f"{self.name} answering", lambda: self.client(0.3).ping(), 10)

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host=self.address, port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def on_host(host: Host, code: str, *args: str) -> str:
    """Run Python on ``host`` (as a stage there would act) and return its output."""
    done = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", code, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout


PUBLISH_ON_A = """
import sys, orjson, redis
r = redis.Redis(port=int(sys.argv[1]), socket_timeout=5)
fields = orjson.loads(sys.argv[2])
r.xadd(sys.argv[3], {k: v.encode() if isinstance(v, str) else v for k, v in fields.items()})
print(r.execute_command("WAIT", 1, 500))
"""


def test_a_master_partitioned_from_the_sentinels_accepts_no_order(
        hosts: dict[str, Host], venue: FuturesVenue, tmp_path: Path) -> None:
    a = hosts["a"]
    master_name = f"{MASTER}-{os.urandom(4).hex()}"
    work = tmp_path / "cluster"
    master = NsNode("master", work, a.ip, a)
    replica = NsNode("replica", work, a.root_ip, None)
    sentinels = [NsNode(f"sentinel-{i}", work, a.root_ip, None) for i in range(3)]
    nodes = [master, replica, *sentinels]
    try:
        for node in (master, replica):
            # Its own copy of the shipped files, as on a host: Sentinel has a node rewrite
            # its file (CONFIG REWRITE) when it changes the node's role.
            config = node.work / "redis.conf"
            config.write_text((DEPLOY / "redis.conf").read_text()
                              + f"include {DEPLOY / 'replication.conf'}\n")
        base = ["--repl-diskless-sync-delay", "0", "--save", "", "--appendonly", "no"]
        master.start([str(master.work / "redis.conf"), *base])
        replica.start([str(replica.work / "redis.conf"), *base,
                       "--replicaof", a.ip, str(master.port)])
        for node in sentinels:
            config = node.work / "sentinel.conf"
            config.write_text(sentinel_config(master_name, a.ip, master.port))
            node.start([str(config), "--sentinel"])
        url = ("redis+sentinel://" + ",".join(f"{a.root_ip}:{s.port}" for s in sentinels)
               + f"/{master_name}/0?socket_timeout=3")

        def promoted() -> bool:
            addr = sentinels[0].client().sentinel_get_master_addr_by_name(master_name)
            return int(addr[1]) == replica.port

        until("Sentinels watching the replica", lambda: all(
            any(int(r["port"]) == replica.port and not r["is_sdown"]
                for r in s.client().sentinel_slaves(master_name)) for s in sentinels), 30)
        setup = master.client()
        fleetstate.initialise(setup, "pytest")
        # The active execution on host A (beside the master), the standby on another host.
        a.spawn(EXECUTION, execution_env(venue, url, "a", tmp_path, VENUE_IP), "execution.log")
        until("execution active on host A", lambda: holder(setup) == "execution-a", 60)
        b_log = tmp_path / "execution-b.log"
        with open(b_log, "ab") as out:
            standby = subprocess.Popen(
                EXECUTION, env=execution_env(venue, url, "b", tmp_path, "127.0.0.1"),
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                preexec_fn=die_with_parent(signal.SIGKILL))
        try:
            until("execution standing by", lambda: setup.hexists(standby_key("execution"),
                                                                  "execution-b"), 60)
            setup.xadd(APPLY_RESULT.key, order_entry(1))  # type: ignore[arg-type]
            until("the first order filled",
                  lambda: outcomes(setup).get("qt-plan0001", {}).get("fill"), 30)
            a.cut_off()
            cut_at = time.monotonic()
            # A stage on host A hands execution an order on the minority master: it is
            # never confirmed by a replica, so it must never reach the exchange.
            fields = orjson.dumps({k: v.decode() if isinstance(v, bytes) else v
                                   for k, v in order_entry(2).items()}).decode()
            acked = on_host(a, PUBLISH_ON_A, str(master.port), fields, APPLY_RESULT.key)
            assert acked.strip() == "0"  # no replica holds it: nobody upstream was told "done"
            until("Sentinel promoting the replica", promoted, 30, every=0.1)
            promoted_at = time.monotonic()
            new_master = replica.client()
            # The majority side gets an order of its own.
            new_master.xadd(APPLY_RESULT.key, order_entry(3))  # type: ignore[arg-type]
            watch_until = time.monotonic() + 4
            while time.monotonic() < watch_until:  # cut off: nothing from A reaches the venue
                sent = [o["clientOrderId"] for o in venue.snapshot()["order_log"]]
                assert "qt-plan0002" not in sent, sent
                time.sleep(0.1)
            a.heal()
            until("the old master turned replica", lambda: any(
                isinstance(v, dict) and v.get("state") == "online"
                for k, v in new_master.info("replication").items() if k.startswith("slave")),
                40)
            # The majority side had no replica either until now: its order's intent was
            # held, then queried and declared not placed. The next one is placed.
            until("the majority side's held order declared not placed",
                  lambda: outcomes(new_master).get("qt-plan0003", {}).get("reject"), 60)
            new_master.xadd(APPLY_RESULT.key, order_entry(4))  # type: ignore[arg-type]
            until("an order after the heal filled",
                  lambda: outcomes(new_master).get("qt-plan0004", {}).get("fill"), 60)
            sent = [o["clientOrderId"] for o in venue.snapshot()["order_log"]]
            assert Counter(sent) == Counter({"qt-plan0001": 1, "qt-plan0004": 1}), sent
            assert outcomes(new_master)["qt-plan0003"] == Counter({"reject": 1})
            assert holder(new_master) == "execution-b"  # the majority side's instance
            # The cut-off instance rejoins as the standby once it reaches the new master.
            until("host A's execution standing by on the new master", lambda: time.time() - (
                orjson.loads(new_master.hget(standby_key("execution"), "execution-a") or b"{}")
                .get("ts") or 0) < TTL_S, 60)
            # The minority side's order went with the old master's writes: never sent,
            # never acknowledged, so nothing upstream counts on it.
            assert "qt-plan0002" not in outcomes(new_master)
            assert [p for p in payloads(new_master, APPLY_RESULT.key)
                    if p["client_order_id"] == "qt-plan0002"] == []
            print(f"\npartition: replica promoted {promoted_at - cut_at:.2f} s after the cut; "
                  f"orders sent from the minority side 0; majority order filled after heal")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- host A ---\n{a.log('execution.log')}\n"
                                 f"--- standby ---\n{b_log.read_text()[-4000:]}") from None
        finally:
            standby.kill()
            standby.wait(10)
    finally:
        a.lose()
        for node in nodes:
            node.stop()
