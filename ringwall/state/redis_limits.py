"""Rate limits kept in Redis, so every gateway instance counts against the same state.

Each check is one EVALSHA of a Lua script that reads one key, decides with
the server's clock (TIME) and writes the key back with a TTL, atomically.
The scripts are line-by-line translations of `ringwall.limits.gcra.decide`
and `ringwall.limits.window.decide_window`: same formulas in the same order,
same epsilon, and floats passed as `repr` strings, which round-trip exactly,
so they return the same decisions for the same state and time.

Lua numbers that a script returns to Redis are truncated to integers, so a
script returns its decision as one string of space-separated numbers
formatted with %.17g, which also round-trips exactly.

All the state of one limit key is one Redis key, so a script touches one
hash slot and works in Redis Cluster. The scripts need Redis 5 or later:
older versions replicate a script by running it again on each replica,
which rejects writes after TIME.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ringwall.limits.gcra import Decision, Rate
from ringwall.limits.window import Counts, Quota, WindowDecision
from ringwall.state.redis_client import (
    EncodedArguments,
    RedisClient,
    RedisReplyError,
    Script,
    encode_arguments,
)

DEFAULT_PREFIX = b"ringwall:rl:"

# The Lua that sets `now`, in seconds, from the server's clock.
SERVER_CLOCK = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
"""

# Takes `now` from the last argument instead, so tests can replay exact times.
# RedisLimits never uses it.
ARGUMENT_CLOCK = """
local now = tonumber(ARGV[#ARGV])
"""

# ARGV: interval, capacity (burst * interval), cost. The key contains the TAT.
# Returns "allowed tat remaining retry_after reset".
_RATE_BODY = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local epsilon = 1e-6
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local base = math.max(tat, now)
local new_tat = base + cost * interval
local ahead = new_tat - now
if ahead <= capacity + epsilon then
  local remaining = math.max(0, math.floor((capacity - ahead) / interval + epsilon))
  local ttl = math.ceil(ahead * 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl)
  return string.format('1 %.17g %d 0 %.17g', new_tat, remaining, ahead)
end
local current = base - now
local remaining = math.max(0, math.floor((capacity - current) / interval + epsilon))
return string.format('0 %.17g %d %.17g %.17g', tat, remaining, ahead - capacity, current)
"""

# ARGV: window, limit, cost. The key contains "start current previous".
# Returns "allowed start current previous remaining retry_after reset".
_WINDOW_BODY = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local start, current, previous = 0, 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local a, b, c = string.match(stored, '^(%S+) (%S+) (%S+)$')
  if c then
    start, current, previous = tonumber(a), tonumber(b), tonumber(c)
  end
end
local window_start = math.floor(now / window) * window
if start ~= window_start then
  if start == window_start - window then
    previous = current
  else
    previous = 0
  end
  current = 0
  start = window_start
end
local elapsed = now - start
local weight = 1.0 - elapsed / window
local estimate = previous * weight + current
local reset = start + window - now
if estimate + cost <= limit then
  current = current + cost
  local left = math.max(0, math.floor(limit - (estimate + cost)))
  local ttl = math.ceil((start + 2 * window - now) * 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.17g %d %d', start, current, previous), 'PX', ttl)
  return string.format('1 %.17g %d %d %d 0 %.17g', start, current, previous, left, reset)
end
local left = math.max(0, math.floor(limit - estimate))
local wait
local room = limit - cost - current
if cost > limit then
  wait = window
elseif room < 0 then
  local share = (limit - cost) / current
  wait = start + window + (1.0 - share) * window - now
elseif previous == 0 then
  wait = 0.0
else
  local elapsed_needed = (1.0 - room / previous) * window
  wait = math.max(0.0, start + elapsed_needed - now)
end
return string.format('0 %.17g %d %d %d %.17g %.17g', start, current, previous, left, wait, reset)
"""


def rate_script(clock: str = SERVER_CLOCK) -> Script:
    """Build the GCRA script; `clock` is the Lua that sets `now`."""
    return Script(clock + _RATE_BODY)


def window_script(clock: str = SERVER_CLOCK) -> Script:
    """Build the sliding-window script; `clock` is the Lua that sets `now`."""
    return Script(clock + _WINDOW_BODY)


RATE_SCRIPT = rate_script()
WINDOW_SCRIPT = window_script()


def rate_arguments(rate: Rate, cost: int) -> tuple[bytes, bytes, bytes]:
    """Return the GCRA script's ARGV: interval, capacity and cost."""
    _check_cost(cost)
    return repr(rate.interval).encode(), repr(rate.capacity).encode(), b"%d" % cost


def window_arguments(quota: Quota, cost: int) -> tuple[bytes, bytes, bytes]:
    """Return the window script's ARGV: window, limit and cost."""
    _check_cost(cost)
    return repr(float(quota.window)).encode(), b"%d" % quota.limit, b"%d" % cost


def _check_cost(cost: int) -> None:
    if cost < 0:
        raise ValueError(f"the cost of a request must be 0 or more, not {cost}")


def parse_rate_reply(reply: object) -> Decision:
    """Read the GCRA script's reply into a Decision."""
    fields = _fields(reply, 5)
    return Decision(
        fields[0] == "1", float(fields[1]), int(fields[2]), float(fields[3]), float(fields[4])
    )


def parse_window_reply(reply: object) -> WindowDecision:
    """Read the window script's reply into a WindowDecision."""
    fields = _fields(reply, 7)
    counts = Counts(float(fields[1]), int(fields[2]), int(fields[3]))
    return WindowDecision(
        allowed=fields[0] == "1",
        counts=counts,
        remaining=int(fields[4]),
        retry_after=float(fields[5]),
        reset=float(fields[6]),
    )


def _fields(reply: object, count: int) -> Sequence[str]:
    if isinstance(reply, bytes):
        fields = reply.decode("ascii", "replace").split(" ")
        if len(fields) == count:
            return fields
    raise RedisReplyError(f"a rate-limit script returned {reply!r:.100}, not {count} numbers")


class RedisLimits:
    """GCRA rates and sliding-window quotas in Redis, one key per limit key.

    Every method raises RedisUnavailable when Redis cannot serve the check,
    and the caller decides whether that allows or rejects the request.
    """

    def __init__(self, client: RedisClient, prefix: bytes = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        # Encoded script arguments by (rate or quota, cost): encoding costs more
        # than a dict lookup, and a gateway has few distinct limits.
        self._rate_arguments: dict[tuple[Rate, int], EncodedArguments] = {}
        self._window_arguments: dict[tuple[Quota, int], EncodedArguments] = {}

    async def check_rate(self, key: bytes, rate: Rate, cost: int = 1) -> Decision:
        """Decide a request of `cost` against the GCRA `rate` of `key`; store the TAT if allowed."""
        arguments = self._rate_arguments.get((rate, cost))
        if arguments is None:
            arguments = encode_arguments(rate_arguments(rate, cost))
            _remember(self._rate_arguments, (rate, cost), arguments)
        reply = await self._client.evalsha(RATE_SCRIPT, (self._prefix + key,), arguments)
        return parse_rate_reply(reply)

    async def check_window(self, key: bytes, quota: Quota, cost: int = 1) -> WindowDecision:
        """Decide a request of `cost` against the `quota` of `key`; count it if allowed."""
        arguments = self._window_arguments.get((quota, cost))
        if arguments is None:
            arguments = encode_arguments(window_arguments(quota, cost))
            _remember(self._window_arguments, (quota, cost), arguments)
        reply = await self._client.evalsha(WINDOW_SCRIPT, (self._prefix + key,), arguments)
        return parse_window_reply(reply)


_Key = TypeVar("_Key")

# Bounds the argument caches, for callers that build a new Rate per request.
_MAX_CACHED_ARGUMENTS = 1024


def _remember(cache: dict[_Key, EncodedArguments], key: _Key, arguments: EncodedArguments) -> None:
    if len(cache) >= _MAX_CACHED_ARGUMENTS:
        cache.clear()
    cache[key] = arguments
