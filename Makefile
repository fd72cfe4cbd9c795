# ddshim build. `make` builds build/libddshim.so and the tools; `make test` runs
# every unit and integration test; see README.md for the rest.
CC      ?= gcc
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
SANITIZE ?=

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

# Libraries that could clash with the host program's own copies are linked
# statically and hidden; jansson's archive is not PIC, so it stays dynamic.
# libcurl is dlopen()ed by the writer thread, never linked.
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

.PHONY: all test unit integration demo bench fuzz reliability clean
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

test: all unit integration

demo: all
	@scripts/demo.sh

bench: all
	@scripts/bench.sh

clean:
	rm -rf $(BUILD)
