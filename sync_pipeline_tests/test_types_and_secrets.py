"""Pure rules: SQLite affinity, the PostgreSQL type chosen for it, COPY encoding, DSN masking."""

from __future__ import annotations

import pytest

from sync_pipeline.engine.secrets import mask_dsn, redact
from sync_pipeline.engine.types import Affinity, ValueRejected, affinity, pg_type_for


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
    ],
)
def test_mask_dsn_hides_the_password_in_every_form(dsn, masked):
    assert mask_dsn(dsn) == masked


def test_redact_removes_a_password_quoted_back_by_a_driver():
    dsn = "postgresql://alice:hunter2@db/prod"
    message = 'FATAL: password "hunter2" rejected for postgresql://alice:hunter2@db/prod'
    assert "hunter2" not in redact(message, dsn)
