"""export --format parquet|csv, mmaplog sql and mmaplog diff (issue 14)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from mmaplog import Store
from mmaplog.cli.commands import main
from tests.user_runs import START, capture_run

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    st = Store(root)
    runs = [
        capture_run(st, "trader-001", orders=20),
        capture_run(st, "trader-002", orders=20, start=START + 10**12),
        capture_run(st, "trader-001", orders=20, start=START + 2 * 10**12, px_bump=0.5),
    ]
    st.runs_ids = runs  # type: ignore[attr-defined]
    return st


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_importing_mmaplog_loads_neither_pyarrow_nor_duckdb():
    code = "import sys, mmaplog, mmaplog.query.diff; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pyarrow" not in out.stdout
    assert "duckdb" not in out.stdout


def test_parquet_export_is_hive_partitioned_with_typed_columns(store, tmp_path, capsys):
    out = tmp_path / "ds"
    code, _, err = cli(
        capsys, "export", "all", "--root", store.root, "--format", "parquet", "--out", out
    )
    assert code == 0
    assert "exported 126 entries of 3 runs" in err
    run = store.runs_ids[0]
    fill = out / "instance_id=trader-001" / f"run_id={run}" / "payload_type=Fill" / "data.parquet"
    table = pq.read_table(fill)
    assert table.schema.field("px").type == pa.float64()
    assert table.schema.field("filled_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("seq").type == pa.int64()
    assert table.schema.field("liquidity").nullable
    assert table.column_names[:7] == [
        "seq", "ts_init", "ts_publish", "topic", "correlation_id", "causation_id", "entry_hash",
    ]  # fmt: skip
    assert table.num_rows == 16
    assert table.column("tags").to_pylist()[0] == '["a"]'
    reject = pq.read_table(fill.parent.parent / "payload_type=Reject" / "data.parquet")
    assert reject.column("code").to_pylist() == [7, 7, 7, 7]  # array_like struct, named


def test_repeated_exports_replace_instead_of_duplicating(store, tmp_path, capsys):
    out = tmp_path / "ds"
    for _ in range(2):
        code, _, _ = cli(
            capsys, "export", "all", "--root", store.root, "--format", "parquet", "--out", out
        )
        assert code == 0
    code, _, _ = cli(
        capsys,
        "export",
        store.runs_ids[0],
        "--root",
        store.root,
        "--format",
        "parquet",
        "--out",
        out,
    )
    assert code == 0
    n = duckdb.sql(
        f"select count(*) from read_parquet('{out}/**/*.parquet', hive_partitioning=true, "
        "union_by_name=true)"
    ).fetchall()[0][0]
    assert n == 126
    assert not list(out.rglob("*.tmp"))


def test_export_filters_and_csv(store, tmp_path, capsys):
    out = tmp_path / "csv"
    run = store.runs_ids[0]
    code, _, _ = cli(
        capsys, "export", run, "--root", store.root, "--format", "csv", "--out", out,
        "--type", "Fill", "--key", "client_order_id=O-trader-001-0001",
        "--key", "CLIENT_ORDER_ID=O-trader-001-0002",
    )  # fmt: skip
    assert code == 0
    (path,) = out.rglob("*.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["client_order_id"] for r in rows] == ["O-trader-001-0001", "O-trader-001-0002"]
    assert rows[0]["filled_at"].startswith("2023-11-14T")
    code, _, _ = cli(
        capsys, "export", run, "--root", store.root, "--format", "csv", "--out", tmp_path / "t",
        "--since", "2023-11-14T22:13:30Z", "--until", str(START + 12 * 10**9), "--topic", "exec.*",
    )  # fmt: skip
    assert code == 0
    seqs = sorted(
        int(r["seq"]) for p in (tmp_path / "t").rglob("*.csv") for r in csv.DictReader(p.open())
    )
    assert seqs == list(range(11, 14))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key", "client_order_id"], "expected KIND=VALUE"),
        (["--key", "bogus=1"], "unknown index kind 'bogus'"),
        (["--since", "yesterday"], "neither ns since the epoch nor ISO-8601"),
        (["--since", "2", "--until", "1"], "--since is after --until"),
        (["--format", "parquet"], "needs --out DIR"),
    ],
)
def test_bad_export_options_are_one_usage_line(store, capsys, argv, message):
    code, out, err = cli(capsys, "export", "latest", "--root", store.root, *argv)
    assert code == 2
    assert err.startswith("mmaplog: usage error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_extra_is_named_in_one_line(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    code, _, err = cli(
        capsys, "export", "latest", "--root", store.root, "--format", "parquet", "--out", tmp_path
    )
    assert code == 2
    assert err.strip() == (
        "mmaplog: error: pyarrow is not installed: install the 'analytics' extra "
        "(pip install 'mmaplog[analytics]')"
    )
    monkeypatch.delitem(sys.modules, "pyarrow")
    monkeypatch.setitem(sys.modules, "duckdb", None)
    code, _, err = cli(capsys, "sql", "select 1", "--root", store.root)
    assert code == 2
    assert "duckdb is not installed: install the 'analytics' extra" in err
    # CSV needs neither.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, _ = cli(
        capsys, "export", "latest", "--root", store.root, "--format", "csv", "--out", tmp_path / "c"
    )
    assert code == 0


def test_sql_answers_across_runs_and_instances(store, tmp_path, capsys):
    cache = tmp_path / "cache"
    q = (
        "select instance_id, count(*) as fills, sum(qty) as qty from Fill "
        "where instrument = 'ETHUSDT' group by all order by 1"
    )
    code, out, _ = cli(capsys, "sql", q, "--root", store.root, "--cache", cache, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"instance_id": "trader-001", "fills": 16, "qty": 24.0},
        {"instance_id": "trader-002", "fills": 8, "qty": 12.0},
    ]
    q = "select run_id from Reject where client_order_id = 'O-trader-001-0004' order by run_id"
    code, out, _ = cli(capsys, "sql", q, "--root", store.root, "--cache", cache, "--csv")
    assert code == 0
    assert out.splitlines() == ["run_id", store.runs_ids[0], store.runs_ids[2]]
    code, out, _ = cli(
        capsys, "sql",
        "select r.instance_id, count(*) n from entries e join runs r using (run_id) "
        "group by 1 order by 1",
        "--root", store.root, "--cache", cache,
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["instance_id", "n"]
    assert lines[1].split() == ["trader-001", "84"]
    assert lines[-1] == "(2 rows)"
    # A sealed run is exported once: the cache is reused.
    stamp = next(cache.rglob("data.parquet")).stat().st_mtime_ns
    cli(capsys, "sql", "select 1", "--root", store.root, "--cache", cache)
    assert next(cache.rglob("data.parquet")).stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("sql", "message"),
    [("selec 1", "Parser Error"), ("select nope from entries", "Binder Error")],
)
def test_bad_sql_is_one_line_exit_2(store, tmp_path, capsys, sql, message):
    code, _, err = cli(capsys, "sql", sql, "--root", store.root, "--cache", tmp_path / "c")
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_sql_on_an_empty_store_has_an_empty_entries_view(tmp_path, capsys):
    (tmp_path / "root").mkdir()
    code, out, _ = cli(capsys, "sql", "select count(*) n from entries", "--root", tmp_path / "root")
    assert code == 0
    assert out.splitlines()[1].strip() == "0"


def test_diff_identical_runs_exit_0_and_different_ones_show_the_field(store, capsys):
    a, _, c = store.runs_ids
    code, out, _ = cli(capsys, "diff", a, a, "--root", store.root)
    assert code == 0
    assert "identical: 40 entries match" in out
    code, out, _ = cli(capsys, "diff", a, c, "--root", store.root, "--ignore", "filled_at")
    assert code == 1
    assert "first divergence at entry 2 (A seq 3 / B seq 3)" in out
    assert "payload: Fill differs: px 100.0 != 100.5" in out
    code, out, _ = cli(capsys, "diff", a, c, "--root", store.root, "--json", "--by", "type")
    doc = json.loads(out)
    assert code == 1
    assert doc["divergence"]["group"] == "Fill"
    assert {f[0] for f in doc["divergence"]["fields"]} >= {"px"}
    assert doc["counts"]["Fill"] == [16, 16]


def test_diff_by_key_and_bad_options(store, capsys):
    a, b, _ = store.runs_ids
    code, out, _ = cli(
        capsys, "diff", a, b, "--root", store.root, "--by", "key", "--key-kind", "client_order_id"
    )
    assert code == 1  # other client order ids: nothing to pair
    assert "DIVERGED" in out
    code, _, err = cli(capsys, "diff", a, b, "--root", store.root, "--by", "key")
    assert code == 2
    assert "--by key needs --key-kind" in err
    code, _, err = cli(
        capsys, "diff", a, b, "--root", store.root, "--by", "key", "--key-kind", "nope"
    )
    assert code == 2
    assert "unknown index kind" in err


@pytest.mark.parametrize("sql", ["", "   ", "-- comment only", "/* nothing */ ;"])
def test_an_empty_sql_statement_is_one_usage_line(store, tmp_path, capsys, sql):
    code, out, err = cli(capsys, "sql", sql, "--root", store.root, "--cache", tmp_path / "c")
    assert code == 2
    assert out == ""
    assert "no SQL statement to run" in err
    assert len(err.strip().splitlines()) == 1


def test_sql_json_is_valid_json_without_nan_and_with_unique_keys(store, tmp_path, capsys):
    sql = "select 'nan'::double x, '-inf'::double y, [1.5, 'inf'::double] l, 1 a, 2 a, 3 a_2"
    argv = ["sql", sql, "--root", store.root, "--cache", tmp_path / "c", "--json"]
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc == [{"x": None, "y": None, "l": [1.5, None], "a": 1, "a_3": 2, "a_2": 3}]


def test_sql_names_the_run_whose_manifest_value_does_not_fit(tmp_path, capsys):
    from mmaplog.demo import run_demo

    summary = run_demo(tmp_path, entries=20, seed=10**23)
    code, out, err = cli(capsys, "sql", "select seed from runs", "--root", tmp_path)
    assert code == 1
    assert out == ""
    assert f"run demo/{summary.run_id}: manifest field seed" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", None])
def test_sql_says_which_runs_it_left_out_and_exits_1(tmp_path, capsys, garbage):
    from tests.test_store_reader import build_run

    bad = build_run(tmp_path, "1700000000000000001-0000000a", n=3)
    build_run(tmp_path, "1700000000000000002-0000000b", n=5)
    if garbage is None:
        (bad / "manifest.json").unlink()
        (bad / "LOCK").touch()
    else:
        (bad / "manifest.json").write_text(garbage)
    code, out, err = cli(capsys, "sql", "select count(*) n from entries", "--root", tmp_path)
    assert code == 1
    assert out.splitlines()[1].strip() == "5"  # the readable run is still queried
    assert err.startswith("mmaplog: corrupt: run trader-001/1700000000000000001-0000000a ")
    assert len(err.strip().splitlines()) == 1


def test_diff_takes_one_run_per_side_never_all(store, capsys):
    a, _, _ = store.runs_ids
    for argv in (["all", a], [a, "all"]):
        code, out, err = cli(capsys, "diff", *argv, "--root", store.root)
        assert code == 2
        assert out == ""
        assert "invalid run id 'all'" in err
