"""The collector's Redis scripts: claim event ids and token slots, then settle.

Claim values are ``p`` (pending: the batch waits for the broker) and ``d``
(delivered); a token slot holds ``p|<event id>`` or ``d|<event id>``. Pending
claims expire on their own, so a process that dies mid-batch leaves nothing
that outlives ``collect_pending_s``.
"""

from __future__ import annotations

__all__ = [
    "AFTER",
    "CLAIM",
    "CLAIMED",
    "DUPLICATE",
    "PENDING",
    "SLOT_PENDING",
    "SLOT_USED",
]

DUPLICATE = 0
"""The event id was delivered before."""
CLAIMED = 1
"""Claimed now (pending) for this batch."""
PENDING = 2
"""The event id waits for the broker in another batch: retry later."""
SLOT_USED = 3
"""The token already backs another delivered event of this type."""
SLOT_PENDING = 4
"""The token's slot is pending for another event id: retry later."""

# One round trip per batch, whatever its size: for each event, KEYS[2i-1] is
# its id's claim and KEYS[2i] its token slot's; ARGV[i + 1] its event id.
# Answers: the codes above.
CLAIM = """
local out = {}
for i = 1, #KEYS / 2 do
  local id_key, slot_key, id = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 1]
  local state = redis.call('GET', id_key)
  local slot = redis.call('GET', slot_key)
  if state == 'd' then
    out[i] = 0
  elseif state then
    out[i] = 2
  elseif slot and string.sub(slot, 3) ~= id then
    out[i] = string.sub(slot, 1, 1) == 'd' and 3 or 4
  elseif slot then
    out[i] = string.sub(slot, 1, 1) == 'd' and 0 or 2
  else
    redis.call('SET', id_key, 'p', 'PX', ARGV[1])
    redis.call('SET', slot_key, 'p|' .. id, 'PX', ARGV[1])
    out[i] = 1
  end
end
return out
"""

# Release the first ARGV[1] keys (claims of undelivered events), confirm the
# next 2 * ARGV[2] keys (id and slot of acknowledged events, ids in ARGV[8..]),
# then for each delivered impression: its user's seen set and exposure bucket.
AFTER = """
local released, confirmed = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, released do
  redis.call('DEL', KEYS[i])
end
for i = 1, confirmed do
  local k = released + 2 * i - 1
  redis.call('SET', KEYS[k], 'd', 'EX', ARGV[6])
  redis.call('SET', KEYS[k + 1], 'd|' .. ARGV[7 + i], 'EX', ARGV[7])
end
local arg = 8 + confirmed
for i = released + 2 * confirmed + 1, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[arg])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
  redis.call('HINCRBY', KEYS[i + 1], ARGV[arg + 1], 1)
  redis.call('EXPIRE', KEYS[i + 1], ARGV[5])
  arg = arg + 2
end
return 0
"""
