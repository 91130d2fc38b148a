#include "proxy/rebalance/zone_crawl.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <thread>

#include "memzone/ops/log.h"
#include "proxy/event/event_base.h"
#include "proxy/protocol/meta_value.h"
#include "proxy/protocol/wire_key.h"

namespace memzone::rebalance {
namespace {

constexpr size_t kBatchItems = 128;
constexpr uint64_t kBatchBytes = 4 << 20;  // values fetched at once, at most (about)
constexpr int64_t kLeaseRefreshUs = 5'000'000;
constexpr int kBusyRetries = 40;  // memcached runs one crawl at a time: wait up to ~10 s
// Items larger than this (memcached's default limit is 1 MiB) are deleted, not moved, so a
// batch buffers at most about kBatchBytes + kMaxValueBytes; a server whose replies are larger
// than its dump said is failed, not believed.
constexpr size_t kMaxValueBytes = size_t{8} << 20;

// What a move needs of a fetched value's "VA" line, kept past the line's buffer.
struct Fetched {
  size_t length = 0;
  std::string ttl, flags;
  uint64_t cas = 0;
};

bool parseValueLine(std::string_view line, Fetched& out) {
  protocol::MetaValueHeader head;
  if (!protocol::parseMetaValueHeader(line, head)) return false;
  out = Fetched{head.length, std::string(head.ttl), std::string(head.flags), head.cas};
  return true;
}

// The index of `address` in `zone`, or -1 (a server that left the zone owns nothing).
int indexOf(const topology::Zone& zone, const std::string& address) {
  for (size_t i = 0; i < zone.backends.size(); ++i) {
    if (zone.backends[i].address == address) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

bool casCounterOf(const std::string& address, const LinkTls& tls, int64_t until_us, uint64_t& cas) {
  std::string host, line;
  uint16_t port = 0;
  if (!topology::splitAddress(address, host, port)) return false;
  in6_addr numeric;
  if (inet_pton(AF_INET, host.c_str(), &numeric) != 1 &&
      inet_pton(AF_INET6, host.c_str(), &numeric) != 1) {
    return false;
  }
  int64_t left_ms = (until_us - event::nowMicros()) / 1000;
  if (left_ms <= 0) return false;
  MemcachedLink l;
  l.setAbort([until_us] { return event::nowMicros() >= until_us; });
  if (!l.connect(host, port, static_cast<int>(std::min<int64_t>(left_ms, 200)), tls).empty()) {
    return false;
  }
  l.append("ms memzone:migration:watermark 1 T60 c\r\nx\r\n");
  if (!l.flush() || !l.readLine(line) || line.rfind("HD c", 0) != 0) return false;
  auto [p, ec] = std::from_chars(line.data() + 4, line.data() + line.size(), cas);
  return ec == std::errc();
}

ZoneCrawl::ZoneCrawl(const topology::Zone& now, std::vector<const topology::Zone*> before,
                     std::map<std::string, uint64_t> purge_marks, bool missed_writes, LinkTls tls,
                     ZoneMoveCounters& counters, Hooks hooks)
    : now_(now),
      before_(std::move(before)),
      purge_marks_(std::move(purge_marks)),
      missed_writes_(missed_writes),
      tls_(std::move(tls)),
      counters_(counters),
      hooks_(std::move(hooks)) {}

// Exactly the proxies' own keys, not every key under their prefixes: clients may use those
// too, and a client key the crawl skipped would never be purged (a stale read).
bool ZoneCrawl::internalKey(const std::string& key) {
  auto all = [](std::string_view s, auto pred) {
    return !s.empty() && std::all_of(s.begin(), s.end(), pred);
  };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string_view k = key;
  constexpr std::string_view kLease = "memzone:migration:";
  if (k.starts_with(kLease)) {
    // A lease ("memzone:migration:<32 hex>", key_mover.cc) or the counter probe's key.
    std::string_view rest = k.substr(kLease.size());
    return rest == "watermark" || (rest.size() == 32 && all(rest, [&](char c) {
                                     return digit(c) || (c >= 'a' && c <= 'f');
                                   }));
  }
  constexpr std::string_view kSentinel = "memzone:sentinel:";  // <host>:<pid>:<worker>
  if (!k.starts_with(kSentinel)) return false;
  std::string_view rest = k.substr(kSentinel.size());
  size_t worker = rest.rfind(':');
  if (worker == std::string_view::npos || worker == 0) return false;
  size_t pid = rest.rfind(':', worker - 1);
  if (pid == std::string_view::npos || pid == 0) return false;
  return all(rest.substr(worker + 1), digit) && all(rest.substr(pid + 1, worker - pid - 1), digit);
}

MemcachedLink* ZoneCrawl::link(const std::string& address) {
  auto& slot = links_[address];
  if (!slot) {
    slot = std::make_unique<MemcachedLink>();
    slot->setAbort(hooks_.superseded);
  }
  if (!slot->connected()) {
    std::string host;
    uint16_t port = 0;
    if (!topology::splitAddress(address, host, port)) return nullptr;
    std::string error = slot->connect(host, port, kIoTimeoutMs, tls_);
    if (!error.empty()) {
      ops::logEvent(ops::LogLevel::kWarn, "move-connect:" + address, "key mover: %s: %s",
                    address.c_str(), error.c_str());
      return nullptr;
    }
  }
  return slot.get();
}

Lease ZoneCrawl::takeLease(const topology::Backend& server, const std::string& key) {
  lease_key_ = key;
  MemcachedLink* l = link(server.address);
  if (l == nullptr) return Lease::kUnreachable;
  // Add semantics: the first proxy stores it. Its cas is the server's CAS counter now:
  // every item with a lower cas was written before this crawl.
  std::string line;
  l->append("ms " + key + " 3 T" + std::to_string(kLeaseTtlS) + " ME c\r\nrun\r\n");
  if (!l->flush() || !l->readLine(line)) return Lease::kUnreachable;
  if (line.rfind("HD", 0) == 0) {
    size_t c = line.find(" c");
    uint64_t cas = 0;
    if (c != std::string::npos)
      std::from_chars(line.data() + c + 2, line.data() + line.size(), cas);
    watermarks_[server.address] = cas;
    lease_refreshed_us_ = event::nowMicros();
    return Lease::kWon;
  }
  if (line.rfind("NS", 0) != 0) return Lease::kUnreachable;
  l->append("mg " + key + " v c\r\n");
  if (!l->flush() || !l->readLine(line)) return Lease::kUnreachable;
  if (line.rfind("VA ", 0) == 0) {
    Fetched f;
    std::string value;
    if (!parseValueLine(line, f) || f.length > 64 || !l->readExact(f.length + 2, value)) {
      return Lease::kUnreachable;
    }
    if (value != "done\r\n") return Lease::kElsewhere;
    // A "done" older than this change (the server's counter when this proxy applied it) is
    // an earlier change's that derived the same key (the key hashes the zone's last rings
    // only: a zone back again and again, a flap repeated): not ours. Deleted (that item
    // only) and the lease asked for again. (One done for this change by a proxy that applied
    // it sooner goes too: the crawl is repeated, never skipped.)
    auto mark = purge_marks_.find(server.address);
    if (mark == purge_marks_.end() || mark->second == kUnknownCas || f.cas >= mark->second ||
        stale_done_retried_) {
      return Lease::kDone;
    }
    stale_done_retried_ = true;
    l->append("md " + key + " C" + std::to_string(f.cas) + "\r\n");
    if (!l->flush() || !l->readLine(line)) return Lease::kUnreachable;
    Lease again = takeLease(server, key);
    stale_done_retried_ = false;
    return again;
  }
  return Lease::kElsewhere;  // running elsewhere (or gone just now: ask again later)
}

void ZoneCrawl::releaseLease(const topology::Backend& server, const std::string& key) {
  auto held = watermarks_.find(server.address);
  MemcachedLink* l = link(server.address);
  if (held == watermarks_.end() || l == nullptr) return;
  std::string line;
  // Only our own lease (its cas is still the one our add got: touches keep it).
  l->append("md " + key + " C" + std::to_string(held->second) + "\r\n");
  if (l->flush()) l->readLine(line);
  watermarks_.erase(held);
}

void ZoneCrawl::finishLease(const topology::Backend& server, const std::string& key,
                            uint32_t ttl_s) {
  auto held = watermarks_.find(server.address);
  MemcachedLink* l = link(server.address);
  if (held == watermarks_.end() || l == nullptr) return;
  std::string line;
  l->append("ms " + key + " 4 T" + std::to_string(ttl_s == 0 ? 1 : ttl_s) + " C" +
            std::to_string(held->second) + "\r\ndone\r\n");
  if (l->flush()) l->readLine(line);
  watermarks_.erase(held);
}

bool ZoneCrawl::dump(const topology::Backend& server,
                     const std::function<bool(DumpedItem&)>& on_item) {
  std::string host;
  uint16_t port = 0;
  if (!topology::splitAddress(server.address, host, port)) return false;
  MemcachedLink d;
  d.setAbort(hooks_.superseded);
  std::string line;
  for (int attempt = 0;; ++attempt) {
    if (hooks_.superseded()) return false;
    std::string error = d.connect(host, port, kIoTimeoutMs, tls_);
    if (!error.empty()) return false;
    d.append("lru_crawler metadump all\r\n");
    if (!d.flush() || !d.readLine(line)) return false;
    if (line.rfind("BUSY", 0) != 0) break;
    // Another crawl (another proxy's, or memcached's own) is running: its turn first.
    d.close();
    if (attempt == kBusyRetries) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  DumpedItem item;
  for (uint64_t lines = 0;; ++lines) {
    if (lines > 0 && !d.readLine(line)) {
      ops::logEvent(ops::LogLevel::kWarn, "move-dump:" + server.address,
                    "key mover: %s: dump ended early: %s", server.address.c_str(),
                    d.error().c_str());
      return false;
    }
    // Per line, not per batch: most lines of a large server's dump are skipped, and a slow or
    // endless dump must not outlive a newer change, the window or the proxy.
    if (hooks_.superseded()) return false;
    if (!refreshLeases()) return false;
    switch (parseDumpLine(line, item)) {
      case DumpLine::kEnd:
        return true;
      case DumpLine::kSkipped:
        continue;
      case DumpLine::kError:
        ops::logEvent(ops::LogLevel::kWarn, "move-dump:" + server.address,
                      "key mover: %s: cannot crawl keys: %.200s", server.address.c_str(),
                      line.c_str());
        return false;
      case DumpLine::kItem:
        break;
    }
    if (internalKey(item.key) || !hooks_.ours(item.key)) continue;
    if (!on_item(item)) return false;
  }
}

bool ZoneCrawl::refreshLeases() {
  if (event::nowMicros() - lease_refreshed_us_ < kLeaseRefreshUs) return true;
  lease_refreshed_us_ = event::nowMicros();
  // Every lease this run holds, not only the server being dumped: the others wait for their
  // turn (or for the moves) and must not expire meanwhile.
  std::string line;
  for (const auto& [address, cas] : watermarks_) {
    MemcachedLink* l = link(address);
    if (l == nullptr) continue;  // its own pass fails and gives the lease back
    l->append("mg " + lease_key_ + " T" + std::to_string(kLeaseTtlS) + "\r\n");
    if (!l->flush() || !l->readLine(line)) continue;
  }
  return true;
}

bool ZoneCrawl::ownedThroughout(std::string_view key, const std::string& address) const {
  for (const topology::Zone* before : before_) {
    if (before->backends[before->ring.serverFor(key)].address != address) return false;
  }
  return true;
}

bool ZoneCrawl::purge(const topology::Backend& server) {
  int self = indexOf(now_, server.address);
  // A server that left the zone owns nothing (the move pass handles all its keys); one
  // continuously in the zone has no leftovers.
  if (self < 0 || purge_marks_.count(server.address) == 0) return true;
  return purgeOlderItems(server, [&](const DumpedItem& item) {
    if (now_.ring.serverFor(item.key) != static_cast<uint32_t>(self)) return false;
    // Owned now, and all along: its copy is the key's value. Else it was written when the
    // server was not the owner: a leftover, older than writes that went elsewhere since.
    // After the zone was out of the topology, nothing it holds from before is current.
    return missed_writes_ || !ownedThroughout(item.key, server.address);
  });
}

bool ZoneCrawl::purgeRerouted(const topology::Backend& server) {
  // Every item the dump shows was judged by the crawl's `ours` hook (rerouted keys only).
  return purgeOlderItems(server, [](const DumpedItem&) { return true; });
}

bool ZoneCrawl::purgeOlderItems(const topology::Backend& server,
                                const std::function<bool(const DumpedItem&)>& leftover) {
  // "Older": below the server's CAS counter when the change was applied, else below its
  // lease's (later, so a fresh value may go too: a miss, never a leftover).
  auto mark = purge_marks_.find(server.address);
  uint64_t below = mark == purge_marks_.end() ? kUnknownCas : mark->second;
  if (below == kUnknownCas) {
    auto lease = watermarks_.find(server.address);
    below = lease == watermarks_.end() ? 0 : lease->second;
  }
  if (below == 0) return true;  // memcached -C: no cas tells old items from new
  purges_.clear();
  bool ok = dump(server, [&](DumpedItem& item) {
    if (item.cas >= below || !leftover(item)) return true;  // written since the change began
    purges_.push_back(std::move(item));
    return purges_.size() < kBatchItems || flushPurges(server);
  });
  ok = ok && flushPurges(server);
  if (!ok) links_.clear();  // a failed batch may leave replies unread on a link
  return ok;
}

bool ZoneCrawl::flushPurges(const topology::Backend& server) {
  if (purges_.empty()) return true;
  if (hooks_.superseded()) return false;
  MemcachedLink* l = link(server.address);
  if (l == nullptr) return false;
  for (const DumpedItem& item : purges_) {
    l->append("md " + protocol::wireKeyOf(item.key) + " C" + std::to_string(item.cas) + "\r\n");
  }
  if (!l->flushBatch()) return false;
  std::string line;
  for (size_t i = 0; i < purges_.size(); ++i) {
    if (!l->readLine(line)) return false;
    if (line == "HD") counters_.add(counters_.purged);
  }
  purges_.clear();
  return l->endBatch();
}

bool ZoneCrawl::move(const topology::Backend& server) {
  int self = indexOf(now_, server.address);
  batch_.clear();
  purges_.clear();
  batch_bytes_ = 0;
  bool ok = dump(server, [&](DumpedItem& item) {
    uint32_t owner = now_.ring.serverFor(item.key);
    if (static_cast<int>(owner) == self) return true;
    // Only the owner under every ring since the last completed crawl holds the key's value;
    // a copy anywhere else is a leftover (a crawl skipped or given up, a server back with old
    // contents): moving it could replace newer writes, so it is deleted.
    // After an absence (missed_writes_) no copy from before is current: none is moved.
    if (missed_writes_ || !ownedThroughout(item.key, server.address) ||
        item.size > kMaxValueBytes) {
      purges_.push_back(std::move(item));
      return purges_.size() < kBatchItems || flushPurges(server);
    }
    batch_bytes_ += item.size;
    batch_.push_back(Item{std::move(item), owner});
    return (batch_.size() < kBatchItems && batch_bytes_ < kBatchBytes) || flushMoves(server);
  });
  ok = ok && flushMoves(server) && flushPurges(server);
  if (!ok) links_.clear();  // a failed batch may leave replies unread on a link
  return ok;
}

bool ZoneCrawl::flushMoves(const topology::Backend& server) {
  if (batch_.empty()) return true;
  if (hooks_.superseded()) return false;
  // Its values may be older than writes it missed: nobody reads it until it is clean.
  if (!hooks_.readable(server.address)) return false;
  MemcachedLink* source = link(server.address);
  if (source == nullptr) return false;
  // 1. Fetch value, TTL, flags and cas.
  for (const Item& item : batch_)
    source->append("mg " + protocol::wireKeyOf(item.dumped.key) + " v t f c\r\n");
  if (!source->flushBatch()) return false;
  struct Copy {
    const Item* item;
    Fetched fetched;
    std::string value;        // data + "\r\n"
    bool stored = false;      // the owner said stored
    bool maybe_sent = false;  // sent, and no proven answer: it may be stored
  };
  std::vector<Copy> copies;
  copies.reserve(batch_.size());
  std::string line;
  size_t fetched_bytes = 0;
  for (const Item& item : batch_) {
    if (!source->readLine(line)) return false;
    if (line == "EN") continue;  // gone since the dump
    Copy c{&item, {}, {}};
    if (!parseValueLine(line, c.fetched)) return false;
    fetched_bytes += c.fetched.length;
    if (c.fetched.length > kMaxValueBytes || fetched_bytes > kBatchBytes + kMaxValueBytes) {
      return false;
    }
    if (!source->readExact(c.fetched.length + 2, c.value)) return false;
    copies.push_back(std::move(c));
  }
  if (!source->endBatch()) return false;
  // 2. Add each to its owner, per owner in one flush (one expiring this second is not).
  std::map<uint32_t, std::vector<Copy*>> by_target;
  for (Copy& c : copies) {
    if (protocol::worthCopying(c.fetched.ttl)) by_target[c.item->target].push_back(&c);
  }
  for (auto& [target, list] : by_target) {
    MemcachedLink* t = link(now_.backends[target].address);
    if (t == nullptr) continue;  // the owner is unreachable: the keys are only dropped
    for (Copy* c : list) {
      std::string request;
      protocol::appendMetaAddHead(protocol::wireKeyOf(c->item->dumped.key), c->fetched.length,
                                  c->fetched.ttl, c->fetched.flags, request);
      t->append(request + c->value);
    }
    for (Copy* c : list) c->maybe_sent = true;
    if (!t->flushBatch()) continue;
    std::vector<bool> stored;
    for (size_t i = 0; i < list.size() && t->readLine(line); ++i) stored.push_back(line == "HD");
    // Believed only once the fence proves the count (else none counts as stored).
    if (stored.size() == list.size() && t->endBatch()) {
      for (size_t i = 0; i < list.size(); ++i) {
        list[i]->stored = stored[i];
        list[i]->maybe_sent = false;
      }
    }
  }
  // 3. Delete each at the server, only if it is still the item copied.
  for (const Copy& c : copies) {
    source->append("md " + protocol::wireKeyOf(c.item->dumped.key) + " C" +
                   std::to_string(c.fetched.cas) + "\r\n");
  }
  if (!source->flushBatch()) return false;
  std::vector<const Copy*> undo;
  for (const Copy& c : copies) {
    if (!source->readLine(line)) return false;
    if (line == "HD") {
      counters_.add(c.stored ? counters_.moved : counters_.dropped);
    } else if (c.stored || c.maybe_sent) {
      undo.push_back(&c);  // written or deleted meanwhile: neither copy is trusted
    }
  }
  if (!source->endBatch()) return false;
  // Written or deleted through a proxy still on the old ring while we copied: delete both.
  std::map<MemcachedLink*, size_t> sent;
  for (const Copy* c : undo) {
    for (MemcachedLink* l : {link(now_.backends[c->item->target].address), source}) {
      if (l == nullptr) continue;
      l->append("md " + protocol::wireKeyOf(c->item->dumped.key) + "\r\n");
      ++sent[l];
    }
  }
  for (auto& [l, count] : sent) {
    if (!l->flushBatch()) continue;
    size_t read = 0;
    while (read < count && l->readLine(line)) ++read;
    if (read == count) l->endBatch();
  }
  batch_.clear();
  batch_bytes_ = 0;
  return true;
}

}  // namespace memzone::rebalance
