"""A lean HTTP load generator, run on the simulated Spark itself (standard library only,
so it runs with the host's own python3): CONCURRENCY workers, each on one kept-alive
connection, send the same chat completion for SECONDS and time each answer.

    python3 frontdoor_load.py URL|unix:PATH KEY MODEL CONCURRENCY SECONDS

Prints one JSON line: requests/s, p50 and p99 in ms, errors. The client costs the same
on every path, so the paths differ only by what is between it and the engine.
"""

import asyncio
import json
import statistics
import sys
import time
import urllib.parse


async def connect(target: str):
    if target.startswith("unix:"):
        return await asyncio.open_unix_connection(target[5:])
    url = urllib.parse.urlsplit(target)
    return await asyncio.open_connection(url.hostname, url.port)


async def read_answer(reader) -> int:
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)):
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    return status


async def worker(target, request: bytes, stop: float, times: list, errors: list):
    reader, writer = await connect(target)
    while time.monotonic() < stop:
        start = time.monotonic()
        try:
            writer.write(request)
            status = await read_answer(reader)
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            errors.append(repr(e))
            writer.close()
            reader, writer = await connect(target)
            continue
        (times if status == 200 else errors).append(time.monotonic() - start)
    writer.close()


async def main(target, key, model, concurrency, seconds):
    body = json.dumps({"model": model, "max_tokens": 32, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: spark\r\n"
               f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    times, errors = [], []
    began = time.monotonic()
    await asyncio.gather(*(worker(target, request, began + seconds, times, errors)
                           for _ in range(concurrency)))
    span = time.monotonic() - began
    times.sort()
    print(json.dumps({"rps": len(times) / span, "p50": statistics.median(times) * 1000,
                      "p99": times[int(0.99 * (len(times) - 1))] * 1000,
                      "errors": len(errors)}))


if __name__ == "__main__":
    t, k, m, c, s = sys.argv[1:6]
    asyncio.run(main(t, k, m, int(c), float(s)))
