# The summary table of a bench/c1m/run.sh run, from flood's report (input) and the summed
# /stats at the end ($fin; `{}` for rawfan, $kind "raw"); the other values come as --arg.
  def r: if type == "number" then round else "n/a" end;
  def mib: if type == "number" then (. / 1048576 | round | tostring) + " MiB" else "n/a" end;
  def s2: if type == "number" then (. * 100 | round / 100 | tostring) + " s" else "n/a" end;
  . as $j |
  ($j.conns_established) as $n |
  (if $j.conns_target == 1000000 then "One million" else ($j.conns_target | tostring) end) as $count |
  "# \($count) WebSocket subscribers\(if ($j.tls // null) != null then " over TLS" else "" end) on one machine",
  "",
  "Commit \($commit), \($date), 2 cores, 24 GiB, Linux \($kernel), \($setup). Produced by `bench/c1m/run.sh`:",
  "",
  "    \($server)",
  "    \($flood)",
  "",
  "| | |",
  "|---|---|",
  "| connections established | \($n) of \($j.conns_target) |",
  "| time to connect all | \($j.ramp_secs | s2) (\($j.connect_rate_per_sec | r)/s) |",
  (if $kind == "raw" then "rawfan" else "edgecomet" end) as $name |
  "| \($name) processes | \($nproc), holding \($fdmin)–\($fdmax) connections each (open-files cap 20,000) |",
  "| flood worker processes | \($j.params.procs) |",
  "| errors | \($j.errors | to_entries | map(select(.value != 0) | "\(.key) \(.value)") | join(", ") | if . == "" then "none" else . end) |",
  "| server user space (PSS, \($nproc) processes) | \($j.server_pss_bytes_per_conn | r) B per connection, \(($j.server_pss_bytes_per_conn * $n) | mib) grown; \($j.server_pss_bytes_open | mib) in all |",
  "| kernel (both ends: slab + TCP buffers) | \($j.kernel_bytes_per_conn | r) B per connection, \(($j.kernel_bytes_per_conn * $n) | mib) |",
  "| flood (PSS, \($j.params.procs) processes) | \($j.client_bytes_per_conn | r) B per connection grown; \($j.client_pss_bytes_open | mib) in all |",
  "| kernel, largest slab caches grown | \($j.kernel_top_caches | map("\(.[0]) \(.[1] | mib)") | join(", ")) |",
  "| memory in use grew (MemTotal − MemAvailable; counts the socket inode and dentry caches as reclaimable) | \($used | tonumber | mib) |",
  "| broadcasts, publish to last of \($n) deliveries | \($j.broadcasts.each | map(.secs_to_all | s2) | join(", ")) (median \($j.broadcasts.secs_to_all_median | s2)) |",
  "| broadcast deliveries | \($j.broadcasts.each | map(.deliveries | tostring) | join(", ")) |",
  "| publish load | \($j.load.published) messages at \($j.params.publish_rate)/s: \($j.load.deliveries) deliveries in \($j.load.secs_to_last_delivery | s2) = **\($j.load.deliveries_per_sec | r) deliveries/s** |",
  "| latency over all deliveries (µs) | p50 \($j.latency_us.p50), p99 \($j.latency_us.p99), max \($j.latency_us.max) |",
  "| lost / duplicated / reordered | \($j.lost) / \($j.duplicated) / \($j.reordered) |",
  if $kind == "raw" then empty else
  "| server counters (sums over the processes) | messages_out \($fin[0].processes.total.messages_out), slow_consumers \($fin[0].processes.total.slow_consumers), drops \($fin[0].processes.total.drops), broker_received \($fin[0].processes.hub.broker_received), broker_inbox_drops \($fin[0].processes.hub.broker_inbox_drops) |" end
