"""The submitter/reader side of the client channel: `submit`, `tail`, `status`.

A client is a transport *reader*: a Noise link authenticated by its own ed25519 key to one
or more members. It trusts no member: every block it returns has had its certificate and
its chain checked against the committee from configuration (`verified_blocks`).

Client configuration (TOML):

    [client]
    key_file = "client.key"              # this client's identity (mode 0600)
    committee_config = "node-0.toml"     # any member's config: only its public parts are read
    connect = ["127.0.0.1:7100"]         # optional; default: every member's address
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ..config import MemberConfig, load_config
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.errors import CoalitiondError, ConfigError, OperatorError, RemoteError
from ..primitives.keys import load_key_file
from ..transport.manager import ConnectionManager
from ..transport.router import Channel
from . import wire

#: How long a client waits for a link to any member before giving up.
CONNECT_TIMEOUT_S: Final = 10.0
#: How long it waits for one reply.
REPLY_TIMEOUT_S: Final = 30.0
#: Replies buffered per outstanding request (submit: ack + outcome).
REPLIES_PER_REQUEST: Final = 4


class RefusedByMember(RemoteError):
    """A member answered with a refusal (e.g. its state diverged and it serves no reads)."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    path: Path
    key_file: Path
    member_config: MemberConfig
    connect: tuple[tuple[str, int], ...]

    @property
    def committee(self) -> CommitteeSpec:
        return self.member_config.committee_spec()


def load_client_config(path: Path) -> ClientConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "", f"not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"client"})
    if unknown:
        raise ConfigError(str(path), unknown[0], "unknown section (expected [client])")
    client = data.get("client")
    if not isinstance(client, dict):
        raise ConfigError(str(path), "client", "missing section")
    unknown = sorted(set(client) - {"key_file", "committee_config", "connect"})
    if unknown:
        raise ConfigError(str(path), f"client.{unknown[0]}", "unknown key")
    base = path.parent
    for key in ("key_file", "committee_config"):
        if not isinstance(client.get(key), str):
            raise ConfigError(str(path), f"client.{key}", "missing key (a path)")
    member_config = load_config(base / client["committee_config"], check_key=False)
    connect_raw = client.get("connect")
    connect: list[tuple[str, int]] = []
    if connect_raw is None:
        connect = [(m.address.host, m.address.port) for m in member_config.committee.members]
    else:
        if not isinstance(connect_raw, list):
            raise ConfigError(str(path), "client.connect", "expected a list of \"host:port\"")
        for i, item in enumerate(connect_raw):
            host, _, port = str(item).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(str(path), f"client.connect[{i}]",
                                  f"expected \"host:port\", got {item!r}")
            connect.append((host, int(port)))
    return ClientConfig(path, base / client["key_file"], member_config, tuple(connect))


class CommitteeClient:
    """A client of the committee over the transport (submit, blocks, status).

    `connect_timeout` bounds the wait for a first member link when connecting, and
    `reply_timeout` the wait for each reply (an outcome: from the submission's
    acknowledgement); `None` waits without a limit of its own, for a caller that bounds the
    whole exchange itself (a test's deadline, an operator's Ctrl-C)."""

    def __init__(self, key: SigningKey, committee: CommitteeSpec,
                 connect: Sequence[tuple[str, int]], *,
                 reply_timeout: float | None = REPLY_TIMEOUT_S) -> None:
        self.key = key
        self.committee = committee
        self.reply_timeout = reply_timeout
        self.manager = ConnectionManager(key, committee, {}, listen=("127.0.0.1", 0),
                                         bootstrap=list(connect), roles=("client",))
        self._ids = itertools.count(1)
        #: request id -> (the member asked, where its replies go)
        self._pending: dict[int, tuple[bytes, trio.MemorySendChannel[wire.Message]]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, config: ClientConfig, *,
                   connect_timeout: float | None = CONNECT_TIMEOUT_S,
                   reply_timeout: float | None = REPLY_TIMEOUT_S
                   ) -> AsyncIterator[CommitteeClient]:
        async with cls.connect(load_key_file(config.key_file), config.committee,
                               config.connect, connect_timeout=connect_timeout,
                               reply_timeout=reply_timeout) as client:
            yield client

    @classmethod
    @asynccontextmanager
    async def connect(cls, key: SigningKey, committee: CommitteeSpec,
                      connect: Sequence[tuple[str, int]], *,
                      connect_timeout: float | None = CONNECT_TIMEOUT_S,
                      reply_timeout: float | None = REPLY_TIMEOUT_S
                      ) -> AsyncIterator[CommitteeClient]:
        """A connected client; OperatorError if no member answers within
        `connect_timeout` seconds."""
        client = cls(key, committee, connect, reply_timeout=reply_timeout)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.manager.run)
            nursery.start_soon(client._dispatch)
            with trio.move_on_after(math.inf if connect_timeout is None
                                    else connect_timeout) as scope:
                await client.manager.wait_until(lambda: bool(client.members()))
            if scope.cancelled_caught:
                raise OperatorError(
                    "could not reach any committee member at "
                    + ", ".join(f"{h}:{p}" for h, p in connect))
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()

    def members(self) -> list[bytes]:
        return [p for p in self.manager.member_links() if p in self.committee.members]

    def any_member(self) -> bytes:
        members = self.members()
        if not members:
            raise OperatorError("no committee member is reachable right now")
        return members[0]

    async def _dispatch(self) -> None:
        async for sender, data in self.manager.router.receive(Channel.CLIENT):
            try:
                msg = wire.decode_message(data)
            except RemoteError:
                continue
            rid = getattr(msg, "request_id", None)
            pending = self._pending.get(rid) if rid is not None else None
            # Only the member asked may answer: request ids are guessable.
            if pending is not None and pending[0] == sender:
                with suppress(trio.WouldBlock):
                    pending[1].send_nowait(msg)

    @asynccontextmanager
    async def _request(self, member: bytes, make: Any) -> AsyncIterator[
            trio.MemoryReceiveChannel[wire.Message]]:
        rid = next(self._ids)
        send, recv = trio.open_memory_channel[wire.Message](REPLIES_PER_REQUEST)
        self._pending[rid] = (member, send)
        try:
            sent = await self.manager.router.send(Channel.CLIENT, member,
                                                  wire.encode_message(make(rid)))
            if not sent:
                raise OperatorError(f"member {member.hex()[:16]} is not reachable")
            yield recv
        finally:
            del self._pending[rid]

    async def _reply(self, recv: trio.MemoryReceiveChannel[wire.Message], what: str,
                     extra_s: float = 0.0) -> wire.Message:
        timeout = None if self.reply_timeout is None else self.reply_timeout + extra_s
        reply: wire.Message | None = None
        with trio.move_on_after(math.inf if timeout is None else timeout):
            reply = await recv.receive()
        if reply is None:
            raise OperatorError(f"no {what} reply within {timeout:.0f}s")
        if isinstance(reply, wire.Refused):
            raise RefusedByMember(f"the member refused the {what} request: {reply.reason}")
        return reply

    async def _reply_while_linked(self, member: bytes,
                                  recv: trio.MemoryReceiveChannel[wire.Message], what: str,
                                  extra_s: float = 0.0) -> wire.Message:
        """`_reply`, but give up as soon as the link to `member` is lost: a member that
        restarted will never answer a request sent before (a follower waiting on a `wait`
        request then retries at once instead of after the whole timeout)."""
        result: list[wire.Message] = []
        failed: list[CoalitiondError] = []
        async with trio.open_nursery() as nursery:
            async def answer() -> None:
                try:
                    result.append(await self._reply(recv, what, extra_s))
                except CoalitiondError as exc:  # raised below, not as an exception group
                    failed.append(exc)
                nursery.cancel_scope.cancel()

            async def link_lost() -> None:
                await self.manager.wait_until(lambda: member not in self.members())
                nursery.cancel_scope.cancel()

            nursery.start_soon(answer)
            nursery.start_soon(link_lost)
        if failed:
            raise failed[0]
        if not result:
            raise OperatorError(f"member {member.hex()[:16]} went away before its {what} reply")
        return result[0]

    async def submit(self, envelope: bytes, *, member: bytes | None = None,
                     wait: bool = True) -> tuple[wire.Submitted, wire.Outcome | None]:
        """Submit one envelope; with `wait`, also wait for its finalised outcome."""
        target = member or self.any_member()
        async with self._request(target, lambda rid: wire.Submit(rid, envelope)) as recv:
            ack = await self._reply(recv, "submit")
            if not isinstance(ack, wire.Submitted):
                raise RemoteError(f"unexpected reply {type(ack).__name__} to submit")
            if not ack.accepted or not wait:
                return ack, None
            outcome = await self._reply(recv, "outcome")
            if not isinstance(outcome, wire.Outcome):
                raise RemoteError(f"unexpected reply {type(outcome).__name__} to submit")
            return ack, outcome

    async def blocks(self, from_height: int, *, max_blocks: int = 64, wait: bool = False,
                     member: bytes | None = None) -> wire.Blocks:
        target = member or self.any_member()
        async with self._request(target, lambda rid: wire.BlocksRequest(
                rid, from_height, max_blocks, wait)) as recv:
            reply = await self._reply_while_linked(target, recv, "blocks", wire.BLOCKS_WAIT_S)
            if not isinstance(reply, wire.Blocks):
                raise RemoteError(f"unexpected reply {type(reply).__name__} to blocks?")
            return reply

    async def status(self, member: bytes) -> dict[str, Any]:
        async with self._request(member, wire.StatusRequest) as recv:
            reply = await self._reply(recv, "status")
            if not isinstance(reply, wire.Status):
                raise RemoteError(f"unexpected reply {type(reply).__name__} to status?")
            return reply.status
