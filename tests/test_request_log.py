"""The request log's rows, as LiteLLM's logging callback builds them (LiteLLM itself is
not installed here: its base class is stubbed)."""

from __future__ import annotations

import sys
import types

import pytest


@pytest.fixture(scope="module")
def request_log():
    stub = types.ModuleType("litellm.integrations.custom_logger")
    stub.CustomLogger = type("CustomLogger", (), {"__init__": lambda self: None})
    names = ("litellm", "litellm.integrations", "litellm.integrations.custom_logger")
    saved = {n: sys.modules.get(n) for n in names}
    for name in names[:2]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[2]] = stub
    sys.modules.pop("sparkstack_host.request_log", None)
    from sparkstack_host import request_log as module
    yield module
    for name, old in saved.items():
        if old is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = old
    sys.modules.pop("sparkstack_host.request_log", None)


def call(key_hash: str, alias: str | None = None) -> dict:
    return {"standard_logging_object": {
        "startTime": 1.0, "endTime": 2.0, "model_group": "fast",
        "metadata": {"user_api_key_hash": key_hash, "user_api_key_alias": alias}}}


def test_the_master_key_is_logged_by_name(request_log):
    row = request_log.row_from_call(call("litellm_proxy_master_key"), "ok", False)
    assert row[3:5] == ("litellm_proxy_master_key", "master key")


def test_a_key_keeps_its_alias_and_a_raw_key_is_never_stored(request_log):
    row = request_log.row_from_call(call("ab12" * 16, "team-a"), "ok", False)
    assert row[3:5] == ("ab12" * 16, "team-a")
    failed = request_log.row_failed({"model": "fast"}, RuntimeError("x"), "sk-secret", "")
    assert failed[3] != "sk-secret" and len(failed[3]) == 64 and failed[4] == ""


def test_rows_kept_while_postgres_is_away_come_back_in_order_and_only_overflow_is_lost(
        request_log, tmp_path, monkeypatch):
    monkeypatch.setattr(request_log, "MAX_SPOOLED", 3)
    spool = request_log.Spool(str(tmp_path / "request-log.spool"))
    rows = [request_log.row_from_call(call(f"key{i}"), "ok", False) for i in range(4)]
    assert spool.keep(rows[:2]) == 0
    assert spool.keep(rows[2:]) == 1          # the fourth is over the bound: lost
    assert spool.take() == rows[:3]
    spool.clear()
    assert spool.take() == [] and spool.rows() == 0


def test_an_auto_request_is_logged_under_the_name_asked_with_the_decision(request_log):
    from sparkstack_host.auto_route import Decision, remember
    from sparkstack_host.contract import REQUEST_LOG_COLUMNS
    remember("call-1", Decision("code", "classifier", "code", 41.5, asked="auto"))
    routed = call("k")
    routed["litellm_call_id"] = "call-1"
    row = dict(zip(REQUEST_LOG_COLUMNS, request_log.row_from_call(routed, "ok", False)))
    assert (row["requested"], row["auto_profile"], row["auto_reason"], row["auto_ms"]) == \
        ("auto", "code", "classifier: code", 41.5)
    direct = dict(zip(REQUEST_LOG_COLUMNS, request_log.row_from_call(call("k"), "ok", False)))
    assert (direct["requested"], direct["auto_profile"], direct["auto_ms"]) == ("fast", "", None)
    failed = request_log.row_failed({"model": "code", "litellm_call_id": "call-1"},
                                    RuntimeError("x"), "k", "")
    assert dict(zip(REQUEST_LOG_COLUMNS, failed))["requested"] == "auto"


def test_rows_spooled_by_an_older_litellm_come_back_with_the_new_columns_empty(
        request_log, tmp_path):
    import json
    from sparkstack_host.contract import REQUEST_LOG_COLUMNS
    spool = request_log.Spool(str(tmp_path / "request-log.spool"))
    row = request_log.row_from_call(call("k"), "ok", False)
    old = [row[0].isoformat(), *row[1:20]]  # the 20 columns before the auto profiles'
    (tmp_path / "request-log.spool").write_text(json.dumps(old) + "\n")
    taken = spool.take()[0]
    assert len(taken) == len(REQUEST_LOG_COLUMNS) and taken[20:] == ("", "", None, "")
    # one kept after the auto profiles' columns, before the process's
    (tmp_path / "request-log.spool").write_text(json.dumps(old + ["code", "rule: x", 2.0])
                                                + "\n")
    assert spool.take()[0][20:] == ("code", "rule: x", 2.0, "")


def test_each_row_names_the_litellm_process_that_answered(request_log, monkeypatch):
    from sparkstack_host.contract import REQUEST_LOG_COLUMNS
    monkeypatch.setattr(request_log, "PROCESS", "2")
    row = dict(zip(REQUEST_LOG_COLUMNS, request_log.row_from_call(call("k"), "ok", False)))
    assert row["process"] == "2"
    failed = request_log.row_failed({"model": "code"}, RuntimeError("x"), "k", "")
    assert dict(zip(REQUEST_LOG_COLUMNS, failed))["process"] == "2"


def test_streams_a_killed_process_left_under_way_are_recorded_as_cut(request_log, tmp_path):
    import asyncio

    from sparkstack_host.contract import REQUEST_LOG_COLUMNS
    path = tmp_path / "streams-1.jsonl"
    journal = request_log.StreamsJournal(str(path))
    log = request_log.RequestLog()
    log.streams = journal

    class Key:
        api_key, key_alias = "litellm_proxy_master_key", None

    async def chunks(n):
        for i in range(n):
            yield i

    async def client(request, n, stop_after=None):
        got = []
        async for c in log.async_post_call_streaming_iterator_hook(Key(), chunks(n), request):
            got.append(c)
            if stop_after is not None and len(got) == stop_after:
                return got, path.read_text()  # the process "dies" here, mid-stream
        return got, path.read_text()

    done, text = asyncio.run(client({"litellm_call_id": "a", "model": "fast"}, 3))
    assert done == [0, 1, 2] and text == ""          # ended: nothing under way
    _, text = asyncio.run(client({"litellm_call_id": "b", "model": "code"}, 5, stop_after=2))
    assert '"b"' in text
    # one whose first chunk was taken but not yet sent was never under way (LiteLLM
    # takes the first chunk before it answers; the front door re-sends such a request)
    _, text_c = asyncio.run(client({"litellm_call_id": "c", "model": "fast"}, 5,
                                   stop_after=1))
    assert '"c"' not in text_c
    path.write_text(text)   # what the killed process left on disk
    left = request_log.StreamsJournal(str(path)).left_open()
    rows = [dict(zip(REQUEST_LOG_COLUMNS, request_log.row_cut(s))) for s in left]
    assert [(r["trace_id"], r["requested"], r["status"], r["final"], r["key_alias"])
            for r in rows] == [("b", "code", "cut", True, "master key")]
    assert path.read_text() == ""                     # recorded once
