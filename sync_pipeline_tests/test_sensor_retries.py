"""The file sensor after failed syncs: quick retries, then a backoff that never gives up.

Runs are recorded in a real Dagster instance and finish through real run events; the
sensor's clock is the real one plus jumps, so minutes of backoff pass in no time.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterRunStatus, SensorResult

from sync_pipeline.sensor import BACKOFF_S, MAX_ATTEMPTS
from sync_pipeline_tests.test_sensor import Ticker, settle

NEXT_TRY = re.compile(r"next try at (\d\d:\d\d:\d\d) \(UTC\)")


def fail_quick_retries(ticker: Ticker) -> None:
    """PostgreSQL is down: the first try and its quick retries fail, on consecutive ticks."""
    first = len(ticker.run_keys)
    for attempt in range(1, MAX_ATTEMPTS):
        ticker.fail()
        result = ticker.tick()
        assert isinstance(result, SensorResult) and len(result.run_requests) == 1, f"no quick retry {attempt}"
    ticker.fail()
    assert len(ticker.run_keys) == first + MAX_ATTEMPTS - 1


def next_try(ticker: Ticker, message: str) -> datetime:
    """The time in a skip reason, as an aware datetime within a day of the ticker's clock."""
    match = NEXT_TRY.search(message)
    assert match, f"no next try in {message!r}"
    now = ticker.now()
    at = datetime.combine(now.date(), datetime.strptime(match.group(1), "%H:%M:%S").time(), UTC)
    return at + timedelta(days=1) if at < now - timedelta(hours=12) else at


def change(ticker: Ticker, writer: sqlite3.Connection, value: str) -> None:
    """A commit, then the ticks the sensor needs to see it settle and ask for a run."""
    before = len(ticker.run_keys)
    writer.execute("INSERT INTO t (v) VALUES (?)", (value,))
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == before + 1


def content(run_key: str) -> str:
    return run_key.split("#")[0]


def test_after_three_failures_postgresql_coming_back_gets_a_sync_without_a_new_sqlite_write(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    fail_quick_retries(ticker)
    assert MAX_ATTEMPTS == 3

    first_wait = ticker.tick()
    message = ticker.skip_message(first_wait)
    assert "last sync of this content failed 3 times; next try at " in message
    assert "has not changed" not in message
    retry_at = next_try(ticker, message)
    assert timedelta(seconds=BACKOFF_S[0] - 2) < retry_at - ticker.now() <= timedelta(seconds=BACKOFF_S[0])

    # Ticks during the wait: no run, the same honest reason.
    for _ in range(3):
        ticker.advance(seconds=15)
        waiting = ticker.tick()
        assert not isinstance(waiting, SensorResult) or not waiting.run_requests
        assert ticker.skip_message(waiting) == message
    assert len(ticker.run_keys) == MAX_ATTEMPTS

    # PostgreSQL is back; nothing was written to SQLite. The first tick past the wait retries.
    ticker.advance(seconds=(retry_at - ticker.now()).total_seconds() + 1)
    retry = ticker.tick()
    assert isinstance(retry, SensorResult) and len(retry.run_requests) == 1
    assert retry.run_requests[0].tags["sync_reason"] == "retry after backoff"
    assert len(set(ticker.run_keys)) == len(ticker.run_keys) == MAX_ATTEMPTS + 1  # a new key per attempt
    assert {content(k) for k in ticker.run_keys} == {content(ticker.run_keys[0])}  # all for the same content

    ticker.succeed()
    for _ in range(3):
        ticker.advance(minutes=20)
        assert "since the last successful sync" in ticker.skip_message(ticker.tick())
    assert len(ticker.run_keys) == MAX_ATTEMPTS + 1


def test_the_backoff_grows_then_retries_every_15_minutes_for_as_long_as_it_takes(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    fail_quick_retries(ticker)

    waits = []
    for failures in range(MAX_ATTEMPTS, MAX_ATTEMPTS + len(BACKOFF_S) + 2):
        message = ticker.skip_message(ticker.tick())
        assert f"failed {failures} times; next try at" in message
        wait = next_try(ticker, message) - ticker.now()
        waits.append(round(wait.total_seconds() / 60))
        ticker.advance(seconds=wait.total_seconds() - 5)
        assert ticker.skip_message(ticker.tick()) == message  # 5 s early: still waiting
        ticker.advance(seconds=6)
        result = ticker.tick()
        assert isinstance(result, SensorResult) and len(result.run_requests) == 1
        ticker.fail()

    assert waits == [1, 2, 5, 15, 15, 15]
    assert len(set(ticker.run_keys)) == len(ticker.run_keys) == MAX_ATTEMPTS + len(BACKOFF_S) + 2


def test_success_of_a_newer_fingerprint_resets_the_failure_count(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)
    fail_quick_retries(ticker)
    assert "failed 3 times; next try at" in ticker.skip_message(ticker.tick())

    # A new change is requested at once, backoff or not: one run per settled change.
    change(ticker, writer, "newer")
    assert content(ticker.run_keys[-1]) != content(ticker.run_keys[0])
    ticker.succeed()
    change(ticker, writer, "newest")
    ticker.fail()

    # One failure since the success: a quick retry on the next tick, not the backoff.
    retry = ticker.tick()
    assert isinstance(retry, SensorResult) and len(retry.run_requests) == 1
    assert retry.run_requests[0].tags["sync_reason"] == "retry"
    assert ticker.run_keys[-1].endswith("#2")


def test_a_new_change_during_an_outage_gets_one_try_then_continues_the_backoff(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)
    fail_quick_retries(ticker)
    ticker.tick()

    change(ticker, writer, "written during the outage")
    ticker.fail()

    message = ticker.skip_message(ticker.tick())
    assert "last sync of this content failed 1 time; next try at" in message
    assert "4 syncs in a row have failed" in message
    wait = next_try(ticker, message) - ticker.now()
    assert timedelta(seconds=BACKOFF_S[1] - 2) < wait <= timedelta(seconds=BACKOFF_S[1])


def test_success_of_this_content_resets_the_failure_count(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)
    ticker.fail()
    ticker.tick()
    ticker.fail()
    ticker.tick()
    ticker.succeed()  # the third try goes through
    assert "since the last successful sync" in ticker.skip_message(ticker.tick())

    change(ticker, writer, "later")
    ticker.fail()
    retry = ticker.tick()
    assert isinstance(retry, SensorResult) and len(retry.run_requests) == 1  # quick retry: the count restarted


# QUEUED is the same to the sensor (not finished), but a QUEUED DagsterRun needs a code location's origin.
@pytest.mark.parametrize("status", [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED])
def test_no_new_request_while_the_run_for_this_content_is_in_flight(wal_db, status):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    run = ticker.launch(status)

    for _ in range(4):
        ticker.advance(minutes=30)
        message = ticker.skip_message(ticker.tick())
        assert f"the sync of this content is {status.value.lower()}" in message
    assert len(ticker.run_keys) == 1

    ticker.fail(run)
    retry = ticker.tick()
    assert isinstance(retry, SensorResult) and len(retry.run_requests) == 1


def test_a_canceled_sync_is_retried_like_a_failed_one(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    ticker.instance.report_run_canceled(ticker.launch())

    retry = ticker.tick()

    assert isinstance(retry, SensorResult) and len(retry.run_requests) == 1
    assert content(ticker.run_keys[1]) == content(ticker.run_keys[0])


def test_a_clock_that_goes_back_never_makes_the_wait_longer_than_one_step(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    fail_quick_retries(ticker)
    ticker.tick()

    ticker.advance(hours=-3)
    message = ticker.skip_message(ticker.tick())

    assert next_try(ticker, message) - ticker.now() <= timedelta(seconds=BACKOFF_S[0])


def test_a_cursor_written_before_the_backoff_existed_is_read(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    ticker.fail()
    old = {
        "seen": content(ticker.run_keys[0]),
        "waited": 0,
        "requested": content(ticker.run_keys[0]),
        "attempt": 1,
    }
    ticker.cursor = json.dumps(old)

    retry = ticker.tick()

    assert isinstance(retry, SensorResult) and ticker.run_keys[-1] == f"{content(ticker.run_keys[0])}#2"
