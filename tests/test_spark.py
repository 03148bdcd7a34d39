"""The exported dataset read by Apache Spark (pyspark, local mode): the same GROUP BY as
DuckDB. Runs only where pyspark and a Java runtime are installed (no CI extra installs
pyspark); see docs/ANALYTICS.md for the measured time."""

from __future__ import annotations

import shutil

import pytest

from mmaplog import Store
from mmaplog.query.dataset import export_runs
from tests.user_runs import START, capture_run

pytest.importorskip("pyarrow")
duckdb = pytest.importorskip("duckdb")
pyspark = pytest.importorskip("pyspark")

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime for Spark")

GROUP_BY = (
    "SELECT instance_id, instrument, count(*) AS fills, sum(qty) AS qty, sum(px * qty) AS notional "
    "FROM fills GROUP BY instance_id, instrument ORDER BY instance_id, instrument"
)


def test_spark_reads_the_dataset_and_agrees_with_duckdb(tmp_path):
    from pyspark.sql import SparkSession

    store = Store(tmp_path / "store")
    capture_run(store, "trader-001", orders=30)
    capture_run(store, "trader-002", orders=25, start=START + 10**12, px_bump=0.25)
    out = tmp_path / "ds"
    export_runs(store.runs(), out)

    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW fills AS SELECT * FROM read_parquet('{out}/*/*/payload_type=Fill/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    expected = [tuple(row) for row in con.execute(GROUP_BY).fetchall()]

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("mmaplog-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        fills = (
            spark.read.option("basePath", str(out))
            .option("mergeSchema", "true")
            .parquet(str(out / "instance_id=*" / "run_id=*" / "payload_type=Fill"))
        )
        fills.createOrReplaceTempView("fills")
        got = [tuple(row) for row in spark.sql(GROUP_BY).collect()]
        schema = {f.name: f.dataType.simpleString() for f in fills.schema.fields}
    finally:
        spark.stop()
    assert got == expected
    assert len(expected) == 4
    assert schema["px"] == "double"
    assert schema["filled_at"] == "timestamp"
    assert schema["payload_type"] == "string"
