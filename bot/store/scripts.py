"""Lua scripts: each one is atomic and touches keys of one hash tag, so it runs on Redis Cluster."""

from __future__ import annotations

# The start of handling a callback, in one round trip.
# KEYS: dedupe, lock, state, identity (all {u:<openid>}).  ARGV: claim ("1"/"0"), dedupe_ttl, token, lock_ttl_ms
# Returns {"dup", previous} when this message was seen (previous "" = still being handled),
# {"ok", state_json, identity} when the lock is ours, {"locked", ""} when another message of the user holds it.
BEGIN_MESSAGE = """
if ARGV[1] == '1' then
  local prev = redis.call('GET', KEYS[1])
  if prev then return {'dup', prev} end
  redis.call('SET', KEYS[1], '', 'EX', ARGV[2])
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {'ok', redis.call('GET', KEYS[3]) or '', redis.call('GET', KEYS[4]) or ''}
end
return {'locked', ''}
"""

# The end of handling, in one round trip: keep the answer for retries (only if the record is still
# the pending marker: a late answer must not replace the "success" already given), save the state,
# release the lock if it is still ours.
# KEYS: dedupe, lock, state.  ARGV: answer, dedupe_ttl, token, state op ("" / "D" / json), state_ttl
END_MESSAGE = """
if redis.call('GET', KEYS[1]) == '' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if ARGV[4] == 'D' then
  redis.call('DEL', KEYS[3])
elseif ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"""

# Replace the pending marker with an answer (used when the reply budget ran out: "S").
# KEYS: dedupe.  ARGV: answer, ttl
SETTLE_PENDING = """
if redis.call('GET', KEYS[1]) == '' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""
