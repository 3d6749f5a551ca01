"""Pure rules: SQLite affinity, the PostgreSQL type chosen for it, COPY encoding, DSN masking."""

from __future__ import annotations

import psycopg2.extensions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipeline.engine.secrets import mask_dsn, redact
from sync_pipeline.engine.types import Affinity, ValueRejected, affinity, batch_encoder, pg_type_for


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", Affinity.INTEGER),
        ("int", Affinity.INTEGER),
        ("TINYINT", Affinity.INTEGER),
        ("BIGINT UNSIGNED", Affinity.INTEGER),
        ("POINT", Affinity.INTEGER),  # rule 1 wins: "POINT" contains "INT"
        ("VARCHAR(255)", Affinity.TEXT),
        ("NCLOB", Affinity.TEXT),
        ("CHARINT", Affinity.INTEGER),  # rule order: INT before CHAR
        ("BLOB", Affinity.BLOB),
        ("", Affinity.BLOB),
        ("REAL", Affinity.REAL),
        ("DOUBLE PRECISION", Affinity.REAL),
        ("FLOATING POINT", Affinity.INTEGER),  # "POINT" again
        ("DECIMAL(10,5)", Affinity.NUMERIC),
        ("DATETIME", Affinity.NUMERIC),
        ("some made-up type", Affinity.NUMERIC),
    ],
)
def test_affinity_follows_sqlite_rule_order(declared, expected):
    assert affinity(declared) is expected


@pytest.mark.parametrize(
    ("declared", "pg"),
    [
        ("INTEGER", "bigint"),
        ("INT", "bigint"),
        ("SMALLINT", "bigint"),
        ("TEXT", "text"),
        ("BLOB", "bytea"),
        ("", "text"),
        ("REAL", "double precision"),
        ("NUMERIC", "numeric"),
        ("BOOLEAN", "boolean"),
        ("TIMESTAMP", "text"),
        ("DATE", "text"),
        ("JSON", "text"),
        ("🦆 whatever", "text"),
    ],
)
def test_postgres_type_for_declared_type(declared, pg):
    assert pg_type_for(declared).name == pg


@pytest.mark.parametrize(
    ("declared", "value", "field"),
    [
        ("INTEGER", 2**63 - 1, "9223372036854775807"),
        ("INTEGER", None, "\\N"),
        ("TEXT", "tab\there\nnew\\line\r", "tab\\there\\nnew\\\\line\\r"),
        ("REAL", float("inf"), "Infinity"),
        ("REAL", float("-inf"), "-Infinity"),
        ("REAL", -0.0, "-0.0"),
        ("REAL", 0.1, "0.1"),
        ("REAL", 3, "3"),
        ("BLOB", b"\x00\xff", "\\\\x00ff"),
        ("BOOLEAN", 1, "t"),
        ("NUMERIC", 12.5, "12.5"),
        ("DATETIME", 1700000000, "1700000000"),
        ("", 0.25, "0.25"),
    ],
)
def test_copy_encoding_of_values_that_fit(declared, value, field):
    assert pg_type_for(declared).encode(value) == field


@pytest.mark.parametrize(
    ("declared", "value", "reason"),
    [
        ("INTEGER", "12a", "not an integer"),
        ("INTEGER", 1.5, "not an integer"),
        ("TEXT", "nul\x00byte", "NUL byte"),
        ("TEXT", b"blob", "not text"),
        ("REAL", 2**53 + 1, "cannot be stored exactly"),
        ("BOOLEAN", 2, "not a boolean"),
        ("BLOB", "text", "not a blob"),
    ],
)
def test_values_that_would_change_are_rejected_with_a_reason(declared, value, reason):
    with pytest.raises(ValueRejected, match=reason):
        pg_type_for(declared).encode(value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://alice:s3cr%40t@db.example:5432/prod", "postgresql://alice:***@db.example:5432/prod"),
        ("postgresql://alice@db/prod", "postgresql://alice@db/prod"),
        ("host=db user=alice password=s3cret dbname=prod", "host=db user=alice password=*** dbname=prod"),
        ("host=db password='with space' dbname=prod", "host=db password=*** dbname=prod"),
        ("postgresql://db/prod?user=alice&password=s3cret", "postgresql://db/prod?user=alice&password=***"),
        ("postgresql://u:pa?ss#w/rd@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("host=h password=a&b dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_mask_dsn_hides_the_password_in_every_form(dsn, masked):
    assert mask_dsn(dsn) == masked


@pytest.mark.parametrize("password", ["pa?ss", "with#hash", "a&b", "x/y", "at@sign", "100%", "'quoted'"])
def test_no_password_libpq_would_accept_survives_masking(password):
    from urllib.parse import quote

    checked = 0
    for dsn in (
        f"postgresql://u:{password}@h:5432/db",  # raw: libpq takes some of these, not all
        f"postgresql://u:{quote(password, safe='')}@h:5432/db",
        psycopg2.extensions.make_dsn(host="h", user="u", password=password),
    ):
        try:
            libpq_password = psycopg2.extensions.parse_dsn(dsn).get("password")
        except psycopg2.ProgrammingError:
            continue
        if libpq_password != password:
            continue
        checked += 1
        shown = mask_dsn(dsn)
        assert libpq_password not in shown, (dsn, shown)
        assert "***" in shown
        assert libpq_password not in redact(f"error for {dsn}: password {libpq_password} rejected", dsn)
    assert checked >= 2


def test_redact_removes_a_password_quoted_back_by_a_driver():
    dsn = "postgresql://alice:hunter2@db/prod"
    message = 'FATAL: password "hunter2" rejected for postgresql://alice:hunter2@db/prod'
    assert "hunter2" not in redact(message, dsn)


@settings(max_examples=300, deadline=None)
@given(
    declared=st.lists(
        st.sampled_from(["INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC", "BOOLEAN", ""]), min_size=1, max_size=5
    ),
    data=st.data(),
)
def test_the_inlined_batch_encoder_agrees_with_the_per_value_encoders(declared, data):
    types = [pg_type_for(d) for d in declared]
    value = st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.text(),
        st.binary(max_size=4),
        st.sampled_from([0, 1]),
    )
    rows = data.draw(st.lists(st.tuples(*[value] * len(types)), max_size=5))

    def one_by_one() -> list[str] | type[ValueRejected]:
        try:
            return ["\t".join(t.encode(v) for t, v in zip(types, row, strict=True)) for row in rows]
        except ValueRejected:
            return ValueRejected

    try:
        batched: list[str] | type[ValueRejected] = batch_encoder(types)(rows)
    except ValueRejected:
        batched = ValueRejected
    assert batched == one_by_one()
