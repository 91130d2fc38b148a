// memzone-controller: flags -> bootstrap. Nothing else lives here.
#include <cstdio>
#include <string>
#include <vector>

#include "controlplane/bootstrap.h"
#include "controlplane/config/controller_flags.h"
#include "memzone/ops/log.h"

int main(int argc, char** argv) {
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
