#include "controlplane/ha/lease.h"

#include <sys/time.h>

#include <ctime>

namespace memzone::controlplane::ha {
namespace {

using nlohmann::json;

}  // namespace

std::string microTimeNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  std::tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%06ldZ", ts.tv_nsec / 1000);
  return buf;
}

LeaseRecord recordOf(const json& lease) {
  LeaseRecord r;
  if (!lease.is_object()) return r;
  const json spec = lease.value("spec", json::object());
  if (!spec.is_object()) return r;
  auto str = [&](const char* key) {
    return spec.contains(key) && spec[key].is_string() ? spec[key].get<std::string>() : "";
  };
  auto num = [&](const char* key) {
    return spec.contains(key) && spec[key].is_number_integer() ? spec[key].get<int>() : 0;
  };
  r.holder_identity = str("holderIdentity");
  r.lease_duration_seconds = num("leaseDurationSeconds");
  r.acquire_time = str("acquireTime");
  r.renew_time = str("renewTime");
  r.lease_transitions = num("leaseTransitions");
  return r;
}

json specOf(const LeaseRecord& r) {
  json spec = json::object();
  // client-go leaves an empty holder out; a released Lease has none.
  if (!r.holder_identity.empty()) spec["holderIdentity"] = r.holder_identity;
  spec["leaseDurationSeconds"] = r.lease_duration_seconds;
  if (!r.acquire_time.empty()) spec["acquireTime"] = r.acquire_time;
  if (!r.renew_time.empty()) spec["renewTime"] = r.renew_time;
  spec["leaseTransitions"] = r.lease_transitions;
  return spec;
}

LeaseClient::LeaseClient(k8s::ApiClient& client, std::string ns, std::string name, long timeout_ms,
                         json labels)
    : client_(client),
      ns_(std::move(ns)),
      name_(std::move(name)),
      timeout_ms_(timeout_ms),
      labels_(std::move(labels)) {}

LeaseClient::Result LeaseClient::finish(const k8s::ApiResponse& r, LeaseRecord* out) {
  if (r.status == 200 || r.status == 201) {
    json object = json::parse(r.body, nullptr, false);
    if (!object.is_object()) {
      last_error_ = "malformed Lease in the response";
      return Result::kError;
    }
    object_ = std::move(object);
    if (out != nullptr) *out = recordOf(object_);
    last_error_.clear();
    return Result::kOk;
  }
  last_error_ = r.status ? "HTTP " + std::to_string(r.status) : r.error;
  if (r.status == 404) return Result::kNotFound;
  if (r.status == 409) return Result::kConflict;  // AlreadyExists or Conflict
  return Result::kError;
}

LeaseClient::Result LeaseClient::get(LeaseRecord& out) {
  k8s::ApiResponse r = client_.get(
      "/apis/coordination.k8s.io/v1/namespaces/" + ns_ + "/leases/" + name_, timeout_ms_);
  Result result = finish(r, &out);
  if (result == Result::kNotFound) object_ = nullptr;
  return result;
}

LeaseClient::Result LeaseClient::create(const LeaseRecord& record, const json& annotations) {
  json meta = {{"name", name_}, {"namespace", ns_}};
  if (!labels_.empty()) meta["labels"] = labels_;
  if (annotations.is_object()) meta["annotations"] = annotations;
  json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                {"kind", "Lease"},
                {"metadata", meta},
                {"spec", specOf(record)}};
  return finish(client_.post("/apis/coordination.k8s.io/v1/namespaces/" + ns_ + "/leases",
                             lease.dump(), timeout_ms_),
                nullptr);
}

LeaseClient::Result LeaseClient::update(const LeaseRecord& record, const json& annotations) {
  if (!object_.is_object()) return Result::kNotFound;
  json lease = object_;
  lease["spec"] = specOf(record);
  if (annotations.is_object()) lease["metadata"]["annotations"] = annotations;
  return finish(client_.put("/apis/coordination.k8s.io/v1/namespaces/" + ns_ + "/leases/" + name_,
                            lease.dump(), timeout_ms_),
                nullptr);
}

LeaseClient::Result LeaseClient::remove() {
  k8s::ApiResponse r = client_.remove(
      "/apis/coordination.k8s.io/v1/namespaces/" + ns_ + "/leases/" + name_, timeout_ms_);
  object_ = nullptr;
  if (r.status == 200 || r.status == 202) return Result::kOk;
  return finish(r, nullptr);
}

}  // namespace memzone::controlplane::ha
