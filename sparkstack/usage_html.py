"""The usage report as one self-contained HTML page, readable offline: the headline,
requests over time stacked by how they were answered, latency percentiles per group
(inline SVG, no script, nothing fetched), and the table."""

from __future__ import annotations

from html import escape

COLORS = {"local": "#2e7d32", "fallback": "#f9a825", "cloud": "#1565c0", "error": "#c62828"}


def requests_chart(series: list[dict], width: int = 860, height: int = 260) -> str:
    times = sorted({p["t"] for p in series})
    counts = {(p["t"], p["kind"]): p["n"] for p in series}
    top = max([sum(counts.get((t, k), 0) for k in COLORS) for t in times] or [1])
    step = (width - 60) / max(len(times), 1)
    bars = []
    for i, t in enumerate(times):
        y = height - 30
        for kind, color in COLORS.items():
            n = counts.get((t, kind), 0)
            if n:
                h = (height - 50) * n / top
                y -= h
                bars.append(f'<rect class="bar {kind}" x="{50 + i * step:.1f}" y="{y:.1f}" '
                            f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
                            f'<title>{escape(t)} {kind}: {n}</title></rect>')
    labels = "".join(f'<text x="{50 + i * step:.1f}" y="{height - 12}" font-size="10">'
                     f'{escape(t[5:])}</text>' for i, t in enumerate(times)
                     if i % max(1, len(times) // 8) == 0)
    legend = "".join(f'<rect x="{60 + i * 110}" y="4" width="12" height="12" fill="{c}"/>'
                     f'<text x="{76 + i * 110}" y="15" font-size="12">{k}</text>'
                     for i, (k, c) in enumerate(COLORS.items()))
    return (f'<svg id="requests-over-time" width="{width}" height="{height}" role="img" '
            f'aria-label="requests over time">{legend}'
            f'<text x="4" y="{height / 2:.0f}" font-size="11">{top}</text>'
            f'{"".join(bars)}{labels}</svg>')


def latency_chart(rows: list[dict], width: int = 860) -> str:
    rows = [r for r in rows if r["p95_ms"] is not None]
    height = 40 + 34 * len(rows)
    top = max([r["p95_ms"] for r in rows] or [1]) or 1
    parts = []
    for i, r in enumerate(rows):
        y = 30 + 34 * i
        for j, (key, color) in enumerate((("p50_ms", "#66bb6a"), ("p95_ms", "#ef6c00"))):
            w = (width - 260) * r[key] / top
            parts.append(f'<rect class="bar {key}" x="160" y="{y + j * 13}" width="{w:.1f}" '
                         f'height="12" fill="{color}"><title>{escape(r["group"])} {key}: '
                         f'{r[key]:.0f} ms</title></rect><text x="{166 + w:.1f}" '
                         f'y="{y + 10 + j * 13}" font-size="10">{r[key]:.0f} ms</text>')
        parts.append(f'<text x="4" y="{y + 18}" font-size="12">{escape(r["group"])}</text>')
    return (f'<svg id="latency-percentiles" width="{width}" height="{height}" role="img" '
            f'aria-label="latency percentiles"><text x="160" y="16" font-size="12">p50 '
            f'(green), p95 (orange)</text>{"".join(parts)}</svg>')


def page(report: dict) -> str:
    head = ("<tr><th>{by}</th><th>requests</th><th>local</th><th>fallback</th><th>cloud"
            "</th><th>errors</th><th>tokens in</th><th>tokens out</th><th>p50 ms</th>"
            "<th>p95 ms</th><th>cost</th></tr>").format(by=escape(report["by"]))
    body = "".join(
        f"<tr><td>{escape(r['group'])}</td><td>{r['requests']}</td>"
        f"<td>{r['local_share']}%</td><td>{r['fallback_share']}%</td>"
        f"<td>{r['cloud_share']}%</td><td>{r['errors']}</td><td>{r['input_tokens']}</td>"
        f"<td>{r['output_tokens']}</td><td>{r['p50_ms'] if r['p50_ms'] is not None else '-'}"
        f"</td><td>{r['p95_ms'] if r['p95_ms'] is not None else '-'}</td>"
        f"<td>${r['cost']:.4f}</td></tr>" for r in report["rows"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sparkstack usage</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
h1{{font-size:1.3em}}</style></head><body>
<h1 id="headline">{escape(report["headline"])}</h1>
<p>Last {escape(report["since"])}, LiteLLM on {escape(", ".join(report["hosts"]))}.</p>
<h2>Requests over time (per {escape(report["step"])})</h2>
{requests_chart(report["series"])}
<h2>Latency by {escape(report["by"])}</h2>
{latency_chart(report["rows"])}
<h2>By {escape(report["by"])}</h2>
<table id="usage">{head}{body}</table>
</body></html>
"""
