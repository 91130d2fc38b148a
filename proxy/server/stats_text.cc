#include "proxy/server/stats_text.h"

#include <unistd.h>

#include <cstdio>

#include "proxy/server/worker.h"
#include "proxy/topology/zone_slots.h"

namespace memzone::server {
namespace {

void stat(ByteBuffer& out, std::string_view name, uint64_t value) {
  char line[160];
  int n = snprintf(line, sizeof(line), "STAT %.*s %llu\r\n", static_cast<int>(name.size()),
                   name.data(), static_cast<unsigned long long>(value));
  out.append(std::string_view(line, static_cast<size_t>(n)));
}

void stat(ByteBuffer& out, std::string_view name, std::string_view value) {
  out.append("STAT ");
  out.append(name);
  out.append(' ');
  out.append(value);
  out.append("\r\n");
}

}  // namespace

void renderStats(StatsContext& context, ByteBuffer& out) {
  using protocol::Command;
  uint64_t commands[protocol::kCommandCount] = {};
  uint64_t hits = 0, misses = 0, client_errors = 0, server_errors = 0, curr = 0, total = 0,
           rejected = 0, bytes_read = 0, bytes_written = 0, backend_requests = 0, mark_downs = 0,
           servers_down = 0, probes = 0;
  uint64_t failures[backend::kBackendFailureCount] = {};
  uint64_t failovers[kFailoverReasonCount] = {};
  uint64_t repairs[4] = {};
  uint64_t confirmation_waits = 0, confirmation_timeouts = 0;
  struct ZoneSums {
    uint64_t copies_sent = 0, copies_failed = 0, queued = 0, replayed = 0, dropped = 0, depth = 0,
             flushes = 0;
  };
  std::vector<std::string> zone_names = topology::zoneSlotNames();
  std::vector<ZoneSums> zones(zone_names.size());
  uint64_t closed[kCloseReasonCount] = {};
  uint64_t accept_pauses = 0;
  // TLS, client-facing [0] and backend [1]: handshakes by result, connections, in progress.
  uint64_t tls_handshakes[2][tls::kHandshakeResultCount] = {};
  uint64_t tls_connections[2] = {}, tls_handshaking[2] = {};
  int64_t tls_bytes = 0;
  struct BufferSums {
    int64_t total = 0, input = 0, output = 0, requests = 0, backend = 0, pooled = 0;
    uint64_t reserved = 0, throttled = 0, throttled_now = 0, rejected = 0, large_waits = 0,
             cut_off = 0, pool_trimmed = 0;
  } buffers;
  for (const Worker* w : context.workers) {
    const ProxyStats& s = w->stats();
    for (int r = 0; r < kCloseReasonCount; ++r) closed[r] += s.closed_connections[r].get();
    accept_pauses += s.accept_pauses.get();
    const tls::TlsCounters* tls_sets[2] = {&s.tls, &w->backendStats().tls};
    for (int k = 0; k < 2; ++k) {
      for (int r = 0; r < tls::kHandshakeResultCount; ++r) {
        tls_handshakes[k][r] += tls_sets[k]->handshakes[r].get();
      }
      tls_connections[k] += tls_sets[k]->connections.get();
      tls_handshaking[k] += tls_sets[k]->handshaking.get();
    }
    const BufferMemory& m = w->budget().memory();
    tls_bytes += m.tls.bytes();
    buffers.total += m.total.bytes();
    buffers.input += m.client_input.bytes();
    buffers.output += m.client_output.bytes();
    buffers.requests += m.requests.bytes();
    buffers.backend += m.backend.bytes();
    buffers.pooled += m.pooled.bytes();
    const BudgetCounters& budget = w->budget().counters();
    buffers.reserved += budget.reserved.get();
    buffers.throttled += budget.throttled.get();
    buffers.throttled_now += budget.throttled_now.get();
    buffers.rejected += budget.rejected.get();
    buffers.large_waits += budget.large_waits.get();
    buffers.cut_off += budget.cut_off.get();
    buffers.pool_trimmed += budget.pool_trimmed.get();
    for (int c = 0; c < protocol::kCommandCount; ++c) commands[c] += s.commands[c].get();
    hits += s.get_hits.get();
    misses += s.get_misses.get();
    client_errors += s.client_errors.get();
    server_errors += s.server_errors.get();
    curr += s.curr_connections.get();
    total += s.total_connections.get();
    rejected += s.rejected_connections.get();
    bytes_read += s.bytes_read.get();
    bytes_written += s.bytes_written.get();
    const backend::BackendStats& b = w->backendStats();
    backend_requests += b.requests.get();
    mark_downs += b.mark_down_events.get();
    servers_down += b.servers_down.get();
    probes += b.probes.get();
    for (int f = 0; f < backend::kBackendFailureCount; ++f) {
      failures[f] += b.connection_failures[f].get();
    }
    for (int r = 0; r < kFailoverReasonCount; ++r) failovers[r] += s.read_failovers[r].get();
    repairs[0] += s.repairs_started.get();
    repairs[1] += s.repairs_stored.get();
    repairs[2] += s.repairs_skipped.get();
    repairs[3] += s.repairs_failed.get();
    confirmation_waits += s.writes_confirmation_waits.get();
    confirmation_timeouts += s.writes_confirmation_timeouts.get();
    for (size_t z = 0; z < zones.size(); ++z) {
      const backend::ZoneCounters& zc = b.zones[z];
      zones[z].copies_sent += zc.copies_sent.get();
      zones[z].copies_failed += zc.copies_failed.get();
      zones[z].queued += zc.invalidations_queued.get();
      zones[z].replayed += zc.invalidations_replayed.get();
      zones[z].dropped += zc.invalidations_dropped.get();
      zones[z].depth += zc.invalidation_queue_depth.get();
      zones[z].flushes += zc.overflow_flushes.get();
    }
  }
  auto count = [&](Command c) { return commands[static_cast<int>(c)]; };
  std::time_t now = std::time(nullptr);
  stat(out, "pid", static_cast<uint64_t>(getpid()));
  stat(out, "uptime", static_cast<uint64_t>(now - context.started));
  stat(out, "time", static_cast<uint64_t>(now));
  stat(out, "version", "1.6.0-memzone-" MEMZONE_VERSION);
  stat(out, "pointer_size", uint64_t{8 * sizeof(void*)});
  stat(out, "threads", uint64_t{context.threads});
  stat(out, "curr_connections", curr);
  stat(out, "total_connections", total);
  stat(out, "rejected_connections", rejected);
  stat(out, "max_connections", context.max_connections);
  stat(out, "dirty_servers", uint64_t{context.dirty_servers.load()});
  stat(out, "owed_servers", uint64_t{context.owed_servers.load()});
  stat(out, "cmd_get",
       count(Command::kGet) + count(Command::kGets) + count(Command::kGat) + count(Command::kGats) +
           count(Command::kMetaGet));
  stat(out, "cmd_set",
       count(Command::kSet) + count(Command::kAdd) + count(Command::kReplace) +
           count(Command::kAppend) + count(Command::kPrepend) + count(Command::kCas) +
           count(Command::kMetaSet));
  stat(out, "cmd_touch", count(Command::kTouch) + count(Command::kGat) + count(Command::kGats));
  stat(out, "cmd_flush", count(Command::kFlushAll));
  stat(out, "cmd_delete", count(Command::kDelete) + count(Command::kMetaDelete));
  stat(out, "cmd_incr_decr",
       count(Command::kIncr) + count(Command::kDecr) + count(Command::kMetaArithmetic));
  stat(out, "get_hits", hits);
  stat(out, "get_misses", misses);
  stat(out, "bytes_read", bytes_read);
  stat(out, "bytes_written", bytes_written);
  stat(out, "proxy_client_errors", client_errors);
  stat(out, "proxy_server_errors", server_errors);
  stat(out, "proxy_backend_requests", backend_requests);
  for (int f = 0; f < backend::kBackendFailureCount; ++f) {
    std::string name = "proxy_backend_failures_";
    name += backend::failureName(static_cast<backend::BackendFailure>(f));
    stat(out, name, failures[f]);
  }
  stat(out, "proxy_backend_mark_down_events", mark_downs);
  stat(out, "proxy_backend_servers_down", servers_down);
  stat(out, "proxy_backend_probes", probes);
  stat(out, "proxy_read_failovers_error", failovers[static_cast<int>(FailoverReason::kError)]);
  stat(out, "proxy_read_failovers_miss", failovers[static_cast<int>(FailoverReason::kMiss)]);
  stat(out, "proxy_read_failovers_unavailable",
       failovers[static_cast<int>(FailoverReason::kUnavailable)]);
  stat(out, "proxy_repairs_started", repairs[0]);
  stat(out, "proxy_repairs_stored", repairs[1]);
  stat(out, "proxy_repairs_skipped", repairs[2]);
  stat(out, "proxy_repairs_failed", repairs[3]);
  stat(out, "proxy_write_confirmation_waits", confirmation_waits);
  stat(out, "proxy_write_confirmation_timeouts", confirmation_timeouts);
  for (int r = 0; r < kCloseReasonCount; ++r) {
    std::string name = "proxy_connections_closed_";
    name += closeReasonName(static_cast<CloseReason>(r));
    stat(out, name, closed[r]);
  }
  stat(out, "proxy_accept_pauses", accept_pauses);
  for (int k = 0; k < 2; ++k) {
    std::string prefix = k == 0 ? "proxy_tls_client_" : "proxy_tls_backend_";
    for (int r = 0; r < tls::kHandshakeResultCount; ++r) {
      stat(out,
           prefix + "handshakes_" +
               std::string(tls::handshakeResultName(static_cast<tls::HandshakeResult>(r))),
           tls_handshakes[k][r]);
    }
    stat(out, prefix + "connections", tls_connections[k]);
    stat(out, prefix + "handshaking", tls_handshaking[k]);
  }
  // Buffer memory (--max-buffer-memory): bytes held now, by kind, and what the budget did.
  auto bytes = [](int64_t v) { return static_cast<uint64_t>(v < 0 ? 0 : v); };
  stat(out, "proxy_buffer_limit_bytes", context.max_buffer_memory);
  stat(out, "proxy_buffer_bytes", bytes(buffers.total));
  stat(out, "proxy_buffer_client_input_bytes", bytes(buffers.input));
  stat(out, "proxy_buffer_client_output_bytes", bytes(buffers.output));
  stat(out, "proxy_buffer_request_bytes", bytes(buffers.requests));
  stat(out, "proxy_buffer_backend_bytes", bytes(buffers.backend));
  stat(out, "proxy_buffer_pooled_bytes", bytes(buffers.pooled));
  stat(out, "proxy_buffer_tls_bytes", bytes(tls_bytes));
  stat(out, "proxy_buffer_reserved_bytes", buffers.reserved);
  stat(out, "proxy_buffer_throttled", buffers.throttled);
  stat(out, "proxy_buffer_throttled_connections", buffers.throttled_now);
  stat(out, "proxy_buffer_out_of_memory_replies", buffers.rejected);
  stat(out, "proxy_buffer_large_reply_waits", buffers.large_waits);
  stat(out, "proxy_buffer_cut_off", buffers.cut_off);
  stat(out, "proxy_pool_trimmed", buffers.pool_trimmed);
  // Per zone: proxy_zone_<zone>_<counter>, for every zone this process has seen.
  for (size_t z = 0; z < zones.size(); ++z) {
    std::string prefix = "proxy_zone_" + zone_names[z] + "_";
    stat(out, prefix + "copies_sent", zones[z].copies_sent);
    stat(out, prefix + "copies_failed", zones[z].copies_failed);
    stat(out, prefix + "invalidations_queued", zones[z].queued);
    stat(out, prefix + "invalidations_replayed", zones[z].replayed);
    stat(out, prefix + "invalidations_dropped", zones[z].dropped);
    stat(out, prefix + "invalidation_queue_depth", zones[z].depth);
    stat(out, prefix + "overflow_flushes", zones[z].flushes);
    if (context.moves) {
      // The key mover (--move-keys): what ring changes moved and purged in this zone.
      const rebalance::ZoneMoveCounters& m = context.moves->zones[z];
      stat(out, prefix + "keys_moved", m.moved.load(std::memory_order_relaxed));
      stat(out, prefix + "keys_dropped", m.dropped.load(std::memory_order_relaxed));
      stat(out, prefix + "keys_purged", m.purged.load(std::memory_order_relaxed));
      stat(out, prefix + "move_crawls_done", m.crawls_done.load(std::memory_order_relaxed));
      stat(out, prefix + "move_crawls_failed", m.crawls_failed.load(std::memory_order_relaxed));
      stat(out, prefix + "moves_unconfirmed", m.moves_unconfirmed.load(std::memory_order_relaxed));
    }
  }
  stat(out, "proxy_topology_version", context.topologyVersion());
  out.append("END\r\n");
}

}  // namespace memzone::server
