// The composition root of memzone-controller: builds the source, the snapshot cache, the
// gRPC server, and wires them together.
#pragma once

#include "controlplane/config/controller_flags.h"

namespace memzone::controlplane {

// Runs until SIGTERM/SIGINT; returns the process exit code.
int runController(const ControllerOptions& options);

}  // namespace memzone::controlplane
