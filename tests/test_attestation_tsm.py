"""configfs-tsm quote generation against a fake tree that behaves like the kernel: entries get
their attribute files on mkdir, writes bump `generation`, `outblob` is a quote over `inblob`
(from the re-signing harness, so the result verifies), rmdir removes a populated entry."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tdx_resign import NOW, ResignPki

from coalitiond.attestation import dcap, tsm
from coalitiond.attestation.binding import report_data
from coalitiond.primitives.errors import LocalError


class FakeKernelTsm:
    """The kernel's side of /sys/kernel/config/tsm/report, on a temporary directory."""

    def __init__(self, root: Path, make_quote: Callable[[bytes], bytes], provider: str = "tdx_guest") -> None:
        self.root = root
        self.make_quote = make_quote
        self.provider = provider
        self.racer: Callable[[Path], None] | None = None  # runs between inblob and outblob
        self.entries_made = 0

    def mkdir(self, path: Path) -> None:
        assert path.parent == self.root
        path.mkdir()  # FileExistsError like the kernel
        self.entries_made += 1
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        shutil.rmtree(path)

    def _bump(self, entry: Path) -> None:
        g = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{g + 1}\n")

    def write(self, path: Path, data: bytes) -> None:
        if path.name != "inblob":
            raise PermissionError(path)
        if len(data) > 64:
            raise OSError(22, "Invalid argument")
        path.write_bytes(data)
        self._bump(path.parent)
        if self.racer is not None:
            self.racer(path.parent)

    def read(self, path: Path, limit: int) -> bytes:
        if path.name == "outblob":
            inblob = (path.parent / "inblob").read_bytes()
            return self.make_quote(inblob)[: limit + 1]
        return path.read_bytes()[: limit + 1]


@pytest.fixture(scope="module")
def pki() -> ResignPki:
    return ResignPki()


def test_quote_over_our_report_data(tmp_path: Path, pki: ResignPki) -> None:
    fake = FakeKernelTsm(tmp_path, lambda rd: pki.quote(report_data=rd))
    rd = report_data(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 0, NOW)
    quote = tsm.get_quote(rd, root=tmp_path, fs=fake)
    v = dcap.verify_under_test_root(quote, pki.collateral(), NOW, pki.root_der)
    assert v.report_data == rd
    assert list(tmp_path.iterdir()) == []  # entry removed


def test_racing_writer_is_detected_and_retried(tmp_path: Path, pki: ResignPki) -> None:
    fake = FakeKernelTsm(tmp_path, lambda rd: pki.quote(report_data=rd))
    races = [1]

    def racer(entry: Path) -> None:
        if races[0]:
            races[0] -= 1
            (entry / "inblob").write_bytes(b"\xee" * 64)  # someone else's REPORTDATA
            fake._bump(entry)

    fake.racer = racer
    rd = b"\x07" * 64
    quote = tsm.get_quote(rd, root=tmp_path, fs=fake)
    assert fake.entries_made == 2
    assert dcap.verify_under_test_root(quote, pki.collateral(), NOW, pki.root_der).report_data == rd


def test_refusals(tmp_path: Path, pki: ResignPki) -> None:
    with pytest.raises(LocalError, match="REPORTDATA must be 64 bytes, got 3"):
        tsm.get_quote(b"abc", root=tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(tsm.TsmError) as ei:
        tsm.get_quote(bytes(64), root=missing)
    assert str(ei.value) == (
        f"{missing} not found: not inside a TD, or the kernel lacks configfs-tsm "
        "(CONFIG_TSM_REPORTS) or configfs is not mounted"
    )
    sev = FakeKernelTsm(tmp_path, lambda rd: b"q", provider="sev_guest")
    with pytest.raises(tsm.TsmError, match="configfs-tsm provider is 'sev_guest', not 'tdx_guest': not a TDX guest"):
        tsm.get_quote(bytes(64), root=tmp_path, fs=sev)
    assert list(tmp_path.iterdir()) == []
    empty = FakeKernelTsm(tmp_path, lambda rd: b"")
    with pytest.raises(tsm.TsmError, match=r"configfs-tsm returned an empty quote \(is the quote service running\?\)"):
        tsm.get_quote(bytes(64), root=tmp_path, fs=empty)
    always = FakeKernelTsm(tmp_path, lambda rd: b"q")
    always.racer = always._bump
    with pytest.raises(tsm.TsmError, match="configfs-tsm entry raced by another writer 3 times in a row"):
        tsm.get_quote(bytes(64), root=tmp_path, fs=always)
    huge = FakeKernelTsm(tmp_path, lambda rd: b"q" * (dcap.MAX_QUOTE_SIZE + 1))
    with pytest.raises(tsm.TsmError, match="configfs-tsm returned a quote larger than 65536 bytes"):
        tsm.get_quote(bytes(64), root=tmp_path, fs=huge)


def test_os_fs_on_a_plain_directory(tmp_path: Path) -> None:
    """OsFs does plain file I/O; on a non-configfs directory the entry has no `provider`."""
    with pytest.raises(tsm.TsmError, match="configfs-tsm request failed: No such file or directory"):
        tsm.get_quote(bytes(64), root=tmp_path)
