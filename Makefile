# ddshim build. `make` builds build/libddshim.so and the tools; `make test` runs
# every unit and integration test; see README.md for the rest.
CC      ?= gcc
PYTHON  ?= /usr/bin/python3
SANITIZE ?=
# A sanitizer build has its own tree (build-asan: ASan+UBSan, build-tsan).
ifeq ($(SANITIZE),address)
BUILD   ?= build-asan
endif
ifeq ($(SANITIZE),thread)
BUILD   ?= build-tsan
endif
BUILD   ?= build

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -fPIC -fvisibility=hidden -pthread $(WARN) -I. -Icore
ifeq ($(CI),true)
CFLAGS  += -Werror
endif
ifeq ($(SANITIZE),address)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
LDSAN   := -fsanitize=address,undefined
endif
ifeq ($(SANITIZE),thread)
CFLAGS  += -fsanitize=thread
LDSAN   := -fsanitize=thread
endif

# Running the tests against a sanitizer build: programs that are not
# instrumented (curl, python3, psql...) can only load an instrumented
# libddshim.so if the sanitizer's runtime is preloaded before it
# (DDSHIM_PRELOAD_EXTRA, honoured by scripts/ddshim-run); DDSHIM_BUILD points
# the tests at this tree. Reports go to $(SAN_LOGS) (never to the programs'
# stderr, which tests compare); `sanitizer-report` fails on any that involves
# ddshim's code.
SAN_LOGS := $(abspath $(BUILD))/sanitizer-logs
ifneq ($(SANITIZE),)
export DDSHIM_BUILD := $(abspath $(BUILD))
export DDSHIM_LIB := $(abspath $(BUILD))/libddshim.so
export DDSHIM_PRELOAD_EXTRA := $(shell $(CC) -print-file-name=$(if $(filter thread,$(SANITIZE)),libtsan.so,libasan.so))
export ASAN_OPTIONS := detect_leaks=0:verify_asan_link_order=0:log_path=$(SAN_LOGS)/asan
export UBSAN_OPTIONS := print_stacktrace=1:log_path=$(SAN_LOGS)/ubsan
export TSAN_OPTIONS := halt_on_error=0:report_signal_unsafe=0:die_after_fork=0:suppressions=$(abspath tests/tsan.supp):log_path=$(SAN_LOGS)/tsan
$(shell mkdir -p $(SAN_LOGS))
endif

# Libraries that could clash with the host program's own copies are linked
# statically and hidden; jansson's archive is not PIC, so it stays dynamic.
# No libcurl: core/agent_http.c talks to the agent (see README).
STATIC_LIBS := -Wl,-Bstatic -lmsgpackc -lpcre2-8 -Wl,-Bdynamic
DYN_LIBS    := -ljansson -ldl -lpthread

CORE_SRC    := $(sort $(wildcard core/*.c))
HOOKS_SRC   := $(sort $(wildcard hooks/*.c))
PRELOAD_SRC := $(sort $(wildcard preload/*.c))
CORE_OBJ    := $(CORE_SRC:%.c=$(BUILD)/%.o)
SHIM_OBJ    := $(CORE_OBJ) $(HOOKS_SRC:%.c=$(BUILD)/%.o) $(PRELOAD_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRC  := $(sort $(wildcard tests/helpers/*.c))
HELPER_BIN  := $(HELPER_SRC:tests/helpers/%.c=$(BUILD)/tests/helpers/%)

.PHONY: all test unit integration demo bench fuzz fuzz-smoke reliability sanitizer-report clean
all: $(BUILD)/libddshim.so $(BUILD)/ddshim-agent $(HELPER_BIN)

$(BUILD)/%.o: %.c $(wildcard core/*.h) $(wildcard preload/*.h) $(wildcard hooks/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libddshim.so: $(SHIM_OBJ) preload/exports.map
	$(CC) -shared $(LDSAN) -o $@ $(SHIM_OBJ) -Wl,--version-script=preload/exports.map \
	  -Wl,--exclude-libs,ALL -Wl,-z,now -Wl,-z,relro $(STATIC_LIBS) $(DYN_LIBS)

# The local agent: a stand-in for the Datadog Agent's /v0.4/traces intake.
$(BUILD)/ddshim-agent: scripts/agent/ddshim-agent.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=default $(LDSAN) -o $@ $< -lmicrohttpd -lmsgpackc -ljansson

# test_log includes core/log.c itself (to reach its static date arithmetic).
$(BUILD)/tests/test_log: tests/unit/test_log.c $(filter-out $(BUILD)/core/log.o,$(CORE_OBJ))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(filter-out $(BUILD)/core/log.o,$(CORE_OBJ)) -lcmocka $(STATIC_LIBS) $(DYN_LIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(CORE_OBJ) -lcmocka $(STATIC_LIBS) $(DYN_LIBS)

# Small real programs the integration tests drive (hiredis/libpq clients, ...).
$(BUILD)/tests/helpers/%: tests/helpers/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(shell sed -n 's|^// link: ||p' $<) -lpthread

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	$(PYTHON) -m pytest -q tests/integration
	$(PYTHON) -m pytest -q tests/reliability -m "not slow"

test: all unit integration $(if $(SANITIZE),sanitizer-report,fuzz-smoke)

# Fails if a sanitizer reported anything in ddshim's own code or helpers.
sanitizer-report:
	@scripts/reliability.sh --sanitizer-report $(SAN_LOGS)

# libFuzzer targets: every tests/fuzz/fuzz_*.c, each linked with the core/
# sources it exercises, run FUZZ_SECONDS each from the committed seeds
# (tests/fuzz/corpus/<name>); findings go to $(BUILD)/fuzz/<target>-crash-*,
# run counts to $(BUILD)/fuzz/results.jsonl.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_FLAGS   := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -std=gnu11 -I. -Icore
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SRC_fuzz_http    := core/http.c core/url.c
FUZZ_SRC_fuzz_inject  := core/http.c core/inject.c
FUZZ_SRC_fuzz_extract := core/propagation.c core/span.c core/tagset.c core/encode.c core/ids.c core/config.c \
                         core/log.c core/guard.c
FUZZ_SRC_fuzz_sql     := core/sql.c
FUZZ_SRC_fuzz_conn    := core/conn.c core/http.c core/inject.c core/span.c core/tagset.c core/encode.c core/ids.c \
                         core/propagation.c core/config.c core/url.c core/log.c core/guard.c
FUZZ_LIBS    := -Wl,-Bstatic -lpcre2-8 -lmsgpackc -Wl,-Bdynamic -ljansson -ldl -lpthread

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_SRC) $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(or $(FUZZ_SRC_fuzz_$*),$(CORE_SRC)) $(FUZZ_LIBS)

fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@scripts/reliability.sh --fuzz $(BUILD)/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Part of make test: every fuzz target still links (a core file missing from
# its list above used to show only in make reliability) and passes its seeds.
fuzz-smoke: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  log=$(BUILD)/fuzz/$$t.smoke.log; mkdir -p tests/fuzz/corpus/$${t#fuzz_}; \
	  if ASAN_OPTIONS=detect_leaks=1 $(BUILD)/fuzz/$$t -runs=0 -max_len=4096 tests/fuzz/corpus/$${t#fuzz_} >$$log 2>&1; \
	  then echo "$$t: seeds pass ($$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' $$log) inputs)"; \
	  else cat $$log; echo "$$t: FAILED"; exit 1; fi; done

# All of issue 7 (tests/reliability including slow cases, sanitizer builds,
# valgrind, fuzzing), ending with a table of figures; bounded (~20 min).
reliability: all
	@scripts/reliability.sh

demo: all
	@scripts/demo.sh

bench: all
	@scripts/bench.sh

clean:
	rm -rf $(BUILD)
