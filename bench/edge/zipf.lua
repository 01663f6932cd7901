-- wrk script for bench/edge_scale.sh. Environment:
--   SCALE_MODE=seq  : GET PREFIX1 .. PREFIX<N> once each (the last connections repeat
--                     PREFIX<N>), the thread stops after N responses (fills, misses)
--   SCALE_MODE=zipf : GET PREFIX<i>, i Zipf-distributed (s = 1) over 1..N, for the duration
--   SCALE_DELAY_MS  : think time per request and connection (a rate limit; 0: none)
local mode = os.getenv("SCALE_MODE") or "zipf"
local n = tonumber(os.getenv("SCALE_N") or "100000")
local prefix = os.getenv("SCALE_PREFIX") or "/o/"
local pause = tonumber(os.getenv("SCALE_DELAY_MS") or "0")
local cdf = {}
local next_i = 0
local done = 0

function init(args)
  if mode == "zipf" then
    local total = 0
    for i = 1, n do total = total + 1 / i; cdf[i] = total end
    for i = 1, n do cdf[i] = cdf[i] / total end
    math.randomseed(12345)
  end
end

local function zipf()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  local i
  if mode == "seq" then
    next_i = next_i + 1
    i = math.min(next_i, n)  -- the last few connections repeat the last URL, then stop
  else
    i = zipf()
  end
  return wrk.format("GET", prefix .. i, {["Host"] = "www.example.test"})
end

if mode == "seq" then  -- response() costs wrk a callback per response: only when needed
  function response(status, headers, body)
    done = done + 1
    if done >= n then wrk.thread:stop() end
  end
end

if pause > 0 then  -- defined only when pacing: wrk times every request when it exists
  function delay()
    return pause
  end
end
