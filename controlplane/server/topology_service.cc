#include "controlplane/server/topology_service.h"

#include <algorithm>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

namespace memzone::controlplane {
namespace {

class TopologyStream final
    : public grpc::ServerBidiReactor<v1::TopologyRequest, v1::TopologySnapshot> {
 public:
  TopologyStream(grpc::CallbackServerContext* context, SnapshotCache& cache,
                 ProxyRegistry& registry, DirtyServers& dirty, AppliedEverywhere& everywhere,
                 const ZoneResolver& zones)
      : peer_(context->peer()),
        cache_(cache),
        registry_(registry),
        dirty_(dirty),
        everywhere_(everywhere),
        zones_(zones) {
    // Headers now, not with the first snapshot: a proxy that already has the current version
    // gets no snapshot, and the headers are how it knows the stream is established.
    context->AddInitialMetadata("memzone-controller", MEMZONE_VERSION);
    StartSendInitialMetadata();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    bool first = false;
    {
      std::lock_guard lock(mu_);
      if (!ok) {  // the proxy went away or the stream broke
        finishLocked();
        return;
      }
      if (id_ == 0) {
        hello(request_);
        first = true;
      } else if (!request_.response_nonce().empty()) {
        answer(request_);
      }
      registry_.health(id_, request_);  // every message of a reporting proxy carries it
      // Only a stream that said so in its hello: its end is what retires its report.
      if (wants_dirty_ && request_.reports_owed()) {
        // Under mu_ is fine: the set calls its listeners (which take mu_) on its own thread.
        dirty_.report(node_id_, id_,
                      std::set<std::string>(request_.backends_owed().begin(),
                                            request_.backends_owed().end()));
        dirty_.applied(id_, request_.dirty_applied());
        report_seen_ = std::max(report_seen_, request_.report_seq());
      }
      if (!first) {
        StartRead(&request_);
        sendIfNeededLocked();
        return;
      }
    }
    // Outside mu_: the cache calls listeners under its own lock, and they take mu_. Until
    // setup_done_ nothing may Finish (and so delete) this reactor under our feet.
    uint64_t subscription = cache_.subscribe([this] {
      std::lock_guard lock(mu_);
      sendIfNeededLocked();
    });
    uint64_t dirty_subscription = 0;
    if (wants_dirty_) {
      dirty_subscription = dirty_.subscribe([this] {
        std::lock_guard lock(mu_);
        sendIfNeededLocked();
      });
    }
    // Every stream: the end of the start-up grace lets held snapshots go (below).
    uint64_t everywhere_subscription = everywhere_.subscribe([this] {
      std::lock_guard lock(mu_);
      sendIfNeededLocked();
    });
    std::lock_guard lock(mu_);
    subscription_ = subscription;
    dirty_subscription_ = dirty_subscription;
    everywhere_subscription_ = everywhere_subscription;
    setup_done_ = true;
    if (finishing_) {
      finishLocked();
      return;
    }
    StartRead(&request_);
    sendIfNeededLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    write_in_flight_ = false;
    out_.reset();
    if (!ok) {
      finishLocked();
      return;
    }
    if (finishing_) {
      finishLocked();
      return;
    }
    sendIfNeededLocked();
  }

  void OnDone() override {
    if (subscription_ != 0) cache_.unsubscribe(subscription_);
    if (dirty_subscription_ != 0) dirty_.unsubscribe(dirty_subscription_);
    if (everywhere_subscription_ != 0) everywhere_.unsubscribe(everywhere_subscription_);
    if (id_ != 0) {
      registry_.disconnected(id_);
      everywhere_.detach(id_);
      if (wants_dirty_) {
        dirty_.detach(id_);
        dirty_.disconnected(node_id_, id_);
      }
    }
    delete this;
  }

 private:
  void hello(const v1::TopologyRequest& request) {
    zone_ = zones_(request);
    ProxyStatus status;
    status.node_id = request.node_id();
    status.node_name = request.node_name();
    status.zone = zone_;
    status.peer = peer_;
    status.connected_since = std::time(nullptr);
    status.applied_version = request.version_applied();
    acked_version_ = request.version_applied();  // e.g. from its state file: no resend
    node_id_ = request.node_id();
    wants_dirty_ = request.reports_owed();
    wants_everywhere_ = request.wants_applied_everywhere();
    wants_recent_ = request.wants_recent();
    behind_at_hello_ =
        !request.version_applied().empty() && !cache_.published(request.version_applied());
    id_ = registry_.connected(std::move(status));
    if (wants_dirty_) dirty_.attach(id_);
    // Under mu_ is fine: it calls its listeners on its own thread.
    everywhere_.attach(id_, request.version_applied());
    // A controller just started knows no proxy's debts but those back already: what the one
    // before it held dirty stays dirty for the grace, while the others reconnect and report.
    if (request.dirty_seen_size() > 0) {
      if (auto until = everywhere_.graceUntil()) {
        dirty_.inherit(node_id_, {request.dirty_seen().begin(), request.dirty_seen().end()},
                       *until);
      }
    }
  }

  void answer(const v1::TopologyRequest& request) {
    if (!awaiting_answer_ || request.response_nonce() != sent_nonce_) return;  // stale
    awaiting_answer_ = false;
    if (request.error_detail().empty()) {
      acked_version_ = request.version_applied();
      registry_.acked(id_, sent_version_);
      everywhere_.applied(id_, acked_version_);
    } else {
      nacked_version_ = sent_version_;
      registry_.nacked(id_, sent_version_, request.error_detail());
    }
  }

  void sendIfNeededLocked() {
    if (write_in_flight_ || finishing_ || id_ == 0) return;
    // The dirty set goes first and needs no answer: a proxy must stop reading a dirty server
    // as soon as possible, whatever snapshot is in flight. The version applied everywhere
    // rides along (a mover waiting on it waits no longer than it must).
    std::shared_ptr<const v1::TopologySnapshot> dirty;
    std::tuple<uint64_t, uint64_t, uint64_t> dirty_state{};
    if (wants_dirty_) {
      dirty = dirty_.message();
      dirty_state = {dirty->dirty().generation(), dirty->dirty().confirmed_generation(),
                     report_seen_};
    }
    std::string everywhere = wants_everywhere_ ? everywhere_.version() : std::string();
    bool dirty_due = wants_dirty_ && dirty_state != dirty_sent_;
    bool everywhere_due =
        wants_everywhere_ && (!everywhere_said_ || everywhere != everywhere_sent_);
    if (dirty_due || everywhere_due) {
      // This stream's own copy: it says which of this proxy's reports it reflects.
      auto own = dirty ? std::make_shared<v1::TopologySnapshot>(*dirty)
                       : std::make_shared<v1::TopologySnapshot>();
      if (wants_dirty_) {
        dirty_sent_ = dirty_state;
        own->mutable_dirty()->set_report_seen(report_seen_);
      }
      if (wants_everywhere_) {
        everywhere_said_ = true;
        everywhere_sent_ = everywhere;
        own->set_applied_everywhere(everywhere);
      }
      out_ = std::move(own);
      write_in_flight_ = true;
      StartWrite(out_.get());
      return;
    }
    if (awaiting_answer_) return;
    std::shared_ptr<const v1::TopologySnapshot> snapshot = cache_.forZone(zone_);
    if (!snapshot) return;
    if (snapshot->version() == acked_version_ || snapshot->version() == nacked_version_) return;
    // A proxy that came back serving a version this controller never published (a change made
    // while the controller was down) gets no new version during the start-up grace: such proxies
    // reconnect over their backoff, and those back first would write through the new ring while the
    // others still write through the old. At the grace's end they all switch within milliseconds. A
    // proxy serving nothing routes no write, and one that was current when it came back follows
    // changes as they come.
    if (behind_at_hello_ && everywhere_.graceUntil()) return;
    // A proxy serving nothing yet (a new pod), or that missed switches, also hears of the
    // recent ones, for their windows (its own copy; the rest share the zone's).
    if (wants_recent_ && cache_.missedSwitches(acked_version_))
      snapshot = cache_.withRecent(std::move(snapshot));
    out_ = std::move(snapshot);  // shared with the zone's other streams; kept until written
    sent_version_ = out_->version();
    sent_nonce_ = out_->nonce();
    awaiting_answer_ = true;
    write_in_flight_ = true;
    registry_.sent(id_, sent_version_, sent_nonce_);
    StartWrite(out_.get());
  }

  void finishLocked() {
    finishing_ = true;
    if (!setup_done_ && id_ != 0) return;       // the first read's handler finishes
    if (write_in_flight_ || finished_) return;  // OnWriteDone finishes
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  std::string peer_;
  SnapshotCache& cache_;
  ProxyRegistry& registry_;
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
  const ZoneResolver& zones_;
  std::mutex mu_;
  v1::TopologyRequest request_;
  std::shared_ptr<const v1::TopologySnapshot> out_;
  uint64_t id_ = 0;
  uint64_t subscription_ = 0;
  uint64_t dirty_subscription_ = 0;
  uint64_t everywhere_subscription_ = 0;
  std::string node_id_;
  bool wants_dirty_ = false;  // the proxy reports what it owes: it is sent the dirty set
  // Generation, confirmed generation and report seen, last sent (none yet: even the empty set
  // goes out).
  std::tuple<uint64_t, uint64_t, uint64_t> dirty_sent_{~uint64_t{0}, 0, 0};
  uint64_t report_seen_ = 0;  // the proxy's latest report_seq processed
  // The proxy waits for the version applied everywhere: it is sent it at once (even "", so
  // it knows this controller speaks it), then whenever it changes.
  bool wants_everywhere_ = false;
  bool wants_recent_ = false;     // replays TopologySnapshot.recent
  bool behind_at_hello_ = false;  // served a version we never published when it connected
  bool everywhere_said_ = false;
  std::string everywhere_sent_;
  std::string zone_;
  std::string acked_version_;
  std::string nacked_version_;
  std::string sent_version_;
  std::string sent_nonce_;
  bool awaiting_answer_ = false;
  bool write_in_flight_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool setup_done_ = false;
};

}  // namespace

TopologyService::TopologyService(SnapshotCache& cache, ProxyRegistry& registry, DirtyServers& dirty,
                                 AppliedEverywhere& everywhere, ZoneResolver zones)
    : cache_(cache),
      registry_(registry),
      dirty_(dirty),
      everywhere_(everywhere),
      zones_(std::move(zones)) {}

grpc::ServerBidiReactor<v1::TopologyRequest, v1::TopologySnapshot>* TopologyService::StreamTopology(
    grpc::CallbackServerContext* context) {
  return new TopologyStream(context, cache_, registry_, dirty_, everywhere_, zones_);
}

}  // namespace memzone::controlplane
