"""The Spark session the scale-out engine runs on, and the event log as Spark DataFrames.

pyspark is an optional extra (``pip install 'propensity[spark]'``); importing this module does not import it,
:func:`spark_session` does. The session is configured for the generated SQL: UTC session time zone, ANSI mode
off (a division by zero is NULL, as in the DuckDB queries), the UI off, and a small shuffle partition count for
local runs. ``master`` comes from the spec (``spark.master``), else ``PROPENSITY_SPARK_MASTER`` or
``SPARK_MASTER``, else ``local[*]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from propensity.core.errors import PropensityError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MASTER = "local[*]"

# What every propensity Spark session needs, whatever the cluster: the SQL is written for these.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.parser.escapedStringLiterals": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
# Defaults a spec or the environment may override.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "2g",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
}


class SparkUnavailableError(PropensityError):
    """pyspark or a Java runtime is missing, or the session cannot start."""


def resolve_master(master: str | None = None) -> str:
    """The Spark master URL: the argument (the spec's ``spark.master``), else the environment, else local."""
    return (
        master
        or os.environ.get("PROPENSITY_SPARK_MASTER")
        or os.environ.get("SPARK_MASTER")
        or DEFAULT_MASTER
    )


def spark_session(
    master: str | None = None, conf: Mapping[str, Any] | None = None, *, app_name: str = "propensity"
) -> SparkSession:
    """Get (or create) the process's Spark session with propensity's settings.

    ``conf`` adds or overrides Spark settings (``spark.executor.memory``, ``spark.kubernetes.container.image``,
    ...); the few the generated SQL relies on (UTC, ANSI off) are always set. An existing session is reused and
    given those settings.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - depends on the install
        raise SparkUnavailableError(
            "engine 'spark' needs pyspark: pip install 'propensity[spark]' (and a Java 17 runtime, e.g. "
            "apt-get install openjdk-17-jre-headless)"
        ) from None
    settings = {**DEFAULT_CONF, **{k: str(v) for k, v in (conf or {}).items()}, **REQUIRED_CONF}
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in REQUIRED_CONF.items():
            active.conf.set(key, value)
        return active
    url = resolve_master(master)
    if url.startswith("local"):
        # A local session talks to itself only: keep the driver on loopback.
        # Python workers run this interpreter (the one with propensity installed), not whatever python3 is first
        # on the PATH.
        settings = {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.pyspark.python": sys.executable,
            "spark.pyspark.driver.python": sys.executable,
            **settings,
        }
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(url).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: say what is needed
        raise SparkUnavailableError(
            f"could not start Spark ({resolve_master(master)}): {exc}. A Java 17 runtime is needed "
            "(Debian: apt-get install openjdk-17-jre-headless; or set JAVA_HOME)"
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def arrow_to_frame(spark: SparkSession, table: Any) -> DataFrame:
    """An Arrow table as a Spark DataFrame (types kept: timestamps with a zone become TimestampType)."""
    return spark.createDataFrame(table)


def log_frames(workspace: Any, spark: SparkSession, con: Any = None) -> tuple[DataFrame, DataFrame]:
    """The workspace's events and attributes as Spark DataFrames.

    A Parquet event store is read by Spark directly (every executor reads its share of the files); a DuckDB log
    is handed over through Arrow by the driver, which suits small projects only (export it with
    ``propensity events export --to parquet`` for anything large). ``con``: an open connection of the log to
    read through (DuckDB allows one configuration per file and process).
    """
    from propensity.events.log import open_event_log
    from propensity.events.parquet_log import ParquetEventLog

    log = open_event_log(workspace)
    if isinstance(log, ParquetEventLog):
        return log.spark_frames(spark)
    if con is None:
        with log.connection(read_only=True) as own:
            return log_frames(workspace, spark, own)
    events = con.sql(
        "SELECT * REPLACE (CAST(properties AS VARCHAR) AS properties) FROM events"
    ).to_arrow_table()
    attributes = con.sql("SELECT * FROM attributes").to_arrow_table()
    return spark.createDataFrame(events), spark.createDataFrame(attributes)


def workspace_session(workspace: Any) -> SparkSession:
    """The Spark session a workspace's spec asks for (``spark.master``, ``spark.conf``)."""
    settings = workspace.spec.spark
    return spark_session(settings.master, dict(settings.conf))


def engine_of(workspace: Any, override: str | None = None) -> str:
    """``duckdb`` or ``spark``: ``override`` (``--engine``), else the spec's ``engine``."""
    engine = override or workspace.spec.engine
    if engine not in ("duckdb", "spark"):
        raise PropensityError(f"--engine: {engine!r} is not an engine; use duckdb or spark")
    return str(engine)
