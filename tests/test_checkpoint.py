"""Checkpoints: each update saves its own, only one that took effect is committed, and a
rollback returns to before the last update that changed the host, not a failed one."""

from __future__ import annotations

import pytest
from sparkstack_host import checkpoint
from sparkstack_host.contract import Layout


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.subprocess, "run", lambda *a, **kw: None)  # no systemd
    monkeypatch.setattr(checkpoint, "UNIT_DIR", str(tmp_path / "units"))
    layout = Layout(str(tmp_path / "opt"), str(tmp_path / "etc"), str(tmp_path / "var"))
    (tmp_path / "etc").mkdir()
    return layout


def version(layout: Layout, value: str | None = None) -> str:
    path = checkpoint.Path(layout.config_root) / "versions"
    if value is not None:
        path.write_text(value)
    return path.read_text()


def test_a_rollback_skips_the_failed_attempt_and_goes_back_before_the_last_update(layout):
    version(layout, "A")
    checkpoint.save(layout, "update-1")           # A -> B took effect
    version(layout, "B")
    checkpoint.commit(layout, "update-1")
    checkpoint.save(layout, "update-2")           # B -> C failed, rolled back to B
    version(layout, "C")
    checkpoint.restore(layout, "update-2")
    assert version(layout) == "B"
    assert checkpoint.history(layout) == ["update-1"]
    name, changed = checkpoint.rollback(layout)   # the owner asks: back before update-1
    assert name == "update-1" and version(layout) == "A"
    assert checkpoint.rollback(layout) is None    # nothing left to roll back


def test_the_checkpoints_of_committed_updates_are_kept(layout):
    for i in range(1, 6):
        version(layout, str(i))
        checkpoint.save(layout, f"update-{i}")
        checkpoint.commit(layout, f"update-{i}")
    checkpoint.save(layout, "update-6")           # not (yet) committed: kept too
    kept = sorted(p.stem for p in checkpoint.folder(layout).glob("*.tar"))
    assert kept == ["update-3", "update-4", "update-5", "update-6"]
    assert checkpoint.history(layout) == ["update-3", "update-4", "update-5"]
