-- wrk script for bench/tier.sh: which URLs to request, which server each wrk thread talks to,
-- and a tally of the Cache-Status of every response. Configured by environment variables
-- (read in every Lua state: wrk's setup/done state and each thread's):
--
--   TIER_MODE     hot    one URL, TIER_PREFIX .. TIER_FIRST, for wrk's -d (no tally: wrk then
--                        skips parsing responses)
--                 random uniform over TIER_PREFIX .. 0 .. TIER_OBJECTS-1, each thread its own
--                        seeded sequence (the same in every run with the same seed)
--                 seq    TIER_PREFIX .. TIER_FIRST, +1, +2, ...: every request a new URL (use
--                        one thread)
--   TIER_COUNT    random and seq: each thread stops after this many responses and creates the
--                 file TIER_DONE_DIR/done.<thread>; bench/tier.sh then ends wrk with SIGINT
--                 (wrk's main thread otherwise sleeps out -d, which is only a cap here)
--   TIER_ADDRS    "HOST:PORT HOST:PORT ...": wrk thread i connects to address i mod n (the URL
--                 on wrk's command line only gives the Host header); empty: wrk's URL
--   TIER_SEED     base of the per-thread random seeds (random mode)
--
-- done() prints one machine-readable line:
--
--   RESULT requests=N duration_us=N p50_us=N p99_us=N errors=N mem=N tier=N miss=N
--          collapsed=N other=N non200=N
--
-- With TIER_COUNT, requests is the responses counted and duration the longest thread's time
-- from its first request to its last counted response (a monotonic clock through LuaJIT's
-- ffi), not wrk's runtime. Latency percentiles are wrk's, over all threads.
-- mem: a hit in the edge's in-process store (`geoedge-<edge>; hit`) or nginx's HIT; tier: a
-- hit in the region's shared tier (`geoedge-<region>-redis; hit`, also when this edge waited
-- for another edge's fill); miss: fetched from the origin (`fwd=...` without `collapsed`, or
-- nginx's MISS); collapsed: waited for another request of the same edge; other: the rest.

local mode = os.getenv("TIER_MODE") or "hot"
local prefix = os.getenv("TIER_PREFIX") or "/obj/"
local objects = tonumber(os.getenv("TIER_OBJECTS") or "10000")
local first = tonumber(os.getenv("TIER_FIRST") or "0")
local count = tonumber(os.getenv("TIER_COUNT") or "0")
local seed = tonumber(os.getenv("TIER_SEED") or "1")
local done_dir = os.getenv("TIER_DONE_DIR") or ""
local kinds = { "mem", "tier", "miss", "collapsed", "other", "non200" }

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } tier_timespec_t;
int clock_gettime(int clk_id, tier_timespec_t *tp);
]]
local timespec = ffi.new("tier_timespec_t")
local function now_us()
   ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
   return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

-- setup/done state -------------------------------------------------------------------------
local threads = {}

function setup(thread)
   local addrs = {}
   for a in (os.getenv("TIER_ADDRS") or ""):gmatch("%S+") do
      addrs[#addrs + 1] = a
   end
   local n = #threads + 1
   thread:set("id", n)
   if #addrs > 0 then
      local host, port = addrs[(n - 1) % #addrs + 1]:match("^(.+):(%d+)$")
      thread.addr = wrk.lookup(host, port)[1]
   end
   threads[n] = thread
end

function done(summary, latency, requests)
   local total = {}
   for _, k in ipairs(kinds) do
      total[k] = 0
      for _, t in ipairs(threads) do
         total[k] = total[k] + (t:get("n_" .. k) or 0)
      end
   end
   local e = summary.errors
   local reqs, duration = summary.requests, summary.duration
   if count > 0 then
      reqs, duration = 0, 0
      for _, t in ipairs(threads) do
         reqs = reqs + (t:get("responses") or 0)
         duration = math.max(duration, t:get("elapsed_us") or summary.duration)
      end
   end
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d",
      reqs, duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout))
   for _, k in ipairs(kinds) do
      io.write(string.format(" %s=%d", k, total[k]))
   end
   io.write("\n")
end

-- thread state -------------------------------------------------------------------------------
local next_index = first
local hot_request
local started_us
responses = 0 -- globals: done() reads them with thread:get()
elapsed_us = nil

function init(args)
   for _, k in ipairs(kinds) do
      _G["n_" .. k] = 0
   end
   math.randomseed(seed * 1000 + (id or 0))
   if mode == "hot" then
      hot_request = wrk.format(nil, prefix .. first)
      response = nil -- wrk then neither parses headers nor calls Lua per response
   end
end

function request()
   started_us = started_us or now_us()
   if mode == "hot" then
      return hot_request
   elseif mode == "random" then
      return wrk.format(nil, prefix .. math.random(0, objects - 1))
   end
   local path = prefix .. next_index
   next_index = next_index + 1
   return wrk.format(nil, path)
end

local function kind(value)
   if value:find("%-redis; hit") then
      return "tier"
   elseif value:find("; hit") or value == "HIT" then
      return "mem"
   elseif value:find("collapsed") then
      return "collapsed"
   elseif value:find("fwd=") or value == "MISS" then
      return "miss"
   end
   return "other"
end

function response(status, headers, body)
   if elapsed_us then
      return -- counted enough; a response still in flight when the thread stopped
   end
   responses = responses + 1
   if status ~= 200 then
      n_non200 = n_non200 + 1
   end
   local k = "n_" .. kind(headers["Cache-Status"] or headers["X-Cache-Status"] or "")
   _G[k] = _G[k] + 1
   if count > 0 and responses == count then
      elapsed_us = now_us() - started_us
      wrk.thread:stop()
      if done_dir ~= "" then
         local f = io.open(done_dir .. "/done." .. id, "w")
         if f then
            f:close()
         end
      end
   end
end
