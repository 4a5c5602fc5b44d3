# pgbroker — plain GNU make. `make`, `make test`, `make demo`, `make bench`.
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKGS    := libpq liburing
VERSION_MAJOR := 0
VERSION_MINOR := 1
VERSION_PATCH := 0
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
# libsystemd is optional: with it the broker reports readiness (sd_notify)
# and the unit is Type=notify; without it, Type=simple. SYSTEMD=0 opts out.
ifneq ($(SYSTEMD),0)
HAVE_SYSTEMD := $(shell pkg-config --exists libsystemd 2>/dev/null && echo 1)
endif
CFLAGS_WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wno-format-nonliteral -Werror
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(CFLAGS_WARN) -MMD -MP -D_GNU_SOURCE -I. -Icommon -Iclient \
	-DPGB_VERSION_MAJOR=$(VERSION_MAJOR) -DPGB_VERSION_MINOR=$(VERSION_MINOR) \
	-DPGB_VERSION_PATCH=$(VERSION_PATCH)
ifeq ($(HAVE_SYSTEMD),1)
CFLAGS  += -DHAVE_SYSTEMD $(shell pkg-config --cflags libsystemd)
SYSTEMD_LIBS := $(shell pkg-config --libs libsystemd)
endif
ifeq ($(SANITIZE),1)
override SANITIZE := address,undefined
endif
ifdef SANITIZE
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# pkg-config is consulted only when these are needed (not for `make deps`).
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_LIBS  = $(shell pkg-config --libs criterion 2>/dev/null)
CFLAGS += $(PKG_CFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:.c=.o)
COMMON_PIC := $(COMMON_SRC:.c=.pic.o)
BROKER_SRC := $(wildcard broker/*.c)
BROKER_OBJ := $(BROKER_SRC:.c=.o)
CLIENT_SRC := $(wildcard client/*.c)
CLIENT_OBJ := $(CLIENT_SRC:.c=.o)
CLIENT_PIC := $(CLIENT_SRC:.c=.pic.o)

TOOLS := tools/poolstat tools/pgb_demo tools/poolbench
UNIT_SRC  := $(wildcard tests/unit/*.c)
UNIT_BIN  := tests/unit/unit_tests
INTEG_SRC := $(wildcard tests/integ/test_*.c)
INTEG_LIB := tests/integ/harness.o
INTEG_BIN := tests/integ/integ_tests

ALL := broker/pgbroker client/libpgbroker.a client/libpgbroker.so $(TOOLS)

.PHONY: all deps test unit integ demo bench install clean check-deps
all: $(ALL)

# Objects are rebuilt whenever the flags change (SANITIZE=1 after a plain build).
FLAGS_STAMP := .build-flags
FLAGS_NOW := $(CC) $(CFLAGS) $(LDFLAGS)
ifneq ($(FLAGS_NOW),$(shell cat $(FLAGS_STAMP) 2>/dev/null))
$(shell printf '%s' '$(FLAGS_NOW)' > $(FLAGS_STAMP))
endif

$(FLAGS_STAMP): ;

%.o: %.c $(FLAGS_STAMP)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

%.pic.o: %.c $(FLAGS_STAMP)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

broker/pgbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(SYSTEMD_LIBS) -lpthread

client/libpgbroker.a: $(CLIENT_OBJ) $(COMMON_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

client/libpgbroker.so: $(CLIENT_PIC) $(COMMON_PIC) client/libpgbroker.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,--version-script=client/libpgbroker.map \
		-Wl,-soname,libpgbroker.so.0 -o $@ $(CLIENT_PIC) $(COMMON_PIC)

tools/poolstat: tools/poolstat.o $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lm

tools/pgb_demo: tools/pgb_demo.o client/libpgbroker.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lm

tools/poolbench: tools/poolbench.o tools/bench.o client/libpgbroker.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# tools/bench.o: poolbench's pure parts, tested in tests/unit/test_poolbench.c.
$(UNIT_BIN): $(UNIT_SRC:.c=.o) $(COMMON_OBJ) tools/bench.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(PKG_LIBS) -lm

$(INTEG_BIN): $(INTEG_SRC:.c=.o) $(INTEG_LIB) client/libpgbroker.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(PKG_LIBS)

# Install what is missing, then build. Both set-up commands start here.
deps:
	@sh tools/deps.sh

test: deps
	$(MAKE) all $(UNIT_BIN) $(INTEG_BIN)
	./$(UNIT_BIN) --jobs 2
	sh tools/run-integ.sh ./$(INTEG_BIN)

unit: $(UNIT_BIN)
	./$(UNIT_BIN)

demo: deps
	$(MAKE) all
	sh tools/demo.sh

# poolbench --compare (direct, pgbouncer, broker) on a throwaway PostgreSQL;
# writes bench/results.md and bench/results.svg.
bench:
	@sh tools/deps.sh --bench
	$(MAKE) all
	sh tools/bench.sh

# libFuzzer on the request decoder and the ring (tests/fuzz/fuzz_req.c), built
# by clang into build-fuzz/ (never mixed with the gcc objects), seeded with
# valid encodings, run for FUZZ_SECONDS. `make soak`: SOAK_SECONDS of mixed
# load with agents killed at random (tools/soak.sh), not part of `make test`.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -D_GNU_SOURCE -Icommon $(CFLAGS_WARN) \
	-fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_DEPS    := common/proto.c common/proto.h common/ring.c common/ring.h tests/fuzz/fuzz_req.c
.PHONY: fuzz soak
fuzz:
	@sh tools/deps.sh --fuzz
	$(Q)mkdir -p $(FUZZ_DIR)/obj $(FUZZ_DIR)/seeds $(FUZZ_DIR)/corpus
	$(Q)$(MAKE) --no-print-directory $(FUZZ_DIR)/fuzz_req $(FUZZ_DIR)/gen_seeds
	$(Q)./$(FUZZ_DIR)/gen_seeds $(FUZZ_DIR)/seeds
	./$(FUZZ_DIR)/fuzz_req -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds

$(FUZZ_DIR)/obj/%.o: common/%.c common/proto.h common/ring.h
	@mkdir -p $(FUZZ_DIR)/obj
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

$(FUZZ_DIR)/fuzz_req: $(FUZZ_DEPS) $(FUZZ_DIR)/obj/proto.o $(FUZZ_DIR)/obj/ring.o
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ \
		tests/fuzz/fuzz_req.c $(FUZZ_DIR)/obj/proto.o $(FUZZ_DIR)/obj/ring.o

$(FUZZ_DIR)/gen_seeds: $(FUZZ_DEPS) $(FUZZ_DIR)/obj/proto.o $(FUZZ_DIR)/obj/ring.o
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_SEED_MAIN -fsanitize=address,undefined -o $@ \
		tests/fuzz/fuzz_req.c $(FUZZ_DIR)/obj/proto.o $(FUZZ_DIR)/obj/ring.o

soak:
	@sh tools/deps.sh
	$(MAKE) all tools/soak
	sh tools/soak.sh

tools/soak: tools/soak.o client/libpgbroker.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 755 broker/pgbroker tools/poolstat tools/poolbench $(DESTDIR)$(PREFIX)/bin/
	install -m 644 client/libpgbroker.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 client/libpgbroker.so $(DESTDIR)$(PREFIX)/lib/libpgbroker.so.0
	ln -sf libpgbroker.so.0 $(DESTDIR)$(PREFIX)/lib/libpgbroker.so
	install -m 644 client/pgbroker.h $(DESTDIR)$(PREFIX)/include/

clean:
	rm -f $(ALL) $(UNIT_BIN) $(INTEG_BIN) */*.o */*/*.o */*.d */*/*.d

-include $(wildcard */*.d */*/*.d)
