"""Client traffic through LiteLLM while the fleet changes: real SDK clients (openai and
anthropic, no retries), paced to a rate per profile, each answer recorded with who gave
it, so a test can assert zero failures and who answered before, during and after."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import anthropic
import openai


@dataclass
class Answer:
    at: float            # time.monotonic() the request was sent
    seconds: float
    profile: str
    api: str             # openai or anthropic
    who: str             # "MODEL@HOST" for a local model, "cloud" for the cloud
    error: str = ""
    stream: bool = False
    begun: bool = False  # a stream's answer had begun (its headers had come) when it failed


@dataclass
class Run:
    """Answers in a row from one backend."""
    who: str
    first: float         # when its first request was sent
    last: float = 0.0    # ... and its last
    count: int = 0
    slowest: float = 0.0

    def add(self, answer: Answer) -> None:
        self.last, self.count = answer.at, self.count + 1
        self.slowest = max(self.slowest, answer.seconds)


# seconds within which the front door's LiteLLM processes take a routes change
CHANGEOVER = 1.0


def changeover_in(journal: str) -> float:
    """The window within which answers may alternate: CHANGEOVER, or more when the
    gate's journal says its routes changes took longer to reach every LiteLLM process
    ("changed over within N ms": a process busy relaying a fast stream runs its loop,
    and takes the new routes, late)."""
    logged = [int(ms) / 1000 for ms in re.findall(r"changed over within (\d+) ms", journal)]
    return CHANGEOVER + max(logged, default=0.0)


def who_answered(text: str) -> str:
    """The stand-ins answer "standin:MODEL@HOST:PORT ..." or "cloud-standin:...": ."""
    label, _, rest = text.partition(":")
    if label == "cloud-standin":
        return "cloud"
    return rest.split(":", 1)[0] if label == "standin" else f"unknown({text[:40]})"


def backend_of(headers) -> str:
    """The deployment LiteLLM says answered (x-litellm-model-id, PROFILE@BACKEND):
    "HOST:PORT" for a local model, "cloud" for the cloud. A real model's text says
    nothing about who wrote it."""
    return headers.get("x-litellm-model-id", "unknown@unknown").split("@", 1)[1]


class Traffic:
    """Asks each profile at `rate` requests/s in all (half openai, half anthropic) until
    stopped or `limit` seconds pass."""

    def __init__(self, base_url: str, key: str, profiles: list[str], rate: float = 6.0,
                 limit: float = 600, by_backend: bool = False, streams: bool = False):
        """`by_backend`: who answered is the backend LiteLLM names (backend_of), not
        the stand-ins' text. `streams`: as many streaming clients again."""
        self.by_backend = by_backend
        self.openai = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
        self.anthropic = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
        self.answers: list[Answer] = []
        self.done = threading.Event()
        self.limit = limit
        self.threads = [threading.Thread(target=self._loop, args=(p, api, 2 / rate, stream))
                        for p in profiles for api in ("openai", "anthropic")
                        for stream in ((False, True) if streams else (False,))]
        self.started = 0.0

    def _ask(self, profile: str, api: str) -> str:
        messages = [{"role": "user", "content": "hi"}]
        if api == "openai":
            raw = self.openai.chat.completions.with_raw_response.create(
                model=profile, messages=messages, max_tokens=8, timeout=120)
            text = raw.parse().choices[0].message.content
        else:
            raw = self.anthropic.messages.with_raw_response.create(
                model=profile, messages=messages, max_tokens=8, timeout=120)
            text = raw.parse().content[0].text
        return backend_of(raw.headers) if self.by_backend else who_answered(text)

    def _stream(self, profile: str, api: str, begun: list) -> str:
        messages = [{"role": "user", "content": "hi"}]
        text = ""
        if api == "openai":
            chunks = self.openai.chat.completions.create(
                model=profile, messages=messages, max_tokens=8, timeout=120, stream=True)
            begun.append(True)  # the answer's status and headers are in
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
        else:
            with self.anthropic.messages.stream(model=profile, messages=messages,
                                                max_tokens=8, timeout=120) as events:
                begun.append(True)
                for piece in events.text_stream:
                    text += piece
        return who_answered(text)

    def _loop(self, profile: str, api: str, interval: float, stream: bool = False) -> None:
        while not self.done.is_set() and time.monotonic() - self.started < self.limit:
            start, begun = time.monotonic(), []
            try:
                who = self._stream(profile, api, begun) if stream else self._ask(profile, api)
                error = ""
            except Exception as e:  # any failure a client would see
                who, error = "", repr(e)[:300]
            self.answers.append(Answer(start, time.monotonic() - start, profile, api, who,
                                       error, stream, bool(begun)))
            time.sleep(max(0.0, interval - (time.monotonic() - start)))

    def __enter__(self) -> "Traffic":
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for t in self.threads:
            t.join()

    # --- what the tests assert ---------------------------------------------------------
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.error]

    def rate(self, profile: str) -> float:
        mine = [a for a in self.answers if a.profile == profile]
        span = max(a.at for a in mine) - min(a.at for a in mine) if len(mine) > 1 else 0
        return (len(mine) - 1) / span if span else 0.0

    def sequence(self, profile: str, changeover: float = CHANGEOVER) -> list[str]:
        """Who answered `profile`, in the order the requests were sent, runs collapsed.
        A switch back within `changeover` seconds of a switch is the front door's
        processes taking new routes one moment apart (the gate signals them at once and
        logs how far apart they took them): not a switch of its own."""
        runs = [(run.who, run.first) for run in self.runs(profile)]
        i = 1
        while i < len(runs) - 1:
            if runs[i + 1][0] == runs[i - 1][0] and runs[i + 1][1] - runs[i][1] <= changeover:
                del runs[i + 1]                       # the process not yet changed over
                if i + 1 < len(runs) and runs[i + 1][0] == runs[i][0]:
                    del runs[i + 1]                   # ... and the changed one again
                continue
            i += 1
        return [who for who, _ in runs]

    def runs(self, profile: str) -> list[Run]:
        """Who answered `profile`, in the order the requests were sent: one Run for each
        stretch of answers from the same backend (failures left out)."""
        runs: list[Run] = []
        for a in sorted(self.answers, key=lambda a: a.at):
            if a.profile != profile or a.error:
                continue
            if not runs or runs[-1].who != a.who:
                runs.append(Run(a.who, a.at))
            runs[-1].add(a)
        return runs

    def timeline(self, profile: str) -> str:
        """The runs uncollapsed, for an assertion's message: each run's first and last
        send (s from the start), its answers and its slowest."""
        return "; ".join(f"{r.who} {r.first - self.started:.2f}-{r.last - self.started:.2f} s "
                         f"x{r.count} (slowest {r.slowest:.2f} s)" for r in self.runs(profile))

    def off_local(self, profile: str) -> float:
        """Seconds from the first to the last request the cloud answered (0 if none)."""
        cloud = [a.at for a in self.answers if a.profile == profile and a.who == "cloud"]
        return max(cloud) - min(cloud) if cloud else 0.0
