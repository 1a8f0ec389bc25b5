"""The Redis side of the limiter: ``_gcra.py`` transcribed to Lua on the server's clock.

One script, four operations, so a limiter needs one ``SCRIPT LOAD``. Keys are
``KEYS[1]`` request TAT, ``KEYS[2]`` token TAT, ``KEYS[3]`` shared pause-until; they share a
``{name}`` hash tag, so on a cluster they live in one slot and the script stays atomic.
TATs are absolute server times (``TIME``), so client clocks never matter; waits come back as
strings because Redis truncates Lua numbers to integers.

ARGV[1] is the operation:

* ``reserve`` r1 b1 c1 r2 b2 c2 max_wait -> {1 | 0, wait}: commit unless wait > max_wait
  (max_wait < 0: no limit); a rate of 0 means "no limit on this budget".
* ``adjust`` r1 b1 a1 r2 b2 a2: refund a > 0, charge a < 0.
* ``clamp`` r1 b1 rem1 r2 b2 rem2: the bucket holds at most rem (rem < 0: unknown).
* ``pause`` seconds: everyone waits until now + seconds; schedules shift by the same amount.
"""

from __future__ import annotations

__all__ = ["SCRIPT"]

SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]

local function get_tat(i)
  local v = redis.call('GET', KEYS[i])
  if v then return tonumber(v) end
  return nil
end

local function put_tat(i, tat)
  if tat == nil or tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.6f', tat),
               'PX', math.ceil((tat - now) * 1000) + 1000)
  end
end

if op == 'reserve' then
  local start = now
  local pause = redis.call('GET', KEYS[3])
  if pause and tonumber(pause) > start then start = tonumber(pause) end
  local tats = {}
  for i = 1, 2 do
    local rate = tonumber(ARGV[3 * i - 1])
    local burst = tonumber(ARGV[3 * i])
    local cost = tonumber(ARGV[3 * i + 1])
    if rate > 0 and cost > 0 then
      local base = get_tat(i) or now
      tats[i] = base
      local earliest = base + cost / rate - math.max(burst, cost) / rate
      if earliest > start then start = earliest end
    end
  end
  local wait = start - now
  local max_wait = tonumber(ARGV[8])
  if max_wait >= 0 and wait > max_wait then
    return {0, tostring(wait)}
  end
  for i = 1, 2 do
    if tats[i] then
      local rate = tonumber(ARGV[3 * i - 1])
      local cost = tonumber(ARGV[3 * i + 1])
      put_tat(i, math.max(tats[i], start) + cost / rate)
    end
  end
  return {1, tostring(wait)}
end

if op == 'adjust' or op == 'clamp' then
  for i = 1, 2 do
    local rate = tonumber(ARGV[3 * i - 1])
    local burst = tonumber(ARGV[3 * i])
    local amount = tonumber(ARGV[3 * i + 1])
    if rate > 0 then
      local tat = get_tat(i)
      local base = tat or now
      if op == 'adjust' and amount > 0 then
        put_tat(i, math.max(base - amount / rate, now))
      elseif op == 'adjust' and amount < 0 then
        put_tat(i, math.max(base, now) - amount / rate)
      elseif op == 'clamp' and amount >= 0 then
        local floor = now + (burst - amount) / rate
        if base < floor then put_tat(i, floor) end
      end
    end
  end
  return {1, '0'}
end

if op == 'pause' then
  local seconds = tonumber(ARGV[2])
  local old = tonumber(redis.call('GET', KEYS[3]) or '0')
  local from = math.max(old, now)
  local untl = math.max(old, now + seconds)
  local shift = untl - from
  if shift > 0 then
    for i = 1, 2 do
      local tat = get_tat(i)
      if tat then put_tat(i, math.max(tat, now) + shift) end
    end
    redis.call('SET', KEYS[3], string.format('%.6f', untl),
               'PX', math.ceil((untl - now) * 1000) + 1000)
  end
  return {1, tostring(shift)}
end

return redis.error_reply('unknown operation ' .. tostring(op))
"""
