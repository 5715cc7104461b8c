"""Read arguments and paging shared by every component's `query`.

Cursors and limits are checked the same way everywhere, with the same one-line
`QueryError`s ("since: seq must be an unsigned integer", "cards: limit must be 1..64"):
`uint_arg` and `limit_arg`. Two page shapes recur: a log read `since` an index
(`since_page`: entries, the next index, the count) and a read of sorted keys `after` a key
(`after_page`: the page and the key to continue after, None at the end).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from .base import QueryError, expect_args, is_uint

_REQUIRED: Final = object()
K = TypeVar("K", bytes, int)


def uint_arg(name: str, args: Mapping[str, Any], key: str, *, default: Any = _REQUIRED,
             what: str = "an unsigned integer") -> int:
    """`args[key]` (or `default` when absent and given) as an unsigned integer."""
    value = args[key] if default is _REQUIRED else args.get(key, default)
    if not is_uint(value):
        raise QueryError(f"{name}: {key} must be {what}")
    return int(value)


def limit_arg(name: str, args: Mapping[str, Any], bound: int) -> int:
    """The optional `limit` of a paged read: 1..bound, `bound` when absent."""
    limit = args.get("limit", bound)
    if not (is_uint(limit) and 0 < limit <= bound):
        raise QueryError(f"{name}: limit must be 1..{bound}")
    return int(limit)


def since_page(name: str, args: Mapping[str, Any], cursor: str, rows: Sequence[bytes],
               bound: int, read: Callable[[bytes], Any]) -> dict[str, Any]:
    """A log read `{cursor, limit?}`: up to `limit` rows from index `args[cursor]` on, each
    through `read`; `next` is the index to read from next and `count` the log's length."""
    expect_args(name, args, {cursor}, {"limit"})
    start = uint_arg(name, args, cursor)
    limit = limit_arg(name, args, bound)
    indices = range(start, min(start + limit, len(rows)))
    return {"entries": [read(rows[i]) for i in indices], "next": start + len(indices),
            "count": len(rows)}


def after_page(keys: Sequence[K], after: K | None, limit: int) -> tuple[Sequence[K], K | None]:
    """Up to `limit` of the ascending `keys` that sort after `after` (all, from the first,
    when None), and the key to continue after: the page's last, or None when no more."""
    start = 0 if after is None else bisect.bisect_right(keys, after)
    page = keys[start:start + limit]
    return page, page[-1] if start + limit < len(keys) else None
