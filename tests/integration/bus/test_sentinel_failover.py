"""Redis replication with Sentinel: real servers, real Sentinels, the real runner.

A master, one replica and three Sentinels (``redis-server --sentinel``) on free loopback
ports in a temporary directory, as ``deploy/redis/`` sets them up on three hosts. The
clients are built by the fleet's factory (:func:`quantum.bus.connection.connect`) from a
``redis+sentinel://`` URL. Each test is bounded: every wait polls against a deadline.

* the factory follows a failover, nothing written before an acknowledged ``WAIT`` is
  lost, and ``quantumctl status`` names the master and flags one without a replica;
* execution on the real runner, sending to the Binance stand-in, while the master is
  killed: every order is accounted for exactly once (the venue's order log against
  ``apply.result`` and ``execution.result``);
* the master cut off from its replica (the minority side of a partition): the order's
  intent is never confirmed, so the order is never sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from quantum import localredis
from quantum.app import build_runner, build_service
from quantum.bus import connection
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import Runner, bus_unavailable, publish
from quantum.contracts.events import ExitPlan, OrderRequest, TakeProfit
from quantum.contracts.streams import APPLY_RESULT
from quantum.ctl.main import app
from quantum.observability.heartbeat import heartbeat_key
from quantum.process.lifetime import die_with_parent
from quantum.registry.fleet import FLEET_KEY
from quantum.replay.report import payloads
from quantum.risk import fleetstate
from quantum.standin.binance_rest import FuturesVenue
from services.execution.config import Settings

MASTER = "quantum"  # as deploy/redis/sentinel.conf names it
DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "redis"
PLAN = ExitPlan(profile="DEFAULT", stop_loss=58_000.0,
                take_profits=(TakeProfit(price=61_000.0, fraction=1.0),), atr=300.0)

pytestmark = pytest.mark.skipif(localredis.server_binary() is None,
                                reason="needs a redis-server binary")


def until(what: str, done: Callable[[], Any], seconds: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``done`` until it returns something true, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = done()
            if value:
                return value
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"not reached within {seconds} s: {what} (last error: {last!r})")


class Node:
    """One ``redis-server`` (data node or Sentinel) of the test cluster."""

    def __init__(self, name: str, workdir: Path, args: list[str]) -> None:
        self.name = name
        self.port = localredis.free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra: list[str] | None = None) -> None:
        binary = localredis.server_binary()
        assert binary is not None
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                  "--logfile", str(self.workdir / "server.log")]
        self.proc = subprocess.Popen([binary, *self.args, *common, *(extra or [])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent(signal.SIGKILL))
        until(f"{self.name} answering", lambda: self.client(0.2).ping(), 10)

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if os.name == "posix":
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot exit
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def sentinel_config(master_name: str, address: str, port: int) -> str:
    """The shipped ``deploy/redis/sentinel.conf`` watching ``address:port`` as
    ``master_name``, with shorter timings (a test's); its bind left to the command line."""
    shipped = (DEPLOY / "sentinel.conf").read_text()
    for old, new in ((f"monitor {MASTER} 192.0.2.11 6379 2",
                      f"monitor {MASTER} {address} {port} 2"),
                     (f"down-after-milliseconds {MASTER} 5000",
                      f"down-after-milliseconds {MASTER} 1000"),
                     (f"failover-timeout {MASTER} 60000", f"failover-timeout {MASTER} 10000"),
                     ("bind 127.0.0.1 192.0.2.11", "bind 127.0.0.1")):
        assert old in shipped, f"deploy/redis/sentinel.conf no longer says {old!r}"
        shipped = shipped.replace(old, new)
    return shipped.replace(f" {MASTER} ", f" {master_name} ")


class Cluster:
    """A master, a replica and three Sentinels watching them (quorum 2), from the shipped
    files in ``deploy/redis/`` with loopback addresses, free ports and shorter timings."""

    def __init__(self, workdir: Path) -> None:
        self.master_name = f"{MASTER}-{os.urandom(4).hex()}"  # no cross-talk between tests
        self.master = Node("node-a", workdir, [])
        self.replica = Node("node-b", workdir, [])
        for node in (self.master, self.replica):
            # Its own copy, as on a host: Sentinel has a node rewrite its file (CONFIG
            # REWRITE) when it changes the node's role.
            config = node.workdir / "redis.conf"
            config.write_text((DEPLOY / "redis.conf").read_text()
                              + f"include {DEPLOY / 'replication.conf'}\n")
            node.args = [str(config), "--repl-diskless-sync-delay", "0"]
        self.sentinels: list[Node] = []
        try:
            self._start(workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path) -> None:
        self.master.start()
        self.replica.start(["--replicaof", "127.0.0.1", str(self.master.port)])
        shipped = sentinel_config(self.master_name, "127.0.0.1", self.master.port)
        for i in range(3):
            node = Node(f"sentinel-{i}", workdir, [])
            config = node.workdir / "sentinel.conf"  # Sentinel rewrites its file: its own
            config.write_text(shipped)
            node.args = [str(config), "--sentinel"]
            node.start()
            self.sentinels.append(node)
        self.url = ("redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
                    + f"/{self.master_name}/0?socket_timeout=5")
        until("every Sentinel sees the replica and its two peers", self._watched, 30)

    def _watched(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            state = client.sentinel_master(self.master_name)
            replicas = client.sentinel_slaves(self.master_name)
            if int(state["num-other-sentinels"]) < 2 or not any(
                    int(r["port"]) == self.replica.port and not r["is_sdown"] for r in replicas):
                return False
        return True

    def master_port(self) -> int:
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def node_on(self, port: int) -> Node:
        return self.master if self.master.port == port else self.replica

    def replicated(self, master: Node) -> bool:
        """Whether ``master`` has a replica online, caught up with it."""
        info = master.client().info("replication")
        return info.get("role") == "master" and any(
            isinstance(v, dict) and v.get("state") == "online" for k, v in info.items()
            if k.startswith("slave"))

    def stop(self) -> None:
        for node in [*self.sentinels, self.master, self.replica]:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    built = Cluster(tmp_path)
    try:
        yield built
    finally:
        built.stop()


def acknowledged_write(client: redis.Redis, *command: Any, replicas: int = 1,
                       wait_ms: int = 500) -> bool:
    """``command`` and ``WAIT`` on one connection: whether ``replicas`` replicas hold it."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*command)
    pipe.execute_command("WAIT", replicas, wait_ms)
    return int(pipe.execute()[-1]) >= replicas


def status(url: str) -> dict[str, Any]:
    """``quantumctl status --json`` through ``url``."""
    result = CliRunner().invoke(app, ["status", "--json", "--redis-url", url])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_the_factory_follows_a_failover_and_keeps_every_acknowledged_write(
        cluster: Cluster) -> None:
    client = connection.connect(cluster.url)
    assert connection.master_address(client) == ("127.0.0.1", cluster.master.port)
    fleetstate.initialise(client, "pytest")
    assert "redis_no_replica" not in {f["kind"] for f in status(cluster.url)["flags"]}
    acknowledged: list[str] = []
    for i in range(50):
        if acknowledged_write(client, "SET", f"k{i}", i):
            acknowledged.append(f"k{i}")
    assert len(acknowledged) == 50
    cluster.master.kill()
    killed = time.monotonic()

    def write_again() -> bool:
        try:
            client.set("after", "failover")
            return True
        except redis.RedisError as e:
            assert bus_unavailable(e), repr(e)  # a failover is an outage, never data
            return False

    until("the client writing to the promoted replica", write_again, 30, every=0.1)
    writable_s = time.monotonic() - killed
    no_replica = [f for f in status(cluster.url)["flags"] if f["kind"] == "redis_no_replica"]
    assert no_replica and str(cluster.replica.port) in no_replica[0]["detail"]
    assert connection.master_address(client) == ("127.0.0.1", cluster.replica.port)
    survivor = cluster.replica.client()
    assert survivor.info("replication")["role"] == "master"
    assert [k for k in acknowledged if survivor.get(k) is None] == []  # none lost
    # The old master comes back (systemd restarts it) and Sentinel makes it a replica:
    # writes are acknowledged again, and a client on it meets READONLY, an outage too.
    cluster.master.start()
    until("the old master turned replica", lambda: cluster.replicated(cluster.replica), 30)
    replicated_s = time.monotonic() - killed
    assert acknowledged_write(client, "SET", "again", 1, wait_ms=2000)
    with pytest.raises(redis.ResponseError) as refused:
        cluster.master.client().set("x", 1)
    assert bus_unavailable(refused.value)
    replication = status(cluster.url)["redis"]["replication"]
    assert replication == {"sentinel": True, "role": "master", "replicas_in_sync": 1,
                           "master": f"127.0.0.1:{cluster.replica.port}"}
    print(f"\nfailover: writable after {writable_s:.2f} s, replicated after {replicated_s:.2f} s")


# --- execution through a failover -----------------------------------------------------


@pytest.fixture
def venue() -> Iterator[FuturesVenue]:
    with FuturesVenue(prices={"BTCUSDT": 60_000.0}, balance=100_000.0) as running:
        yield running


def execution_runner(venue: FuturesVenue, url: str) -> tuple[Runner, redis.Redis]:
    settings = Settings(
        redis_url=url, exchange="binance", binance_api_key=venue.account.api_key,
        binance_api_secret=venue.account.api_secret, binance_rest_url=venue.rest_url,
        binance_ws_url=venue.ws_url, binance_poll_interval_s=0.2, block_ms=50,
        metrics_port=0, binance_timeout_s=2, binance_recv_window_ms=300,
        protective_orders=False, replica_wait_ms=500,
    )
    assert settings.replicas_required == 1  # a Sentinel URL expects a replica
    client = connection.connect(url, socket_timeout=10)
    runner = build_runner("execution", settings, client,
                          build_service("execution", settings, client))
    runner.config.reconnect_max_s = 0.5
    # An order never sent is declared "not placed" after recvWindow and this margin of
    # "unknown order" answers (60 s in production; short here so the test stays bounded).
    runner.service.venue.config.unknown_order_margin_s = 0.5  # type: ignore[attr-defined]
    return runner, client


class Running:
    """The runner's loop on a thread, as its process runs it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except Exception as e:  # noqa: BLE001  (re-raised by stop())
            self.error = e

    def stop(self) -> None:
        self.runner.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the runner did not stop"
        self.runner.service.close()  # type: ignore[attr-defined]
        if self.error is not None:
            raise self.error


def entry(i: int) -> OrderRequest:
    plan_id = f"plan-{i:04d}"
    return OrderRequest(client_order_id="qt-" + plan_id.replace("-", ""), plan_id=plan_id,
                        symbol="BTCUSDT", side="BUY", position_side="LONG", quantity=0.002,
                        reference_price=60_000.0, leverage=5, reduce_only=False, reason="entry",
                        bar_time=int(time.time() * 1000), exit_plan=PLAN)


def publish_acknowledged(client: redis.Redis, order: OrderRequest, seconds: float = 40) -> None:
    """Put ``order`` on ``apply.result`` until a replica holds it, as an upstream stage's
    commit ends up there (a lost one is handled again and re-published, same order id)."""

    def once() -> bool:
        pipe = client.pipeline(transaction=False)
        publish(client, [(APPLY_RESULT, new_envelope(order, ts=int(time.time() * 1000),
                                                     source="test", key=order.plan_id))], pipe)
        pipe.execute_command("WAIT", 1, 500)
        return int(pipe.execute()[-1]) >= 1

    until(f"{order.client_order_id} acknowledged by a replica", once, seconds, every=0.1)


def outcomes(client: redis.Redis) -> dict[str, Counter[str]]:
    """Per client order id, how many reports of each kind ``execution.result`` holds."""
    seen: dict[str, Counter[str]] = {}
    for report in payloads(client, "quantum:stream:execution.result"):
        if report["kind"] != "book":
            seen.setdefault(report["client_order_id"], Counter())[report["kind"]] += 1
    return seen


def settled(kinds: Counter[str] | None) -> bool:
    return kinds is not None and (kinds["fill"] > 0 or kinds["reject"] > 0)


def settle_all(client: redis.Redis, orders: list[OrderRequest], first_after: OrderRequest,
               seconds: float) -> float:
    """Wait until ``first_after`` (the first order after a fault) settled, then every order;
    returns when the first did (monotonic)."""
    until("the first order after the fault settled",
          lambda: settled(outcomes(client).get(first_after.client_order_id)), seconds, 0.05)
    recovered = time.monotonic()
    until("every order settled",
          lambda: all(settled(outcomes(client).get(o.client_order_id)) for o in orders),
          seconds * 2, every=0.1)
    return recovered


def test_orders_through_a_master_kill_are_accounted_for_exactly_once(
        cluster: Cluster, venue: FuturesVenue) -> None:
    setup = connection.connect(cluster.url)
    fleetstate.initialise(setup, "pytest")
    until("the fleet epoch on the replica",
          lambda: cluster.replica.client().get(FLEET_KEY) is not None, 10)
    runner, _ = execution_runner(venue, cluster.url)
    running = Running(runner)
    try:
        until("execution's heartbeat", lambda: setup.exists(heartbeat_key("execution")), 20)
        orders = [entry(i) for i in range(16)]
        killed = promoted = 0.0
        for i, order in enumerate(orders):
            publish_acknowledged(setup, order)
            if i == 7:  # orders in flight: the last ones are not handled yet
                cluster.master.kill()
                killed = time.monotonic()
                until("Sentinel promoting the replica",
                      lambda: cluster.master_port() == cluster.replica.port, 30, every=0.1)
                promoted = time.monotonic()
                cluster.master.start()  # systemd restarts it; Sentinel makes it a replica
            time.sleep(0.05)
        recovered = settle_all(setup, orders, orders[8], 40)
    finally:
        running.stop()
    seen = outcomes(setup)
    placed = Counter(o["clientOrderId"] for o in venue.snapshot()["order_log"])
    on_apply = Counter(p["client_order_id"] for p in payloads(setup, APPLY_RESULT.key))
    lost = duplicated = 0
    for order in orders:
        cid = order.client_order_id
        kinds = seen[cid]
        assert on_apply[cid] >= 1  # every order the test acknowledged is on apply.result
        assert all(n == 1 for n in kinds.values()), (cid, kinds)  # no report twice
        assert placed[cid] <= 1, (cid, placed[cid])  # the venue never got an order twice
        duplicated += placed[cid] > 1
        if placed[cid]:
            assert kinds["fill"] == 1 and kinds["reject"] == 0, (cid, kinds)
        else:  # never sent: declared not placed, reported once
            assert kinds["reject"] == 1 and kinds["fill"] == 0, (cid, kinds)
            lost += 1
    assert runner.outages >= 1
    assert sum(placed.values()) == sum(1 for o in orders if placed[o.client_order_id])
    print(f"\nexecution through failover: promoted {promoted - killed:.2f} s after the kill, "
          f"first order after it settled {recovered - killed:.2f} s after the kill; "
          f"placed {sum(placed.values())}/{len(orders)}, not placed {lost}, "
          f"duplicated {duplicated}, outages {runner.outages}, held {runner.unconfirmed}")


def test_the_master_cut_off_from_its_replica_sends_no_order(
        cluster: Cluster, venue: FuturesVenue) -> None:
    """The minority side of a partition: services still reach the master, which no longer
    reaches its replica (SIGSTOP: its connection stays open, nothing is acknowledged)."""
    setup = connection.connect(cluster.url)
    fleetstate.initialise(setup, "pytest")
    runner, _ = execution_runner(venue, cluster.url)
    running = Running(runner)
    try:
        until("execution's heartbeat", lambda: setup.exists(heartbeat_key("execution")), 20)
        publish_acknowledged(setup, entry(1))
        until("the first order filled", lambda: outcomes(setup).get("qt-plan0001", {}).get(
            "fill"), 20)
        assert runner.unconfirmed == 0
        assert cluster.replica.proc is not None
        os.kill(cluster.replica.proc.pid, signal.SIGSTOP)
        publish(setup, [(APPLY_RESULT, new_envelope(entry(2), ts=int(time.time() * 1000),
                                                    source="test", key="plan-0002"))])
        until("the intent's commit held unconfirmed", lambda: runner.unconfirmed >= 1, 20)
        held = time.monotonic()
        while time.monotonic() - held < 2.0:  # held: nothing reaches the venue meanwhile
            assert [o["clientOrderId"] for o in venue.snapshot()["order_log"]] == ["qt-plan0001"]
            time.sleep(0.1)
        assert "qt-plan0002" not in outcomes(setup)  # no ack, no fill, nothing
        os.kill(cluster.replica.proc.pid, signal.SIGCONT)  # the partition heals
        until("the unsent order declared not placed",
              lambda: outcomes(setup).get("qt-plan0002", {}).get("reject"), 30)
    finally:
        running.stop()
    assert [o["clientOrderId"] for o in venue.snapshot()["order_log"]] == ["qt-plan0001"]
    assert outcomes(setup)["qt-plan0002"] == Counter({"reject": 1})
