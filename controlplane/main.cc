// memzone-controller: flags -> bootstrap. Nothing else lives here.
#include <absl/synchronization/mutex.h>

#include <cstdio>
#include <string>
#include <vector>

#include "controlplane/bootstrap.h"
#include "controlplane/config/controller_flags.h"
#include "memzone/ops/log.h"

int main(int argc, char** argv) {
  // Debian's abseil tracks lock order for every absl::Mutex (gRPC's) under one global spin
  // lock: with thousands of proxy connections that lock alone stalls handshakes (a restart
  // storm of 5,000 proxies never converged). Nothing here needs it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  memzone::ops::setLogProgram("memzone-controller");
  std::vector<std::string> args(argv + 1, argv + argc);
  memzone::controlplane::ControllerFlags flags = memzone::controlplane::parseControllerFlags(args);
  if (flags.help) {
    fputs(memzone::controlplane::controllerUsage().c_str(), stdout);
    return 0;
  }
  if (flags.version) {
    printf("memzone-controller %s\n", MEMZONE_VERSION);
    return 0;
  }
  if (!flags.error.empty()) {
    fprintf(stderr, "memzone-controller: %s\n", flags.error.c_str());
    return 2;
  }
  return memzone::controlplane::runController(flags.options);
}
