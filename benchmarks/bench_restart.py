"""Restart: start to ready on a long log, with and without executor snapshots (issue #15).

The log: BLOCKS finalised feed blocks — busy (one signed envelope in each, so the feed's
state grows with the log too) and idle (one in every 100th) — each claiming the roots after
its parent, with the signer-guard rows a member writes per view (notarize and finalize;
propose every n-th view), built directly with
`Store.append_blocks` (certificates carry placeholder signatures: the store checks only that
a quorum signed when the caller verified them, as the daemon's own appends do).

Measured, each case in a fresh child process: *start to ready* = `Store.open` (quick_check,
tail check) + `voter.recover` (executor rebuilt, durable state for the core) — everything in
a member's start whose cost depends on the log; the transport's bind and the tasks' start
after it do not — and the child's peak RSS. Cases: no snapshot (replay from genesis), and the
newest snapshot SNAPSHOT_INTERVAL blocks below the head (a restart just before the next
snapshot: the most a restart replays with the default interval). And *state sync* (protocol.md
§12): a wiped member given that snapshot file (what the pages deliver), the frontier and the
block after it: `verify_synced` (decode, full restore, roots checked against the certifying
block, whose certificate is real), the base written, then `recover` — everything after the
transfer; the transfer itself is `pages` round trips of 1 MiB.

Usage: `python -m benchmarks restart` or `python -m benchmarks.bench_restart [--quick]`
(`--quick`: 10,000 blocks).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from coalitiond.config.node import DEFAULT_SNAPSHOT_INTERVAL
from coalitiond.consensus.types import VoteKind
from coalitiond.log.sqlite import GuardRecord, Store
from coalitiond.node.journal import BlockJournal
from coalitiond.node.snapshots import SnapshotFile, SnapshotStore, restore_replica
from coalitiond.node.state_sync import verify_synced
from coalitiond.node.voter import VoterStatus, recover
from coalitiond.node.wire import MAX_SYNC_CHUNK
from coalitiond.primitives.logs import configure
from coalitiond.testing.rooted_chain import RootedChain

BLOCKS: Final = (100_000, 10_000)
SNAPSHOT_INTERVAL: Final = DEFAULT_SNAPSHOT_INTERVAL
BATCH: Final = 1000
SEED: Final = 15
#: (name, an envelope every this many blocks): the busy log's feed state grows with the log
#: (a component restore is O(state)); the idle one's stays small.
WORKLOADS: Final = (("busy: one envelope in every block", 1),
                    ("idle: one envelope every 100 blocks", 100))


def build(directory: Path, blocks: int, every: int = 1) -> dict[str, Any]:
    """The store (an envelope in every `every`-th block) and one snapshot at the last
    multiple of the interval below the head."""
    rc = RootedChain(5, seed=SEED, fake_signatures=True)
    snap_at = (blocks - 1) // SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL
    snapshots = SnapshotStore(directory / "snapshots")
    take_s = write_s = 0.0
    started = time.perf_counter()
    with Store.open(directory / "log.sqlite3", rc.committee,
                    signing_key=rc.chain.keys[0]) as s:
        height = 0
        while height < blocks:
            items, guard = [], []
            for _ in range(min(BATCH, blocks - height)):
                height += 1
                # Real certificates after the snapshot: state sync verifies the certifying one.
                rc.fake_signatures = height <= snap_at
                item = rc.next((rc.envelope(b"entry %d" % height),) if height % every == 0
                               else ())
                items.append(item)
                b = item.block
                guard += [GuardRecord(b.epoch, b.view, int(VoteKind.NOTARIZE), b.digest),
                          GuardRecord(b.epoch, b.view, int(VoteKind.FINALIZE), b.digest)]
                if b.proposer == 0:
                    guard.append(GuardRecord(b.epoch, b.view, 3, b.digest))
                if height == snap_at:
                    t0 = time.perf_counter()
                    body = rc.executor.snapshot()  # on the consensus loop in a member
                    t1 = time.perf_counter()
                    snapshots.write(SnapshotFile(rc.committee.committee_id, b, rc.roots, body))
                    take_s, write_s = t1 - t0, time.perf_counter() - t1
            s.append_blocks(items, verify_signatures=False, guard=guard)
        size = s.size
    db = directory / "log.sqlite3"
    return {"build_s": time.perf_counter() - started, "entries": size, "snapshot_at": snap_at,
            "take_s": take_s, "write_s": write_s,
            "store_mb": db.stat().st_size / 1e6,
            "snapshot_mb": snapshots.path(snap_at).stat().st_size / 1e6}


def child(directory: Path, use_snapshot: bool) -> None:
    """One restart: open the store, recover. Prints a JSON line."""
    configure("console", "warning", stream=sys.stderr)
    rc = RootedChain(5, seed=SEED, fake_signatures=True)
    executor = rc.make_executor()
    status = VoterStatus()
    started = time.perf_counter()
    with Store.open(directory / "log.sqlite3", rc.committee,
                    signing_key=rc.chain.keys[0]) as s:
        opened = time.perf_counter()
        durable = recover(s, rc.committee, executor, BlockJournal(rc.committee.quorum, 0),
                          status, False,
                          SnapshotStore(directory / "snapshots") if use_snapshot else None)
        ready = time.perf_counter()
        assert durable.executed is not None and durable.executed.height == s.height
    peak_kib = _peak_rss_kib()
    print(json.dumps({"open_s": opened - started, "recover_s": ready - opened,
                      "ready_s": ready - started, "peak_mb": peak_kib / 1024,
                      "restored_from": status.restored_from, "height": status.height,
                      "guard_rows": len(durable.guard)}))


def sync_child(directory: Path) -> None:
    """What a state-syncing member does once the pages arrived: verify, write, recover.
    Prints a JSON line."""
    configure("console", "warning", stream=sys.stderr)
    rc = RootedChain(5, seed=SEED, fake_signatures=True)
    snapshots = SnapshotStore(directory / "snapshots")
    height = snapshots.heights()[0]
    data = snapshots.path(height).read_bytes()
    with Store.open(directory / "log.sqlite3", read_only=True) as full:
        size = full.log_at(height)[0]
        frontier = full.frontier_hashes(size)
        fetched = list(full.iter_finalized(height + 1, height + 1))  # lag one: it certifies
    synced = directory / "synced"
    synced.mkdir()
    executor = rc.make_executor()
    started = time.perf_counter()
    snap = SnapshotFile.decode(data, "bench")
    blocks = verify_synced(rc.committee, executor, snap, size, frontier, fetched, "bench")
    verified = time.perf_counter()
    with Store.open(synced / "log.sqlite3", rc.committee, signing_key=rc.chain.keys[1]) as s:
        own = SnapshotStore(synced / "snapshots")
        own.write(snap)
        s.install_base(snap.block, size, frontier, blocks)
        written = time.perf_counter()
        status = VoterStatus()
        recover(s, rc.committee, executor, BlockJournal(rc.committee.quorum, 0), status, False,
                own)
        ready = time.perf_counter()
    print(json.dumps({"verify_s": verified - started, "write_s": written - verified,
                      "recover_s": ready - written, "ready_s": ready - started,
                      "peak_mb": _peak_rss_kib() / 1024, "height": height,
                      "pages": -(-len(data) // MAX_SYNC_CHUNK)}))


def follower_child(directory: Path) -> None:
    """What `CommitteeFollower.resume` does at a follower's start: the newest position file
    read, checked and restored into a fresh replica (the member's snapshot file serves as the
    position: same format). Prints a JSON line."""
    configure("console", "warning", stream=sys.stderr)
    rc = RootedChain(5, seed=SEED, fake_signatures=True)
    replica = rc.make_executor()
    positions = SnapshotStore(directory / "snapshots")
    started = time.perf_counter()
    height = positions.heights()[0]
    restore_replica(replica, positions.read(height), rc.committee.committee_id, "position")
    ready = time.perf_counter()
    print(json.dumps({"ready_s": ready - started, "peak_mb": _peak_rss_kib() / 1024,
                      "height": height}))


def _peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_child(directory: Path, use_snapshot: bool) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_restart", "--child",
                          str(directory), "1" if use_snapshot else "0"],
                         check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _baseline_mb() -> float:
    out = subprocess.run([sys.executable, "-c",
                          "import coalitiond.node.member, benchmarks.bench_restart as b;"
                          "print(b._peak_rss_kib())"],
                         check=True, capture_output=True, text=True)
    return int(out.stdout) / 1024


def main(argv: list[str]) -> None:
    if "--child" in argv:
        at = argv.index("--child")
        child(Path(argv[at + 1]), argv[at + 2] == "1")
        return
    if "--sync-child" in argv:
        sync_child(Path(argv[argv.index("--sync-child") + 1]))
        return
    if "--follower-child" in argv:
        follower_child(Path(argv[argv.index("--follower-child") + 1]))
        return
    configure("console", "warning", stream=sys.stderr)
    blocks = BLOCKS[1 if "--quick" in argv else 0]
    for name, every in WORKLOADS:
        print(f"\n{name}:")
        _workload(blocks, every)


def _workload(blocks: int, every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        info = build(d, blocks, every)
        print(f"restart on a log of {blocks} blocks ({info['entries']} entries, store "
              f"{info['store_mb']:.0f} MB, snapshot at {info['snapshot_at']}: "
              f"{info['snapshot_mb']:.1f} MB, taken in {info['take_s'] * 1000:.0f} ms on the "
              f"loop, written in {info['write_s'] * 1000:.0f} ms by the writer thread; built "
              f"in {info['build_s']:.0f}s)")
        print(f"{'case':>22} {'open s':>7} {'recover s':>10} {'start→ready s':>14} "
              f"{'peak RSS MB':>12} {'replayed':>9}")
        for name, use in (("replay from genesis", False), ("from snapshot", True)):
            r = _run_child(d, use)
            print(f"{name:>22} {r['open_s']:>7.2f} {r['recover_s']:>10.2f} "
                  f"{r['ready_s']:>14.2f} {r['peak_mb']:>12.0f} "
                  f"{r['height'] - r['restored_from']:>9}")
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_restart",
                              "--follower-child", str(d)], check=True, capture_output=True,
                             text=True)
        f = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'follower resume':>22} {'':>7} {'':>10} {f['ready_s']:>14.2f} "
              f"{f['peak_mb']:>12.0f} {'(then the followed blocks after ' + str(f['height']) + ')':>9}")
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_restart",
                              "--sync-child", str(d)], check=True, capture_output=True,
                             text=True)
        y = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'state sync (wiped)':>22} {y['write_s']:>7.2f} "
              f"{y['verify_s'] + y['recover_s']:>10.2f} {y['ready_s']:>14.2f} "
              f"{y['peak_mb']:>12.0f} {1:>9}  (+ {y['pages']} pages of 1 MiB; open = base "
              f"written, recover = verified + recovered)")
        print(f"(peak RSS of a process that only imports the member: {_baseline_mb():.0f} MB; "
              f"guard rows loaded: {r['guard_rows']}; a follower without a position fetches and "
              f"replays all {blocks} followed blocks: at least the replay row)")


if __name__ == "__main__":
    main(sys.argv[1:])
