#include "guard.h"

__thread int dds_in_shim __attribute__((tls_model("initial-exec"))) = 0;
__thread int dds_in_signal __attribute__((tls_model("initial-exec"))) = 0;
