"""Abuse control of one process: who is let in at accept, how fast, and who is banned.

The relay asks :meth:`Guard.at_accept` before it reads a byte, and
:meth:`Guard.route_rate` once a connection is identified; it reports
offences with :meth:`Guard.offence`. The decisions read the lists of
``[limits]`` and three stores (:mod:`refractium.shared.stores`): kept in
this process, or in memory the workers of one instance share. Nothing here
waits on another process beyond a lock held for microseconds.

Without ``[limits]`` (:attr:`LimitsConfig.active` false) nothing is counted
or kept, and accepting only asks whether a ban (from the API or a hook) is
in force: with none, one counter test.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from refractium.abuse.cidrs import CidrSet
from refractium.abuse.groups import group_key, group_network, route_key
from refractium.config.model import LimitsConfig, Offence, Rate
from refractium.endpoint.api import BANNED as BANNED_OUTCOME
from refractium.endpoint.api import LIMITED as LIMITED_OUTCOME
from refractium.endpoint.api import REFUSED
from refractium.shared.stores import Ban, Bans, Buckets, Offences
from refractium.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
bans_log = RateLimitedLog(log)

__all__ = [
    "BANNED",
    "DENIED",
    "LIMITED",
    "UNAVAILABLE",
    "Guard",
    "GuardStats",
    "Refusal",
    "Stores",
    "current",
    "use",
]

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client is refused at accept: the access log's outcome and the metric's reason."""

    outcome: str  # "refused", "banned", "limited"
    reason: str  # the counter's label: "denied", "banned", "limited"
    text: str  # the access line's reason and the warning's words


DENIED = Refusal(REFUSED, "denied", "denied by [limits]")
UNAVAILABLE = Refusal(
    REFUSED, "state_down", "the shared state is unreachable ([state] on_error = closed)"
)
LIMITED = Refusal(LIMITED_OUTCOME, "limited", "over limits.connection_rate")
BANNED = Refusal(BANNED_OUTCOME, "banned", "banned")


@dataclass(slots=True)
class GuardStats:
    """What abuse control did in this process (summed over workers by the admin API)."""

    bans: Counter[str] = field(default_factory=Counter)  # bans earned by offences, by the last
    offences: Counter[str] = field(default_factory=Counter)  # offences counted, by kind


@dataclass(frozen=True, slots=True)
class Stores:
    """Where the buckets, the offence counts and the bans are kept."""

    buckets: Buckets
    offences: Offences
    bans: Bans

    @classmethod
    def local(cls, max_clients: int) -> Stores:
        """This process's own: for one process, or a program that embeds the engine."""
        from refractium.abuse.local import LocalBans, LocalBuckets, LocalOffences

        return cls(LocalBuckets(max_clients), LocalOffences(max_clients), LocalBans())


class Guard:
    """The abuse control of one engine (its TCP and UDP sides ask the same one)."""

    def __init__(
        self,
        limits: LimitsConfig,
        stores: Stores | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stores = stores if stores is not None else Stores.local(limits.max_clients)
        self.stats = GuardStats()
        self._clock = clock
        self._file: tuple[Network, ...] = ()
        #: Whether the fleet's shared state answers; None: no fleet ([state] memory).
        self.state_up: Callable[[], bool] | None = None
        self._closed_when_down = False
        #: Tokens taken per bucket key since the fleet's rate exchange last
        #: collected them (:meth:`collect_takes`); None: no exchange, nothing noted.
        self.pending: dict[bytes, int] | None = None
        self._pending_rates: dict[bytes, Rate] = {}
        self.configure(limits)

    # -- configuration --------------------------------------------------------

    def configure(self, limits: LimitsConfig) -> None:
        """Take the lists and rates of ``limits`` (at start and each reload); stores are kept."""
        self.limits = limits
        self.active = limits.active
        self._allow = CidrSet(limits.allow)
        self._deny = CidrSet((*limits.deny, *self._file))
        self._rate = limits.connection_rate
        self._v4, self._v6 = limits.group_v4, limits.group_v6
        self._ban_after = limits.ban_after
        self._offences = limits.offences if limits.ban_after else frozenset()

    def follow_state(self, up: Callable[[], bool], closed: bool) -> None:
        """The fleet's state: ``up()`` says whether it answers; ``closed``: refuse without it."""
        self.state_up = up
        self._closed_when_down = closed

    def note_takes(self) -> None:
        """Note every token taken from here on, for the fleet's rate exchange to collect."""
        if self.pending is None:
            self.pending = {}

    def collect_takes(self) -> list[tuple[bytes, int, Rate]]:
        """The tokens taken since the last call, by key, with the rate each was taken at."""
        pending, rates = self.pending, self._pending_rates
        if not pending:
            return []
        self.pending, self._pending_rates = {}, {}
        return [(key, n, rates[key]) for key, n in pending.items()]

    def deny_file(self, networks: Iterable[Network]) -> None:
        """The networks ``deny_file`` holds now (read again when it changes)."""
        self._file = tuple(networks)
        self._deny = CidrSet((*self.limits.deny, *self._file))

    @property
    def denied_count(self) -> int:
        """Networks denied now: ``deny`` and the file's."""
        return len(self._deny)

    # -- decisions ------------------------------------------------------------

    def at_accept(self, ip: str) -> Refusal | None:
        """Whether a client from ``ip`` may go on (None) or is refused, before any byte is read.

        Bans hold even without ``[limits]`` (made by the API or a hook): with
        none in force, looking costs a clock read and one counter test.
        """
        if not self.active:
            return BANNED if self.stores.bans.banned(ip, self._clock()) is not None else None
        if ip in self._allow:
            return None
        if ip in self._deny:
            return DENIED
        if self._closed_when_down and self.state_up is not None and not self.state_up():
            return UNAVAILABLE  # bans and rates here may not be the fleet's
        now = self._clock()
        if self.stores.bans.banned(ip, now) is not None:
            return BANNED
        rate = self._rate
        if rate is not None:
            key = group_key(ip, self._v4, self._v6)
            if self.stores.buckets.take(key, rate.per_s, rate.burst, now):
                self.offence(ip, Offence.LIMITED)
                return LIMITED
            if self.pending is not None:
                self._note(key, rate)
        return None

    def _note(self, key: bytes, rate: Rate) -> None:
        pending = self.pending
        assert pending is not None
        n = pending.get(key)
        if n is None:
            pending[key] = 1
            self._pending_rates[key] = rate
        else:
            pending[key] = n + 1

    def ban_of(self, ip: str) -> Ban | None:
        """The ban covering ``ip`` now, if any (for the access line's reason)."""
        return self.stores.bans.banned(ip, self._clock())

    def route_rate(self, route_id: str, rate: Rate, ip: str) -> float:
        """Take a token of ``route_id``'s rate for ``ip``'s group: 0.0, or seconds to wait."""
        if ip in self._allow:
            return 0.0
        key = route_key(route_id, group_key(ip, self._v4, self._v6))
        wait = self.stores.buckets.take(key, rate.per_s, rate.burst, self._clock())
        if wait:
            self.offence(ip, Offence.LIMITED)
        elif self.pending is not None:
            self._note(key, rate)
        return wait

    def offence(self, ip: str, kind: Offence) -> Ban | None:
        """Count an offence of ``ip``'s group; the ban it earned, if this one tipped it."""
        if kind not in self._offences or not ip or ip in self._allow:
            return None
        self.stats.offences[kind.value] += 1
        limits = self.limits
        now = self._clock()
        key = group_key(ip, self._v4, self._v6)
        if self.stores.offences.add(key, limits.ban_window_s, now) < self._ban_after:
            return None
        self.stores.offences.clear(key)
        network = group_network(ip, self._v4, self._v6)
        ban = self.stores.bans.ban(network, now + limits.ban_for_s, kind.value, now)
        self.stats.bans[kind.value] += 1
        bans_log.log(
            logging.WARNING,
            "ban",
            "banned %s for %g s: %d offences in %g s, the last %s",
            ban.address,
            limits.ban_for_s,
            self._ban_after,
            limits.ban_window_s,
            kind.value,
        )
        return ban

    # -- the admin API ----------------------------------------------------------

    def ban(self, network: Network, for_s: float, reason: str) -> Ban:
        """Ban ``network`` for ``for_s`` seconds (``POST /bans``, ``refractium.state.ban``)."""
        now = self._clock()
        ban = self.stores.bans.ban(network, now + for_s, reason, now)
        log.warning("banned %s for %g s: %s", ban.address, for_s, reason)
        return ban

    def unban(self, network: Network) -> bool:
        """Lift the ban of ``network`` (``DELETE /bans/ADDRESS``)."""
        lifted = self.stores.bans.unban(network)
        if lifted:
            log.info("ban of %s lifted", network)
        return lifted

    def bans(self) -> list[Ban]:
        """Every ban in force."""
        return self.stores.bans.all(self._clock())


_current: Guard | None = None


def use(guard: Guard) -> None:
    """Make ``guard`` the one :func:`refractium.state.ban` reaches (an engine that starts)."""
    global _current
    _current = guard


def current() -> Guard | None:
    """The guard of the engine running in this process, if one started."""
    return _current
