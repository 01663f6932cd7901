-- wrk script for bench/edge.sh (EDGE_BENCH_HEADERS=browser): every request carries the header
-- fields a browser sends, with a User-Agent that differs from one request to the next, so
-- nothing can answer from bytes it saw before: what real clients cost a cache per request.
local n = 0

request = function()
  n = n + 1
  return wrk.format("GET", nil, {
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:" .. n .. ") Gecko/20100101 Firefox/133.0",
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.5",
    ["Accept-Encoding"] = "gzip, deflate, br, zstd",
    ["Referer"] = "https://www.example.test/",
    ["Connection"] = "keep-alive",
    ["Sec-Fetch-Dest"] = "document",
    ["Sec-Fetch-Mode"] = "navigate",
  })
end
