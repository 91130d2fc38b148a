#include "memzone/ops/certificate_expiry.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "memzone/ops/tls_files.h"

namespace memzone::ops {
namespace {

class CertificateExpiryCollector : public prometheus::Collectable {
 public:
  void add(const std::string& path) {
    std::lock_guard lock(mu_);
    if (std::find(files_.begin(), files_.end(), path) == files_.end()) files_.push_back(path);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<std::string> files;
    {
      std::lock_guard lock(mu_);
      files = files_;
    }
    if (files.empty()) return {};
    prometheus::MetricFamily family;
    family.name = "memzone_tls_certificate_expiry_seconds";
    family.help =
        "Unix time the earliest certificate in each configured file expires (notAfter); "
        "no series while the file cannot be read.";
    family.type = prometheus::MetricType::Gauge;
    for (const std::string& file : files) {
      std::optional<int64_t> not_after = earliestNotAfter(file);
      if (!not_after) continue;
      prometheus::ClientMetric m;
      m.label = {{"file", file}};
      m.gauge.value = static_cast<double>(*not_after);
      family.metric.push_back(std::move(m));
    }
    return {std::move(family)};
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> files_;
};

std::shared_ptr<CertificateExpiryCollector> instance() {
  static auto collector = std::make_shared<CertificateExpiryCollector>();
  return collector;
}

}  // namespace

void watchCertificateExpiry(const std::string& path) {
  if (!path.empty()) instance()->add(path);
}

std::shared_ptr<prometheus::Collectable> certificateExpiryCollector() { return instance(); }

}  // namespace memzone::ops
