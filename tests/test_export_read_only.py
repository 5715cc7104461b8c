"""`export` (and `verify --data-dir`) from a read-only data directory: a `:ro` volume, a
snapshot mount. A cleanly stopped store there has no `-wal`/`-shm` and SQLite cannot create
its `-shm`: that used to be reported as "store damaged … the member must not vote on this
data". Now the store opens read-only (immutable), the export says so, and its archive
verifies; a directory SQLite really cannot open is a plain open error, never "damaged"."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from coalitiond.cli import main
from coalitiond.log import Store, StoreOpenError
from coalitiond.log.archive import verify_archive
from coalitiond.testing.chain import ChainBuilder

HEIGHTS = 5


@contextmanager
def read_only_view(d: Path, tmp_path: Path) -> Iterator[Path]:
    """`d` seen through a read-only directory: a read-only bind mount when running as root
    (root ignores permission bits; CI runs as root), else mode 0555."""
    if os.geteuid() != 0:
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)
        return
    view = tmp_path / "ro-view"
    view.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(d), str(view)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"root without mount privileges here: {r.stderr.strip()}")
    try:
        assert not os.access(view, os.W_OK)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def _member_data(d: Path) -> ChainBuilder:
    chain = ChainBuilder(4)
    d.mkdir(parents=True)
    with Store.open(d / "log.sqlite3", chain.committee, signing_key=chain.keys[0]) as s:
        s.append_blocks([chain.next([b"cmd %d" % h]) for h in range(1, HEIGHTS + 1)])
    # A clean close checkpoints and removes the write-ahead log, as a stopped member leaves it.
    assert not (d / "log.sqlite3-wal").exists() and not (d / "log.sqlite3-shm").exists()
    return chain


def test_export_from_a_read_only_data_dir_opens_read_only_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "member-0-data"
    _member_data(data)
    before = sorted(p.name for p in data.iterdir())
    out = tmp_path / "member-0.archive"
    with read_only_view(data, tmp_path) as ro:
        code = main(["export", "--data-dir", str(ro), "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "damaged" not in captured.err and "must not vote" not in captured.err
        assert (f"coalitiond: {ro} is read-only: opened the store read-only as an immutable "
                f"file (no write-ahead log beside it)") in captured.err
        assert f"heights 1..{HEIGHTS}" in captured.out
        assert main(["verify", "--data-dir", str(ro)]) == 0
        assert ": OK: committee " in capsys.readouterr().out
    assert verify_archive(out).summary.height == HEIGHTS
    assert sorted(p.name for p in data.iterdir()) == before  # nothing written beside it


def test_a_store_that_cannot_be_opened_is_an_open_error_not_damage(tmp_path: Path) -> None:
    """A write-ahead log beside the store in a read-only directory whose `-shm` is gone:
    SQLite cannot open it read-only (and must not skip the log's committed transactions by
    opening it immutable). That is a plain open error with what to do, never "damaged"."""
    data = tmp_path / "member-0-data"
    _member_data(data)
    (data / "log.sqlite3-wal").write_bytes(b"\0" * 32)  # no -shm beside it
    with read_only_view(data, tmp_path) as ro, pytest.raises(StoreOpenError) as info:
        Store.open(ro / "log.sqlite3", read_only=True)
    message = str(info.value)
    assert "damaged" not in message
    assert message.startswith(f"{ro / 'log.sqlite3'}: cannot open the store: ")
    assert "export while the member runs" in message
