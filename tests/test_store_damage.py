"""Damage in committed data is detected (at open or by audit) and reported, never truncated;
an I/O or fsync error stops the writer with a clear error."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store, StoreCorrupt, StoreIOError, StoreOpenError
from coalitiond.primitives.errors import OperatorError
from coalitiond.primitives.metrics import sample_value
from coalitiond.testing.chain import ChainBuilder

pytestmark = pytest.mark.live

BLOCKS = 30


def _build(path: Path, chain: ChainBuilder) -> list[Any]:
    items = []
    with Store.open(path, chain.committee, signing_key=chain.keys[0]) as s:
        for h in range(1, BLOCKS + 1):
            item = chain.next([b"command %03d/%d" % (h, i) for i in range(3)])
            s.append_blocks([item])
            items.append(item)
        s.guard(0, 99, VoteKind.NOTARIZE, b"\x07" * 32)
    # Closing the last connection checkpoints the WAL into the main file.
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    return items


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ChainBuilder, list[Any]]:
    chain = ChainBuilder(4)
    path = tmp_path_factory.mktemp("pristine") / "log.sqlite3"
    items = _build(path, chain)
    return path, chain, items


def _copy(pristine: tuple[Path, ChainBuilder, list[Any]], tmp_path: Path) -> Path:
    dst = tmp_path / "log.sqlite3"
    shutil.copyfile(pristine[0], dst)
    return dst


def _flip(path: Path, needle: bytes, offset: int) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "needle must occur exactly once"
    data[at + offset] ^= 0x01
    path.write_bytes(bytes(data))


def _open(path: Path, chain: ChainBuilder) -> Store:
    return Store.open(path, chain.committee, signing_key=chain.keys[0])


def test_flip_in_a_recent_block_is_refused_at_open(pristine: Any, tmp_path: Path) -> None:
    path = _copy(pristine, tmp_path)
    _flip(path, pristine[2][-1].block.encode(), 60)
    with pytest.raises(StoreCorrupt, match=r"store damaged \(table blocks, height 30\): stored "
                       r"digest does not match the block bytes; the member must not vote"):
        _open(path, pristine[1])


def test_flip_in_an_old_block_is_found_by_audit(pristine: Any, tmp_path: Path) -> None:
    path = _copy(pristine, tmp_path)
    _flip(path, pristine[2][2].block.encode(), 60)  # height 3: outside the open-time window
    with _open(path, pristine[1]) as s:
        with pytest.raises(StoreCorrupt, match=r"\(table blocks, height 3\): stored digest does "
                           r"not match the block bytes"):
            s.audit()
        assert s.height == BLOCKS  # nothing was truncated


def test_flip_in_an_old_entry_is_found_by_audit(pristine: Any, tmp_path: Path) -> None:
    """Records carry no entries (the auditor derives them from the blocks), so the store's
    copy in the entries table is checked against the blocks by audit() itself."""
    from coalitiond.log import entry_leaf

    path = _copy(pristine, tmp_path)
    items = pristine[2]
    first = sum(len(it.block.commands) for it in items[:2])
    _flip(path, entry_leaf(items[2].block, 1), 50)  # height 3: outside the open-time window
    with _open(path, pristine[1]) as s, pytest.raises(
            StoreCorrupt, match=rf"\(table entries, height 3\): entry {first + 1} does not "
                                r"match its command"):
        s.audit()


def test_flip_in_an_entry_or_checkpoint_or_guard_is_refused(pristine: Any, tmp_path: Path) -> None:
    chain, items = pristine[1], pristine[2]
    from coalitiond.log import entry_leaf

    path = _copy(pristine, tmp_path)
    _flip(path, entry_leaf(items[-1].block, 2), 50)
    with pytest.raises(StoreCorrupt, match=r"\(table entries, height 30\): entry 89 does not "
                       r"match its command"):
        _open(path, chain)

    path.unlink()
    path = _copy(pristine, tmp_path)
    with Store.open(pristine[0], read_only=True) as ro:
        note = ro.checkpoint(BLOCKS)
    _flip(path, note.encode(), note.index("height") + 8)
    with pytest.raises(StoreCorrupt, match=r"\(table checkpoints, height 30\): checkpoint note: "
                       r"signature by .* does not verify"):
        _open(path, chain)

    path.unlink()
    path = _copy(pristine, tmp_path)
    _flip(path, b"\x07" * 32, 5)
    with pytest.raises(StoreCorrupt, match=r"\(table signer_guard\): row \(epoch 0, view 99, "
                       r"kind 0\) fails its checksum"):
        _open(path, chain)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    chain = ChainBuilder(4)
    with pytest.raises(StoreCorrupt, match=r"\(table sqlite header\): not a readable SQLite "
                       r"database \(file is not a database\)"):
        _open(path, chain)


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        conn.close()


def test_random_byte_flips_are_detected_or_harmless(pristine: Any, tmp_path: Path,
                                                    sim_seeds: list[int]) -> None:
    """A flipped bit anywhere in the file: open or audit reports it, or the log reads back
    exactly as written (the bit was in free space or an index). Never a silent change."""
    original = _dump(pristine[0])
    size = pristine[0].stat().st_size
    outcomes: dict[str, int] = {}
    for seed in sim_seeds:
        rng = random.Random(seed)
        position, bit = rng.randrange(size), 1 << rng.randrange(8)
        print(f"seed {seed}: flip bit {bit:#04x} at offset {position}")
        path = tmp_path / f"flip-{seed}.sqlite3"
        shutil.copyfile(pristine[0], path)
        data = bytearray(path.read_bytes())
        data[position] ^= bit
        path.write_bytes(bytes(data))
        try:
            with _open(path, pristine[1]) as s:
                s.audit()
        except (StoreCorrupt, StoreOpenError) as e:
            outcomes["detected"] = outcomes.get("detected", 0) + 1
            assert str(e).startswith(str(path))
            continue
        except OperatorError as e:  # schema or committee record damaged: refused too
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            assert str(path) in str(e)
            continue
        outcomes["harmless"] = outcomes.get("harmless", 0) + 1
        assert _dump(path) == original, f"seed {seed}: silent change"
    print(outcomes)


IO_ERROR_WRITER = r"""
import json, os, resource, signal, sys
from coalitiond.log import Store, StoreIOError
from coalitiond.testing.chain import ChainBuilder
path = sys.argv[1]
chain = ChainBuilder(4)
s = Store.open(path, chain.committee, signing_key=chain.keys[0])
s.append_blocks([chain.next([b"small"])])
acked = [1]
# A real kernel I/O error: writes beyond RLIMIT_FSIZE fail with EFBIG (SIGXFSZ ignored).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = max(os.path.getsize(path), os.path.getsize(path + "-wal")) + 64 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
error = None
for i in range(100):
    try:
        cp = s.append_blocks([chain.next([bytes([i % 256]) * 16000 for _ in range(4)])])
        acked.append(cp[-1].height)
    except StoreIOError as e:
        error = str(e)
        break
try:
    s.guard(0, 1, 0, b"\x01" * 32)
    again = None
except StoreIOError as e:
    again = str(e)
print(json.dumps({"acked": acked, "error": error, "again": again}))
"""


def test_a_real_io_error_stops_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    proc = subprocess.run([sys.executable, "-c", IO_ERROR_WRITER, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] is not None, "the file size limit was never hit"
    assert out["error"].startswith(f"{path}: store write failed (append height ")
    assert "the writer has stopped" in out["error"]
    assert out["again"] == out["error"]  # no write is attempted after the failure
    chain = ChainBuilder(4)
    with _open(path, chain) as s:  # every acknowledged write is there, the store opens clean
        assert s.height == out["acked"][-1]
        assert s.audit().height == out["acked"][-1]


class FsyncFailingConnection(sqlite3.Connection):
    """TEST DOUBLE: a connection whose COMMIT fails as SQLite reports a failed fsync
    (SQLITE_IOERR_FSYNC surfaces as "disk I/O error"). A real fsync failure cannot be
    provoked on demand without a faulty device, so this is the one injected failure."""

    fail_commits = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "COMMIT" and FsyncFailingConnection.fail_commits:
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


def test_an_fsync_error_stops_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    chain = ChainBuilder(4)
    before = sample_value("coalitiond_store_write_failures_total") or 0.0
    s = Store.open(path, chain.committee, signing_key=chain.keys[0],
                   connection_factory=FsyncFailingConnection)
    try:
        s.append_blocks([chain.next([b"a"])])
        FsyncFailingConnection.fail_commits = True
        with pytest.raises(StoreIOError, match=r"store write failed \(append height 2\): disk "
                           r"I/O error; the writer has stopped — fix the disk and restart "
                           r"coalitiond \(acknowledged writes are safe\)$"):
            s.append_blocks([chain.next([b"b"])])
        FsyncFailingConnection.fail_commits = False
        # Even with the disk "fixed", this process never writes again (fsyncgate).
        with pytest.raises(StoreIOError, match=r"\(append height 2\): disk I/O error"):
            s.guard(0, 1, VoteKind.NOTARIZE, b"\x01" * 32)
        assert s.failed is not None and s.height == 1
        assert sample_value("coalitiond_store_write_failures_total") == before + 1
    finally:
        FsyncFailingConnection.fail_commits = False
        s.close()
    with _open(path, chain) as s:
        assert s.height == 1 and s.audit().height == 1
