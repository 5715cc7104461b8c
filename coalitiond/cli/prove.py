"""`coalitiond prove --url URL --config MEMBER.toml --index I --out FILE`: a proof bundle.

Asks one member's read API (`URL`, its `[node] metrics` address) for everything that proves
log entry `I` (docs/formats.md §7), checks every answer against the committee of `--config`
(any member's config file of the committee; its key file is not read), checks the bundle as
`coalitiond verify --bundle` would, then writes it. The member is not trusted: a member that
lies is refused here, before anything is written.

Exit 0: the bundle is written and its one-line summary printed.
Exit 1: the member's answers did not verify, or the entry is not certified yet (named).
Exit 2: the operator must fix something (arguments, config, unreachable member, the output).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..config import load_config
from ..integrator.answers import ApiError, VerificationFailed
from ..integrator.bundle import make_bundle_op, verify_bundle
from ..integrator.client import CoalitionClient
from ..primitives.errors import OperatorError
from . import EXIT_CHECK_FAILED, EXIT_OK

NAME = "prove"
HELP = "fetch a proof bundle for one log entry from a member's read API (checked, offline-verifiable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True,
                        help="a member's read API, e.g. http://127.0.0.1:9100")
    parser.add_argument("--config", required=True, type=Path,
                        help="a member config of the committee (the trust anchor; its key "
                             "file is not read)")
    parser.add_argument("--index", required=True, type=int, help="log entry index (from 0)")
    parser.add_argument("--out", required=True, type=Path, help="bundle file to write")


def run(args: argparse.Namespace) -> int:
    if args.index < 0:
        raise OperatorError(f"--index must be >= 0, got {args.index}")
    committee = load_config(args.config, check_key=False).committee_spec()
    try:
        with CoalitionClient(args.url, committee) as client:
            bundle = client._run(make_bundle_op(client.verify, args.index))
        data = bundle.encode()
        verified = verify_bundle(data, committee.committee_id)
    except ApiError as e:
        if e.status == 0:
            raise OperatorError(f"{args.url}: {e.message}") from None
        print(f"{args.url}: refused: {e}")
        return EXIT_CHECK_FAILED
    except VerificationFailed as e:
        print(f"{args.url}: FAILED: {e}")
        return EXIT_CHECK_FAILED
    _write(args.out, data)
    print(f"{args.out}: {verified.summary()}")
    return EXIT_OK


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OperatorError(f"{path}: cannot write the bundle: {e.strerror or e}") from None
