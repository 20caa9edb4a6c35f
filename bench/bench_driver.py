#!/usr/bin/env python3
"""CPU per statement: through SQLAlchemy, or through asyncpg on a connection of the same pool (db/driver.py).

    .venv/bin/python bench/bench_driver.py [--dsn postgresql://postgres@127.0.0.1:55432/mediacache_bench]
        [--statements 3000] [--concurrency 16] [--rounds 3]

Runs an UPDATE ... RETURNING of one row of 100 in a scratch table (dropped afterwards), the
shape of a download's claim, `--concurrency` at a time, in autocommit, both ways alternating:
SQLAlchemy Core (`conn.execute`, as the repository ran every statement) and `fetch_row` (the
statement compiled once, executed by asyncpg on a connection checked out of SQLAlchemy's pool).
Prints this process's CPU time and the wall time per statement, medians over the rounds, then
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy import Integer, Text, Uuid, bindparam, text

from mediacache.db.driver import DriverStatement, fetch_row
from mediacache.db.engine import create_engine

TABLE = f"bench_driver_{uuid.uuid4().hex[:8]}"
UPDATE = text(f"UPDATE {TABLE} SET n = n + :b_step, s = :b_s WHERE id = :b_id RETURNING n, s").bindparams(
    bindparam("b_step", type_=Integer()), bindparam("b_s", type_=Text()), bindparam("b_id", type_=Uuid()))


async def _per_statement(call: Callable[[int], Awaitable[object]], statements: int,
                         concurrency: int) -> tuple[float, float]:
    for i in range(200):  # warm: connections made, statements prepared
        await call(i)
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in range(statements // concurrency):
        await asyncio.gather(*(call(batch * concurrency + j) for j in range(concurrency)))
    done = statements // concurrency * concurrency
    return 1e6 * (time.process_time() - cpu) / done, 1e6 * (time.perf_counter() - wall) / done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:55432/mediacache_bench")
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    admin = await asyncpg.connect(args.dsn)
    ids = [uuid.uuid4() for _ in range(100)]
    await admin.execute(f"CREATE TABLE {TABLE} (id uuid PRIMARY KEY, n int NOT NULL, s text)")
    await admin.executemany(f"INSERT INTO {TABLE} VALUES ($1, 0, 'x')", [(i,) for i in ids])
    made = create_engine(args.dsn.replace("postgresql://", "postgresql+asyncpg://"), pool_size=args.concurrency)
    engine = made.execution_options(isolation_level="AUTOCOMMIT")
    compiled = DriverStatement.of(UPDATE, engine.dialect)

    def params(i: int) -> dict[str, object]:
        return {"b_step": 1, "b_s": "y", "b_id": ids[i % len(ids)]}

    async def through_sqlalchemy(i: int) -> object:
        async with engine.begin() as conn:
            return (await conn.execute(UPDATE, params(i))).first()

    async def through_asyncpg(i: int) -> object:
        return await fetch_row(engine, "the bench database", compiled, params(i))

    cases = {"sqlalchemy": through_sqlalchemy, "asyncpg on the pool's connection": through_asyncpg}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            for name, call in cases.items():
                figures[name].append(await _per_statement(call, args.statements, args.concurrency))
    finally:
        await made.dispose()
        await admin.execute(f"DROP TABLE {TABLE}")
        await admin.close()

    result = {}
    print(f"{'case':34s} {'CPU µs/statement':>17s} {'wall µs/statement':>18s}")
    for name, runs in figures.items():
        cpu_us = statistics.median(r[0] for r in runs)
        wall_us = statistics.median(r[1] for r in runs)
        result[name] = {"cpu_us": round(cpu_us, 1), "wall_us": round(wall_us, 1)}
        print(f"{name:34s} {cpu_us:17.0f} {wall_us:18.0f}")
    print(json.dumps({"bench": "driver", "statements": args.statements, "concurrency": args.concurrency,
                      "rounds": args.rounds, "cases": result}))


if __name__ == "__main__":
    asyncio.run(main())
