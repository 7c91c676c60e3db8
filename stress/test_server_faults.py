"""Server faults: connections killed by the server under load, queries cut by a timeout.

Each kill test runs many workers, each one bridged sync call (``async_``)
running short queries in a loop, while a killer ends random ones of *their*
server sessions from a separate admin connection (PostgreSQL
``pg_terminate_backend``, Redis ``CLIENT KILL``, MariaDB ``KILL CONNECTION``)
every 0.1 s, and all of them at once halfway (as a server restart), while a
heartbeat task measures the loop's longest gap.  A killed worker must get the
driver's own error soon after the kill, open a new connection and carry on.
The same with SQLAlchemy's GreenQueuePool (pool_pre_ping) under psycopg2 and
psycopg 3.  Then queries cut by ``asyncio.wait_for``: the server must stop
them at once, and the connection must be usable again (psycopg 3, compared
with psycopg's own AsyncConnection) or replaced by the pool (psycopg2).
Only sessions this module opened are ever killed: PostgreSQL kills filter on
this run's ``application_name``, the others on the ids recorded at connect.

Figures printed (run with ``-s``): kills, time from kill to error (median and
max), reconnects, queries, heartbeat max gap; for cut queries, how long the
cut took and what still ran on the server.  GREENBRIDGE_STRESS_SCALE scales
durations and worker counts (1.0: about 45 s in all; 0.1: about 20 s).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from _scale import scaled
from tests.helpers import BACKENDS, PG_DSN, require_mariadb, require_postgres, require_redis

import greenbridge

RUN = uuid.uuid4().hex[:8]

WORKERS = int(scaled(50, 10))
KILL_EVERY = 0.1  # seconds between kills
QUIET_TAIL = 0.6  # seconds with no kill at the end
ERROR_BOUND = 5.0  # generous bound on kill-to-error (a lost wake-up would be "never")
GAP_BOUND = 1.0  # generous bound on the heartbeat's largest gap (a blocked loop stalls for good)


# --------------------------------------------------------------------------- harness


@dataclass
class Client:
    """How one driver opens, identifies, uses and kills a connection."""

    open: Callable[[int], Any]
    ident: Callable[[Any], Any]
    query: Callable[[Any], None]
    close: Callable[[Any], None]
    errors: tuple[type[BaseException], ...]
    admin: Callable[[], Any]
    kill: Callable[[Any, Any], bool]
    close_admin: Callable[[Any], None]


@dataclass
class Load:
    kills: int = 0
    latencies: list[float] = field(default_factory=list)
    reconnects: int = 0
    queries: int = 0
    unexpected: list[str] = field(default_factory=list)
    live: dict[int, Any] = field(default_factory=dict)  # worker -> its connection's ident
    killed_at: dict[Any, float] = field(default_factory=dict)  # ident -> when the kill was sent
    max_gap: float = 0.0
    stop: bool = False
    burst: int = 0  # connections killed at once, halfway (as a server restart)

    def report(self, name: str) -> None:
        lat = sorted(self.latencies)
        med = statistics.median(lat) * 1000 if lat else float("nan")
        top = lat[-1] * 1000 if lat else float("nan")
        print(
            f"\n[server faults] {name}: {WORKERS} workers, {self.kills} kills "
            f"({self.burst} of them at once), "
            f"time to error median {med:.1f} ms max {top:.1f} ms, "
            f"{self.reconnects} reconnects, {self.queries} queries, "
            f"heartbeat max gap {self.max_gap * 1000:.1f} ms"
        )

    def check(self) -> None:
        assert self.kills > 0
        assert self.burst > 0
        assert not self.unexpected, self.unexpected
        assert not self.killed_at, f"kills never seen by their worker: {self.killed_at}"
        assert len(self.latencies) == self.kills
        assert self.reconnects == self.kills
        assert max(self.latencies) < ERROR_BOUND, self.latencies
        assert self.max_gap < GAP_BOUND, self.max_gap


def _worker(i: int, load: Load, client: Client) -> None:
    conn = client.open(i)
    load.live[i] = client.ident(conn)
    try:
        # Until the end, and past it while a kill of this connection is not seen yet.
        while not load.stop or load.live.get(i) in load.killed_at:
            try:
                client.query(conn)
            except client.errors as exc:
                now = time.perf_counter()
                ident = load.live.pop(i)
                killed = load.killed_at.pop(ident, None)
                if killed is None:
                    load.unexpected.append(f"worker {i}: {exc!r}")
                else:
                    load.latencies.append(now - killed)
                client.close(conn)
                conn = client.open(i)
                load.reconnects += 1
                load.live[i] = client.ident(conn)
            else:
                load.queries += 1
        client.query(conn)  # the worker carried on: its connection works after the kills
    finally:
        load.live.pop(i, None)
        client.close(conn)


async def _kill_under_load(client: Client, seconds: float) -> Load:
    load = Load()
    loop = asyncio.get_running_loop()

    async def heartbeat() -> None:
        last = loop.time()
        while not load.stop:
            await asyncio.sleep(0.005)
            now = loop.time()
            load.max_gap = max(load.max_gap, now - last)
            last = now

    def kill_all(admin: Any) -> None:
        # As a server restart: every connection at once, from one bridged call.
        victims = [x for x in load.live.values() if x not in load.killed_at]
        for victim in victims:
            load.killed_at[victim] = time.perf_counter()
            assert client.kill(admin, victim), victim
        load.kills += len(victims)
        load.burst = len(victims)

    async def killer(until: float, burst_at: float) -> None:
        admin = await greenbridge.async_(client.admin)()
        try:
            while time.perf_counter() < until:
                await asyncio.sleep(KILL_EVERY)
                if not load.burst and time.perf_counter() >= burst_at:
                    await greenbridge.async_(kill_all)(admin)
                    continue
                victims = [x for x in load.live.values() if x not in load.killed_at]
                if not victims:
                    continue
                victim = random.choice(victims)
                load.killed_at[victim] = time.perf_counter()
                assert await greenbridge.async_(client.kill)(admin, victim), victim
                load.kills += 1
        finally:
            await greenbridge.async_(client.close_admin)(admin)

    beat = asyncio.ensure_future(heartbeat())
    bridged = greenbridge.async_(_worker)
    workers = [asyncio.ensure_future(bridged(i, load, client)) for i in range(WORKERS)]
    try:
        start = time.perf_counter()
        await killer(start + seconds - QUIET_TAIL, start + (seconds - QUIET_TAIL) / 2)
        await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
    finally:
        load.stop = True
        # A worker stuck in a wait that never ends fails the test here, not by hanging.
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        await beat
    return load


def _run(loop_name: str, main: Callable[[], Any]) -> Any:
    return BACKENDS[loop_name].run(main)


LOOPS = pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres() -> None:
    require_postgres()


def _pg_kill_sql(paramstyle: str = "%s") -> str:
    return (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE pid = {paramstyle} AND application_name = {paramstyle}"
    )


def _psycopg2_client(app: str) -> Client:
    psycopg2 = pytest.importorskip("psycopg2")
    greenbridge.patch_psycopg2()

    def open_(_i: int, name: str = app) -> Any:
        conn = psycopg2.connect(PG_DSN, application_name=name)
        conn.autocommit = True
        return conn

    def query(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.01)")
            cur.fetchone()

    def kill(admin: Any, pid: int) -> bool:
        with admin.cursor() as cur:
            cur.execute(_pg_kill_sql(), (pid, app))
            return cur.fetchall() == [(True,)]

    return Client(
        open=open_,
        ident=lambda conn: conn.get_backend_pid(),
        query=query,
        close=lambda conn: conn.close(),
        errors=(psycopg2.OperationalError, psycopg2.InterfaceError),
        admin=lambda: open_(0, app + "-admin"),
        kill=kill,
        close_admin=lambda admin: admin.close(),
    )


def _psycopg_client(app: str) -> Client:
    psycopg = pytest.importorskip("psycopg")
    greenbridge.patch_psycopg()

    def open_(_i: int, name: str = app) -> Any:
        return psycopg.connect(PG_DSN, application_name=name, autocommit=True)

    def kill(admin: Any, pid: int) -> bool:
        return admin.execute(_pg_kill_sql(), (pid, app)).fetchall() == [(True,)]  # type: ignore[no-any-return]

    return Client(
        open=open_,
        ident=lambda conn: conn.info.backend_pid,
        query=lambda conn: conn.execute("SELECT pg_sleep(0.01)").fetchone(),
        close=lambda conn: conn.close(),
        errors=(psycopg.OperationalError, psycopg.InterfaceError),
        admin=lambda: open_(0, app + "-admin"),
        kill=kill,
        close_admin=lambda admin: admin.close(),
    )


@LOOPS
def test_psycopg2_backends_killed_under_load(loop_name: str, postgres: None) -> None:
    client = _psycopg2_client(f"gb-faults-{RUN}-pg2-{loop_name}")
    load = _run(loop_name, lambda: _kill_under_load(client, scaled(3.5, 1.2)))
    load.report(f"psycopg2 pg_terminate_backend ({loop_name})")
    load.check()


@LOOPS
def test_psycopg_backends_killed_under_load(loop_name: str, postgres: None) -> None:
    client = _psycopg_client(f"gb-faults-{RUN}-pg3-{loop_name}")
    load = _run(loop_name, lambda: _kill_under_load(client, scaled(3.5, 1.2)))
    load.report(f"psycopg 3 pg_terminate_backend ({loop_name})")
    load.check()


# --------------------------------------------------------------------------- Redis and MariaDB

_FRESH = ("pymysql", "redis")


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _FRESH)


@pytest.fixture(scope="module")
def green() -> Iterator[dict[str, ModuleType]]:
    """pymysql and redis imported afresh under patch_blocking(); sys.modules restored after."""
    pytest.importorskip("pymysql")
    pytest.importorskip("redis")
    saved = {name: mod for name, mod in sys.modules.items() if _ours(name)}
    for name in saved:
        del sys.modules[name]
    try:
        with greenbridge.patch_blocking():
            mods = {
                name: importlib.import_module(name)
                for name in ("pymysql", "redis", "redis.retry", "redis.backoff")
            }
        yield mods
    finally:
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_redis_clients_killed_under_load(green: dict[str, ModuleType]) -> None:
    require_redis()
    redis = green["redis"]
    app = f"gb-faults-{RUN}-redis"

    def open_(i: int) -> Any:
        # No retry: the application sees the ConnectionError and reconnects itself.
        return redis.Redis(
            host="127.0.0.1",
            port=6379,
            client_name=f"{app}-{i}",
            single_connection_client=True,
            retry=green["redis.retry"].Retry(green["redis.backoff"].NoBackoff(), 0),
        )

    def kill(admin: Any, client_id: int) -> bool:
        return admin.client_kill_filter(_id=client_id) == 1  # type: ignore[no-any-return]

    client = Client(
        open=open_,
        ident=lambda r: r.client_id(),
        query=lambda r: r.blpop([f"gb:faults:never:{app}"], timeout=0.01),
        close=lambda r: r.close(),
        errors=(redis.exceptions.ConnectionError,),
        admin=lambda: redis.Redis(host="127.0.0.1", port=6379, client_name=app + "-admin"),
        kill=kill,
        close_admin=lambda admin: admin.close(),
    )
    load = BACKENDS["asyncio"].run(lambda: _kill_under_load(client, scaled(3.5, 1.2)))
    load.report("redis-py CLIENT KILL")
    load.check()


def test_mariadb_connections_killed_under_load(green: dict[str, ModuleType]) -> None:
    require_mariadb()
    pymysql = green["pymysql"]

    def open_(_i: int) -> Any:
        # ssl_disabled: PyMySQL otherwise builds a TLS context (loading the system
        # CA store, ~50 ms of CPU on the loop) for every connection (docs/drivers.md).
        return pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            database="test",
            autocommit=True,
            ssl_disabled=True,
        )

    def query(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT SLEEP(0.01)")
            cur.fetchone()

    def close(conn: Any) -> None:
        if conn.open:
            conn.close()

    def kill(admin: Any, thread_id: int) -> bool:
        with admin.cursor() as cur:
            cur.execute("KILL CONNECTION %s", (thread_id,))  # only ids our workers recorded
        return True

    client = Client(
        open=open_,
        ident=lambda conn: conn.thread_id(),
        query=query,
        close=close,
        errors=(pymysql.err.OperationalError, pymysql.err.InterfaceError),
        admin=lambda: open_(0),
        kill=kill,
        close_admin=close,
    )
    load = BACKENDS["asyncio"].run(lambda: _kill_under_load(client, scaled(3.5, 1.2)))
    load.report("PyMySQL KILL CONNECTION")
    load.check()


# ------------------------------------------------------------------- queries cut by a timeout

CUT_AFTER = 0.2  # the wait_for timeout cutting a 10 s query
GONE_BOUND = 5.0  # generous bound for the server to stop running a cut query


def _active(admin: Any, tag: str) -> int:
    """How many sessions (other than ``admin``) run a query tagged ``tag``: psycopg 3 admin."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE %s AND pid <> pg_backend_pid()"
    )
    return admin.execute(sql, (f"%{tag}%",)).fetchone()[0]  # type: ignore[no-any-return]


async def _cut_all(run: Callable[[int, str], Any], n: int, tag: str) -> tuple[float, float]:
    """Start ``n`` 10 s queries tagged ``tag`` and cut each after CUT_AFTER s.

    Returns the time taken and the heartbeat's largest gap meanwhile (the
    cancel requests all leave in the same loop turn).
    """
    loop = asyncio.get_running_loop()
    gaps = [0.0]
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async def cut(i: int) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(run(i, f"SELECT pg_sleep(10) -- {tag}"), CUT_AFTER)

    beat = asyncio.ensure_future(heartbeat())
    start = time.perf_counter()
    try:
        await asyncio.gather(*(cut(i) for i in range(n)))
    finally:
        took = time.perf_counter() - start
        done.set()
        await beat
    return took, max(gaps)


async def _until_gone(admin: Any, tag: str) -> tuple[int, float]:
    """Poll pg_stat_activity until no session runs ``tag``; (still running, seconds waited)."""
    start = time.perf_counter()
    while True:
        left = await greenbridge.async_(_active)(admin, tag)
        waited = time.perf_counter() - start
        if not left or waited > GONE_BOUND:
            return left, waited
        await asyncio.sleep(0.01)


@LOOPS
def test_psycopg_queries_cut_by_wait_for(loop_name: str, postgres: None) -> None:
    """psycopg 3: the server stops the cut queries at once; the connections stay usable.

    The same program with psycopg's own AsyncConnection (the native twin) must
    end the same way.
    """
    psycopg = pytest.importorskip("psycopg")
    greenbridge.patch_psycopg()
    n = int(scaled(20, 5))
    app = f"gb-faults-{RUN}-cut3-{loop_name}"
    tag = f"gb-cut-{RUN}-{loop_name}"

    def connect() -> Any:
        return psycopg.connect(PG_DSN, autocommit=True, application_name=app)

    def query(conn: Any, sql: str) -> Any:
        return conn.execute(sql).fetchone()[0]

    async def main() -> dict[str, Any]:
        admin = await greenbridge.async_(connect)()
        green = [await greenbridge.async_(connect)() for _ in range(n)]
        native = [
            await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True, application_name=app)
            for _ in range(n)
        ]

        async def native_query(conn: Any, sql: str) -> Any:
            cur = await conn.execute(sql)
            return (await cur.fetchone())[0]

        runs = {
            "green": lambda i, sql: greenbridge.async_(query)(green[i], sql),
            "native": lambda i, sql: native_query(native[i], sql),
        }
        out: dict[str, Any] = {}
        try:
            for name, run in runs.items():
                took, gap = await _cut_all(run, n, f"{tag}-{name}")
                left, waited = await _until_gone(admin, f"{tag}-{name}")
                again = await asyncio.gather(*(run(i, "SELECT 1") for i in range(n)))
                out[name] = {
                    "cut": took,
                    "gap": gap,
                    "left": left,
                    "waited": waited,
                    "again": again,
                }
        finally:
            for conn in green:
                await greenbridge.async_(conn.close)()
            for conn in native:
                await conn.close()
            await greenbridge.async_(admin.close)()
        return out

    out = _run(loop_name, main)
    for name, fig in out.items():
        print(
            f"\n[server faults] psycopg 3 {name} ({loop_name}): {n} queries cut after "
            f"{CUT_AFTER * 1000:.0f} ms, all cut in {fig['cut'] * 1000:.1f} ms "
            f"(heartbeat max gap {fig['gap'] * 1000:.1f} ms), "
            f"{fig['left']} still running on the server after {fig['waited'] * 1000:.1f} ms"
        )
    for fig in out.values():
        assert fig["left"] == 0  # the server stopped every cut query
        assert fig["again"] == [1] * n  # and every connection is usable again
        assert fig["gap"] < GAP_BOUND, fig["gap"]


@LOOPS
def test_psycopg2_queries_cut_by_wait_for_and_the_pool_replaces_them(
    loop_name: str, postgres: None
) -> None:
    """psycopg2: the server stops the cut queries; the connections are closed (by
    design) and SQLAlchemy's pool (GreenQueuePool) hands out working ones next."""
    psycopg2 = pytest.importorskip("psycopg2")
    psycopg = pytest.importorskip("psycopg")
    sa = pytest.importorskip("sqlalchemy")
    from greenbridge.drivers.sqlalchemy import create_engine

    greenbridge.patch_psycopg2()
    greenbridge.patch_psycopg()
    n = int(scaled(20, 5))
    app = f"gb-faults-{RUN}-cut2-{loop_name}"
    tag = f"gb-cut2-{RUN}-{loop_name}"
    engine = create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        pool_size=n,
        max_overflow=0,
        connect_args={"application_name": app},
    )
    invalidated: list[Any] = []
    sa.event.listen(engine, "invalidate", lambda *args: invalidated.append(args[2]))

    def plain(conn: Any, sql: str) -> Any:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]

    def unit(sql: str) -> Any:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()

    async def main() -> dict[str, Any]:
        admin = await greenbridge.async_(psycopg.connect)(
            PG_DSN, autocommit=True, application_name=app + "-admin"
        )
        conns = [
            await greenbridge.async_(psycopg2.connect)(PG_DSN, application_name=app)
            for _ in range(n)
        ]
        await asyncio.gather(*(greenbridge.async_(unit)("SELECT 1") for _ in range(n)))  # fill
        out: dict[str, Any] = {}
        try:
            took, gap = await _cut_all(
                lambda i, sql: greenbridge.async_(plain)(conns[i], sql), n, tag
            )
            left, waited = await _until_gone(admin, tag)
            out["plain"] = {"cut": took, "gap": gap, "left": left, "waited": waited}
            out["closed"] = [bool(conn.closed) for conn in conns]
            took, gap = await _cut_all(
                lambda _i, sql: greenbridge.async_(unit)(sql), n, tag + "-pool"
            )
            left, waited = await _until_gone(admin, tag + "-pool")
            out["pool"] = {"cut": took, "gap": gap, "left": left, "waited": waited}
            out["checked out"] = engine.pool.checkedout()  # type: ignore[attr-defined]
            out["again"] = await asyncio.gather(
                *(greenbridge.async_(unit)("SELECT 1") for _ in range(n))
            )
        finally:
            for conn in conns:
                conn.close()
            await greenbridge.async_(engine.dispose)()
            await greenbridge.async_(admin.close)()
        return out

    out = _run(loop_name, main)
    for name in ("plain", "pool"):
        fig = out[name]
        print(
            f"\n[server faults] psycopg2 {name} ({loop_name}): {n} queries cut after "
            f"{CUT_AFTER * 1000:.0f} ms, all cut in {fig['cut'] * 1000:.1f} ms "
            f"(heartbeat max gap {fig['gap'] * 1000:.1f} ms), "
            f"{fig['left']} still running on the server after {fig['waited'] * 1000:.1f} ms"
            + (f", {len(invalidated)} pool connections invalidated" if name == "pool" else "")
        )
    assert out["plain"]["left"] == 0
    assert out["plain"]["gap"] < GAP_BOUND and out["pool"]["gap"] < GAP_BOUND, out
    assert out["closed"] == [True] * n  # psycopg2 closes a connection whose wait was interrupted
    assert out["pool"]["left"] == 0
    assert len(invalidated) == n  # the pool dropped each cut connection...
    assert all(isinstance(exc, asyncio.CancelledError) for exc in invalidated), invalidated
    assert out["checked out"] == 0
    assert out["again"] == [1] * n  # ...and the next checkouts got working ones


# --------------------------------------------------------------------------- SQLAlchemy's pool


@LOOPS
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_sqlalchemy_pool_recovers_from_killed_backends(
    driver: str, loop_name: str, postgres: None
) -> None:
    """50 units of work on a GreenQueuePool of 10 (pool_pre_ping) while backends are killed.

    After a disconnect error SQLAlchemy invalidates the whole pool (its
    default), so each kill that reaches a unit of work reopens every pooled
    connection: "reconnects" counts them all.
    """
    pytest.importorskip(driver)
    sa = pytest.importorskip("sqlalchemy")
    from greenbridge.drivers.sqlalchemy import create_engine

    greenbridge.patch_psycopg2()
    greenbridge.patch_psycopg()
    app = f"gb-faults-{RUN}-pool-{driver}-{loop_name}"
    pool_size = max(2, WORKERS // 5)  # units of work wait for a connection
    engine = create_engine(
        f"postgresql+{driver}://postgres@127.0.0.1:5432/test",
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=60,
        connect_args={"application_name": app},
    )
    connects: list[int] = []
    sa.event.listen(engine, "connect", lambda dbapi_conn, _rec: connects.append(1))
    load = Load()
    errors_seen: list[int] = []  # kills that reached a unit of work (the others: pre-ping)

    def worker(i: int) -> None:
        while not load.stop:
            pid = None
            try:
                with engine.connect() as conn:
                    pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
                    conn.execute(sa.text("SELECT pg_sleep(0.01)")).scalar()
            except sa.exc.DBAPIError as exc:
                now = time.perf_counter()
                killed = load.killed_at.pop(pid, None)
                if killed is None or not exc.connection_invalidated:
                    load.unexpected.append(f"worker {i}: {exc!r}")
                else:
                    load.latencies.append(now - killed)
                    errors_seen.append(pid)  # type: ignore[arg-type]
            else:
                load.queries += 1
        # The worker carried on: with the kills over, its next unit of work succeeds.
        _select_one(engine, sa)

    def ours(admin: Any) -> list[int]:
        with admin.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))
            return [row[0] for row in cur.fetchall()]

    def kill(admin: Any, pid: int) -> bool:
        with admin.cursor() as cur:
            cur.execute(_pg_kill_sql(), (pid, app))
            return cur.fetchall() == [(True,)]

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def heartbeat() -> None:
            last = loop.time()
            while not load.stop:
                await asyncio.sleep(0.005)
                now = loop.time()
                load.max_gap = max(load.max_gap, now - last)
                last = now

        import psycopg2

        admin = await greenbridge.async_(psycopg2.connect)(PG_DSN, application_name=app + "-admin")
        admin.autocommit = True
        beat = asyncio.ensure_future(heartbeat())
        bridged = greenbridge.async_(worker)
        workers = [asyncio.ensure_future(bridged(i)) for i in range(WORKERS)]
        seconds = scaled(3.0, 1.5)
        start = time.perf_counter()
        try:
            while time.perf_counter() < start + seconds - QUIET_TAIL:
                await asyncio.sleep(KILL_EVERY)
                pids = await greenbridge.async_(ours)(admin)
                victims = [pid for pid in pids if pid not in load.killed_at]
                if not load.burst and time.perf_counter() >= start + (seconds - QUIET_TAIL) / 2:
                    pass  # as a server restart: every connection of the pool at once
                elif victims:
                    victims = [random.choice(victims)]
                for victim in victims:
                    load.killed_at[victim] = time.perf_counter()
                    if await greenbridge.async_(kill)(admin, victim):
                        load.kills += 1
                        if len(victims) > 1:
                            load.burst += 1
                    else:  # it went away meanwhile (the pool closed it)
                        del load.killed_at[victim]
            await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
        finally:
            load.stop = True
            await asyncio.wait_for(asyncio.gather(*workers), 30)
            await beat
        # After the quiet tail, a full pool of concurrent checkouts all work.
        again = await asyncio.gather(
            *(greenbridge.async_(lambda: _select_one(engine, sa))() for _ in range(pool_size))
        )
        assert again == [1] * pool_size
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await greenbridge.async_(engine.dispose)()
        admin.close()

    _run(loop_name, main)
    load.reconnects = len(connects) - pool_size
    load.report(
        f"SQLAlchemy GreenQueuePool, {driver}, pre-ping, pg_terminate_backend ({loop_name})"
    )
    print(
        f"[server faults]   pool of {pool_size}: {len(errors_seen)} kills reached a unit of work "
        f"(the others were caught by pool_pre_ping), {load.reconnects} new connections"
    )
    assert load.kills > 0
    assert not load.unexpected, load.unexpected
    assert load.reconnects >= load.kills  # every killed connection was replaced
    assert not load.latencies or max(load.latencies) < ERROR_BOUND, load.latencies
    assert load.max_gap < GAP_BOUND, load.max_gap


def _select_one(engine: Any, sa: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1")).scalar()
