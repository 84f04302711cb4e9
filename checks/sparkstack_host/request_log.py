"""LiteLLM's request log in this Spark's PostgreSQL: one row per model call.

LiteLLM loads `logger` from its config (`litellm_settings.callbacks:
sparkstack_host.request_log.logger`; the host package is on its PYTHONPATH), so it
works with no internet: no Prisma. Each row: when, the calling key (its hash and
alias, never the key), the model name asked for (a profile or an alias such as
claude-sonnet-4-5), what served it (host and model, or the cloud model) and how (local,
fallback, cloud), fallbacks attempted, tokens, latency and time to first token for
streams, status or error class, LiteLLM's cost. Each request has one final row (its
success, or the error its client got, also when no model was called, such as an
unknown model name); failed attempts a fallback recovered from are kept as rows that
are not final.

Recording never slows or fails a request: rows wait in memory and a background task
writes them in batches (COPY) every second. While PostgreSQL is unreachable (a restart,
an upgrade, a reboot) the rows are kept in a spool file on LiteLLM's own disk
(SPARKSTACK_REQUEST_LOG_SPOOL, at most `MAX_SPOOLED` rows) and written, oldest first,
once it answers again; only rows beyond that bound are lost, and counted in LiteLLM's
journal. Prompt and answer text are stored only with SPARKSTACK_REQUEST_LOG_TEXT=1.
Rows older than SPARKSTACK_REQUEST_LOG_DAYS are pruned hourly. Each batch also updates
the rollups the usage report reads (`usage_rollups`), in the same transaction.

Each row names the LiteLLM process that answered (SPARKSTACK_LITELLM_PROCESS). A stream
is noted in that process's journal of streams under way (SPARKSTACK_STREAMS_JOURNAL)
once its answer has begun (its first chunk has gone out), and struck off when it ends: what a killed process left
there are streams its clients saw cut, and its next start records them with status
`cut`. A request that had received nothing is not in it: the front door gives it to
another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from litellm.integrations.custom_logger import CustomLogger

from .auto_route import decision_of
from .contract import (
    REQUEST_LOG_COLUMNS,
    REQUEST_LOG_DDL,
    REQUEST_LOG_LATER_DEFAULTS,
    REQUEST_LOG_TABLE,
    USAGE_HOURLY_TABLE,
    USAGE_ROLLUP_DDL,
)
from .usage_rollups import (
    APPLY_BATCH,
    BATCH_TABLE,
    CREATE_BATCH,
    ROLLUP_LOCK,
    prune,
    rollup_from,
)

log = logging.getLogger("sparkstack.request_log")
MAX_WAITING = 20000
MAX_SPOOLED = 200_000    # rows kept on disk while PostgreSQL is away (~100 MB at most)
FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 3600


def _ms(seconds) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 1)


def _time(value) -> float | None:
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


# what LiteLLM passes as the key's hash for a request made with its master key
MASTER_KEY = "litellm_proxy_master_key"


def key_hash(value: str | None) -> str:
    """LiteLLM passes the key's hash; a raw key (sk-...) is hashed here, never stored."""
    value = value or ""
    return hashlib.sha256(value.encode()).hexdigest() if value.startswith("sk-") else value


def key_alias(hashed: str, alias: str | None) -> str:
    """The key's alias, and for the master key (which has none) its name."""
    return alias or ("master key" if hashed == MASTER_KEY else "")


PROCESS = os.environ.get("SPARKSTACK_LITELLM_PROCESS", "")


def auto_columns(d) -> tuple:
    """What an auto profile decided for the request (`d`), if it asked for one."""
    return (d.profile, f"{d.layer}: {d.reason}", d.classifier_ms) if d else ("", "", None)


def row_from_call(kwargs: dict, status: str, keep_text: bool) -> tuple:
    """A row from LiteLLM's logging kwargs for one model call (a success is final)."""
    payload = kwargs.get("standard_logging_object") or {}
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") or {}
    info = params.get("model_info") or {}
    started = _time(payload.get("startTime")) or time.time()
    ended = _time(payload.get("endTime")) or started
    first = _time(payload.get("completionStartTime"))
    stream = bool(payload.get("stream"))
    error = payload.get("error_information") or {}
    served = info.get("sparkstack_served") or payload.get("model") or ""
    call_id = kwargs.get("litellm_call_id")
    auto = decision_of(call_id)
    return (
        datetime.fromtimestamp(started, timezone.utc),
        payload.get("trace_id") or call_id or "", status == "ok",
        key_hash(payload.get("metadata", {}).get("user_api_key_hash")),
        key_alias(payload.get("metadata", {}).get("user_api_key_hash") or "",
                  payload.get("metadata", {}).get("user_api_key_alias")),
        (auto and auto.asked) or metadata.get("original_model_group")
        or payload.get("model_group") or "",
        served, info.get("sparkstack_host") or "", info.get("sparkstack_route") or "",
        int(metadata.get("attempted_fallbacks") or 0),
        int(payload.get("prompt_tokens") or 0), int(payload.get("completion_tokens") or 0),
        _ms(ended - started), _ms(first - started) if stream and first else None, stream,
        status, (error.get("error_class") or "") if status != "ok" else "",
        float(payload.get("response_cost") or 0.0),
        json.dumps(payload.get("messages")) if keep_text else None,
        json.dumps(payload.get("response")) if keep_text else None,
        *auto_columns(auto), PROCESS,
    )


def row_failed(request: dict, error: Exception, key: str, alias: str) -> tuple:
    """The final row of a request its client got an error for."""
    call_id = request.get("litellm_call_id")
    auto = decision_of(call_id)
    return (datetime.now(timezone.utc), call_id or "", True,
            key_hash(key), key_alias(key, alias),
            (auto and auto.asked) or str(request.get("model") or ""), "", "", "",
            0, 0, 0,
            None, None, bool(request.get("stream")), "error", type(error).__name__, 0.0,
            None, None, *auto_columns(auto), PROCESS)


def row_cut(stream: dict) -> tuple:
    """The final row of a stream its client saw cut: its process died under it."""
    return (datetime.fromtimestamp(stream["at"], timezone.utc), stream["id"], True,
            key_hash(stream["key"]), key_alias(stream["key"], stream["alias"]),
            stream["requested"], "", "", "", 0, 0, 0, None, None, True, "cut",
            "LiteLLM process died", 0.0, None, None, "", "", None, PROCESS)


class StreamsJournal:
    """Streams under way in this process, on disk (one JSON object per line: a stream
    when it starts, {"end": id} when it ends), so that its next start knows which ones
    its death cut."""

    def __init__(self, path: str):
        self.path = Path(path) if path else None
        self.open: set[str] = set()

    def started(self, stream: dict) -> None:
        self._append(stream)
        self.open.add(stream["id"])

    def ended(self, stream_id: str) -> None:
        self.open.discard(stream_id)
        if not self.open and self.path:
            self.path.write_text("")  # nothing under way: start the file afresh
        else:
            self._append({"end": stream_id})

    def _append(self, entry: dict) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def left_open(self) -> list[dict]:
        """Streams a previous run of this process started and never ended; forgets them."""
        if not self.path or not self.path.is_file():
            return []
        started: dict[str, dict] = {}
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # the line the death interrupted
                continue
            if "end" in entry:
                started.pop(entry["end"], None)
            else:
                started[entry["id"]] = entry
        self.path.write_text("")
        return list(started.values())


class Spool:
    """Rows kept on disk while PostgreSQL cannot take them: one JSON array per line."""

    def __init__(self, path: str):
        self.path = Path(path) if path else None

    def rows(self) -> int:
        if not self.path or not self.path.is_file():
            return 0
        with open(self.path, "rb") as f:
            return sum(1 for _ in f)

    def keep(self, batch: list[tuple]) -> int:
        """Append what fits under the bound; returns how many rows did not."""
        if not self.path:
            return len(batch)
        room = max(MAX_SPOOLED - self.rows(), 0)
        with open(self.path, "a") as f:
            for row in batch[:room]:
                f.write(json.dumps([v.isoformat() if isinstance(v, datetime) else v
                                    for v in row]) + "\n")
        return len(batch) - min(room, len(batch))

    def take(self) -> list[tuple]:
        if not self.path or not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            values = json.loads(line)
            values[0] = datetime.fromisoformat(values[0])
            # kept by an older LiteLLM, before the columns added since
            missing = len(REQUEST_LOG_COLUMNS) - len(values)
            values += list(REQUEST_LOG_LATER_DEFAULTS[-missing:]) if missing > 0 else []
            rows.append(tuple(values))
        return rows

    def clear(self) -> None:
        if self.path:
            self.path.unlink(missing_ok=True)


class RequestLog(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.dsn = os.environ.get("SPARKSTACK_REQUEST_LOG_DSN", "")
        self.spool = Spool(os.environ.get("SPARKSTACK_REQUEST_LOG_SPOOL", ""))
        self.keep_text = os.environ.get("SPARKSTACK_REQUEST_LOG_TEXT") == "1"
        self.days = int(os.environ.get("SPARKSTACK_REQUEST_LOG_DAYS", "30"))
        self.streams = StreamsJournal(os.environ.get("SPARKSTACK_STREAMS_JOURNAL", ""))
        # the streams a killed predecessor left under way, recorded once we write
        self.waiting: list[tuple] = [row_cut(s) for s in self.streams.left_open()]
        self.lost = 0
        self.task: asyncio.Task | None = None
        self.pruned = 0.0

    # --- LiteLLM's hooks (on the event loop; they only queue) --------------------------
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._queue(lambda: row_from_call(kwargs, "ok", self.keep_text))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._queue(lambda: row_from_call(kwargs, "error", self.keep_text))

    async def async_post_call_failure_hook(self, request_data, original_exception,
                                           user_api_key_dict, traceback_str=None):
        self._queue(lambda: row_failed(request_data or {}, original_exception,
                                       getattr(user_api_key_dict, "api_key", "") or "",
                                       getattr(user_api_key_dict, "key_alias", "") or ""))

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response,
                                                      request_data):
        """Note the stream in the journal from the moment its first chunk has gone out
        (LiteLLM takes the first chunk before it answers, and only when the next one is
        asked for has the answer been sent) to its end."""
        stream = None
        try:
            async for chunk in response:
                yield chunk
                if stream is None:
                    stream = self._stream_started(user_api_key_dict, request_data or {})
        finally:
            if stream:
                self.streams.ended(stream)

    def _stream_started(self, key, request: dict) -> str | None:
        try:
            call_id = request.get("litellm_call_id") or f"stream-{id(request)}"
            auto = decision_of(call_id)
            stream = {"id": call_id, "at": time.time(),
                      "requested": (auto and auto.asked) or str(request.get("model") or ""),
                      "key": getattr(key, "api_key", "") or "",
                      "alias": getattr(key, "key_alias", "") or ""}
            self.streams.started(stream)
            if self.waiting and (self.task is None or self.task.done()):
                # the rows of streams a killed predecessor left: written now
                self.task = asyncio.get_running_loop().create_task(self._writer())
            return call_id
        except Exception:  # never fail the stream for its bookkeeping
            log.exception("request log: a stream could not be noted")
            return None

    def _queue(self, make_row) -> None:
        try:
            row = make_row()
        except Exception:  # a payload we cannot read must not fail the request
            log.exception("request log: a request could not be recorded")
            return
        if len(self.waiting) >= MAX_WAITING:
            self.lost += 1
            return
        self.waiting.append(row)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._writer())

    # --- the writer ------------------------------------------------------------------------
    async def _writer(self) -> None:
        import psycopg
        created = False
        spooled = self.spool.rows()  # kept by this LiteLLM before a restart, or not
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            batch, self.waiting = self.waiting, []
            if not batch and not spooled and time.monotonic() - self.pruned < PRUNE_SECONDS:
                continue
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn,
                                                                 connect_timeout=3) as db:
                    if not created:
                        await self._create(db)
                        created = True
                    if spooled:  # what waited on disk goes first, in its order
                        kept = self.spool.take()
                        for i in range(0, len(kept), MAX_WAITING):
                            await self._write(db, kept[i:i + MAX_WAITING])
                        await db.commit()
                        self.spool.clear()
                        log.warning("request log: %d row(s) kept while PostgreSQL was "
                                    "away are written", len(kept))
                        spooled = 0
                    if batch:
                        await self._write(db, batch)
                    if time.monotonic() - self.pruned > PRUNE_SECONDS:
                        for statement in prune():
                            await db.execute(statement, (self.days,))
                        self.pruned = time.monotonic()
            except Exception as e:
                why = " ".join(str(e).split())  # one journal line (psycopg's are several)
                overflow = self.spool.keep(batch)
                spooled += len(batch) - overflow
                self.lost += overflow
                if overflow:
                    log.warning("request log: %d row(s) lost, PostgreSQL unreachable (%s) "
                                "and the spool is full; %d lost since LiteLLM started",
                                overflow, why, self.lost)
                elif batch:
                    log.warning("request log: PostgreSQL unreachable (%s); %d row(s) kept "
                                "on disk until it answers", why, spooled)

    @staticmethod
    async def _create(db) -> None:
        """The tables; rollups missing beside a log kept before them are built from it."""
        await db.execute(ROLLUP_LOCK)
        fresh = (await (await db.execute("SELECT to_regclass(%s) IS NULL",
                                         (USAGE_HOURLY_TABLE,))).fetchone())[0]
        await db.execute(REQUEST_LOG_DDL)
        await db.execute(USAGE_ROLLUP_DDL)
        if fresh:
            for statement in rollup_from(REQUEST_LOG_TABLE):
                await db.execute(statement)

    @staticmethod
    async def _write(db, batch: list[tuple]) -> None:
        """The rows and their rollups, in one transaction (committed as `db` closes)."""
        await db.execute(CREATE_BATCH)
        async with db.cursor() as cur:
            async with cur.copy(f"COPY {BATCH_TABLE} ({', '.join(REQUEST_LOG_COLUMNS)}) "
                                "FROM STDIN") as copy:
                for row in batch:
                    await copy.write_row(row)
        for statement in APPLY_BATCH:
            await db.execute(statement)


logger = RequestLog()
