-- wrk script of scripts/bench: sets the method and Accept header from the arguments after `--`
-- (wrk ... URL -- METHOD [ACCEPT]) and prints one machine-readable line at the end with the
-- request count, errors and the latency distribution (p50, p90, p99, max; microseconds).

function init(args)
   wrk.method = args[1] or "GET"
   if args[2] and args[2] ~= "" then
      wrk.headers["Accept"] = args[2]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK-JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"errors\":{\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}," ..
      "\"latency_us\":{\"mean\":%.1f,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"max\":%d}}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
end
