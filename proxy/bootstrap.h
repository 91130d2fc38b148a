// The composition root of memzone-proxy: the one place that builds the concrete objects
// (topology source, listeners, workers) and wires them together.
#pragma once

#include "proxy/config/proxy_flags.h"

namespace memzone {

// Runs until SIGTERM/SIGINT (then drains); returns the process exit code.
int runProxy(const config::ProxyOptions& options);

}  // namespace memzone
