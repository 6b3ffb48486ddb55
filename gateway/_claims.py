"""The collector's Redis scripts: claim event ids and token slots, then settle.

An event id's claim holds ``p|<decision id>`` (pending: the batch waits for the
broker) or ``d|<decision id>`` (delivered), the decision of the event's token;
a token slot holds ``p|<event id>`` or ``d|<event id>``. Pending claims expire
on their own, so a process that dies mid-batch leaves nothing that outlives
``collect_pending_s``. The decision in an impression's claim is what a click
naming that impression is checked against.
"""

from __future__ import annotations

__all__ = [
    "AFTER",
    "CLAIM",
    "CLAIMED",
    "DUPLICATE",
    "OTHER_DECISION",
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
OTHER_DECISION = 5
"""A click naming an impression that came with another token's decision."""

# One round trip per batch, whatever its size. For event i: KEYS[3i-2] is its
# id's claim, KEYS[3i-1] its token slot's and KEYS[3i] the claim of the
# impression a click names (an impression repeats its own claim there, unread);
# ARGV[3i-1] is its event id, ARGV[3i] its decision and ARGV[3i+1] 'i' or 'c'.
# Impressions are claimed in a first pass, so a click meets the impressions of
# its own batch wherever they stand in it. A click whose impression has no
# claim (expired, or not sent yet) is taken unchecked: the learner counts it as
# no_impression, or judges it when that impression reaches it. Answers: the
# codes above.
CLAIM = """
local out = {}
for pass = 1, 2 do
  for i = 1, #KEYS / 3 do
    local kind = ARGV[3 * i + 1]
    if (kind == 'i') == (pass == 1) then
      local id_key, slot_key = KEYS[3 * i - 2], KEYS[3 * i - 1]
      local id, decision = ARGV[3 * i - 1], ARGV[3 * i]
      local state = redis.call('GET', id_key)
      local slot = redis.call('GET', slot_key)
      local named = kind == 'c' and redis.call('GET', KEYS[3 * i])
      if state and string.sub(state, 1, 1) == 'd' then
        out[i] = 0
      elseif state then
        out[i] = 2
      elseif named and string.sub(named, 3) ~= decision then
        out[i] = 5
      elseif slot and string.sub(slot, 3) ~= id then
        out[i] = string.sub(slot, 1, 1) == 'd' and 3 or 4
      elseif slot then
        out[i] = string.sub(slot, 1, 1) == 'd' and 0 or 2
      else
        redis.call('SET', id_key, 'p|' .. decision, 'PX', ARGV[1])
        redis.call('SET', slot_key, 'p|' .. id, 'PX', ARGV[1])
        out[i] = 1
      end
    end
  end
end
return out
"""

# Release the first ARGV[1] keys (claims of undelivered events), confirm the
# next 2 * ARGV[2] keys (id and slot of acknowledged events; ARGV[6] and ARGV[7]
# their lifetimes, each one's event id and decision in ARGV[8..]), then for
# each delivered impression: its user's seen set and exposure bucket.
AFTER = """
local released, confirmed = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, released do
  redis.call('DEL', KEYS[i])
end
for i = 1, confirmed do
  local k, a = released + 2 * i - 1, 6 + 2 * i
  redis.call('SET', KEYS[k], 'd|' .. ARGV[a + 1], 'EX', ARGV[6])
  redis.call('SET', KEYS[k + 1], 'd|' .. ARGV[a], 'EX', ARGV[7])
end
local arg = 8 + 2 * confirmed
for i = released + 2 * confirmed + 1, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[arg])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
  redis.call('HINCRBY', KEYS[i + 1], ARGV[arg + 1], 1)
  redis.call('EXPIRE', KEYS[i + 1], ARGV[5])
  arg = arg + 2
end
return 0
"""
