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
CFLAGS  += -std=gnu11 $(CFLAGS_WARN) -MMD -MP -D_GNU_SOURCE -I. -Icommon \
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
# libpg_query (PostgreSQL's parser) ships no .pc; the broker alone links it
# (broker/classify.c), never libpgbroker.
PG_QUERY_LIBS := -lpg_query
CFLAGS += $(PKG_CFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

# common/ is what broker and client share; libpgbroker links only the
# common objects the client uses (each defines symbols the client calls:
# check with nm).
COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:.c=.o)
LIB_COMMON := backoff breaker chan errform proto ring rundir sqlstate stats
COMMON_PIC := $(LIB_COMMON:%=common/%.pic.o)
BROKER_SRC := $(wildcard broker/*.c)
BROKER_OBJ := $(BROKER_SRC:.c=.o)
CLIENT_SRC := $(wildcard client/*.c)
CLIENT_OBJ := $(CLIENT_SRC:.c=.o)
CLIENT_PIC := $(CLIENT_SRC:.c=.pic.o)
# The drop-in libpq.so.5 (client/libpq): libpq's ABI over libpgbroker, one
# library with libpgbroker's objects inside; only libpq's names exported.
LIBPQ_SRC  := $(wildcard client/libpq/*.c)
LIBPQ_PIC  := $(LIBPQ_SRC:.c=.pic.o)
LIBPQ_SO   := client/libpq/libpq.so.5

TOOLS := tools/poolstat tools/pgb_demo tools/poolbench
UNIT_SRC  := $(wildcard tests/unit/*.c)
UNIT_BIN  := tests/unit/unit_tests
INTEG_SRC := $(wildcard tests/integ/test_*.c)
INTEG_LIB := tests/integ/harness.o
INTEG_BIN := tests/integ/integ_tests

ALL := broker/pgbroker client/libpgbroker.a client/libpgbroker.so $(LIBPQ_SO) $(TOOLS)

.PHONY: all deps test unit integ demo bench install uninstall check-install check-docs clean check-deps
all: $(ALL)

# Objects are rebuilt whenever the flags change (SANITIZE=1 after a plain build).
FLAGS_STAMP := .build-flags
FLAGS_NOW := $(CC) $(CFLAGS) $(LDFLAGS)
ifneq ($(FLAGS_NOW),$(shell cat $(FLAGS_STAMP) 2>/dev/null))
$(shell printf '%s' '$(FLAGS_NOW)' > $(FLAGS_STAMP))
endif

$(FLAGS_STAMP): ;

# Only the programs built on libpgbroker see its headers.
tools/%.o tests/%.o: CFLAGS += -Iclient
client/libpq/%.pic.o: CFLAGS += -Iclient

%.o: %.c $(FLAGS_STAMP)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

%.pic.o: %.c $(FLAGS_STAMP)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

broker/pgbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(PG_QUERY_LIBS) $(SYSTEMD_LIBS) -lpthread

# One relocatable object with every internal symbol made local, so that a
# program linking the archive sees only the pgb_ API (nothing to clash with
# its own ring_init or config_load).
client/libpgbroker.o: $(CLIENT_PIC) $(COMMON_PIC)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -r -nostdlib -o $@ $^ && objcopy --localize-hidden $@

client/libpgbroker.a: client/libpgbroker.o
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# Installed as $(SOFILE), with the links $(SONAME) and libpgbroker.so.
SONAME := libpgbroker.so.$(VERSION_MAJOR)
SOFILE := $(SONAME).$(VERSION_MINOR)

client/libpgbroker.so: $(CLIENT_PIC) $(COMMON_PIC) client/libpgbroker.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,--version-script=client/libpgbroker.map \
		-Wl,-soname,$(SONAME) -o $@ $(CLIENT_PIC) $(COMMON_PIC) -lpthread

# -Bsymbolic-functions: the face's own calls (PQexec -> PQsendQuery) stay
# inside it even when the system libpq is loaded beside it.
$(LIBPQ_SO): $(LIBPQ_PIC) $(CLIENT_PIC) $(COMMON_PIC) client/libpq/libpq.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,--version-script=client/libpq/libpq.map \
		-Wl,-Bsymbolic-functions -Wl,-soname,libpq.so.5 -o $@ \
		$(LIBPQ_PIC) $(CLIENT_PIC) $(COMMON_PIC) -lpthread

tools/poolstat: tools/poolstat.o tools/json.o $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lm

# The project's own programs also reach the internals (COMMON_OBJ).
tools/pgb_demo: tools/pgb_demo.o client/libpgbroker.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lm

tools/poolbench: tools/poolbench.o tools/bench.o tools/json.o client/libpgbroker.a $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# Runs a program with io_uring blocked by seccomp, as Docker does (tests/integ/test_loop.c).
tools/no_uring: tools/no_uring.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^

# tools/bench.o: poolbench's pure parts (tests/unit/test_poolbench.c);
# broker/cork.o: the broker's send() (tests/unit/test_cork.c);
# broker/classify.o: the statement classifier (unit tests, and the
# integration test that compares it with what the server did);
# broker/policy.o: its retry decisions (tests/unit/test_policy.c);
# broker/config*.o, broker/stmtcache.o.
UNIT_LIBS := tools/bench.o tools/json.o broker/cork.o broker/classify.o broker/policy.o \
	broker/config.o broker/config_load.o broker/config_show.o broker/stmtcache.o
$(UNIT_BIN): $(UNIT_SRC:.c=.o) $(COMMON_OBJ) $(UNIT_LIBS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(PKG_LIBS) $(PG_QUERY_LIBS) -lm

$(INTEG_BIN): $(INTEG_SRC:.c=.o) $(INTEG_LIB) client/libpgbroker.a $(COMMON_OBJ) broker/classify.o \
		broker/stmtcache.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(PKG_LIBS) $(PG_QUERY_LIBS)

# Install what is missing, then build. Both set-up commands start here.
deps:
	@sh tools/deps.sh

# The integration suite runs twice: on the event loop the broker picks
# (io_uring where it works), then on epoll forced (PGBROKER_LOOP=epoll).
test: deps
	$(MAKE) all $(UNIT_BIN) $(INTEG_BIN) tools/no_uring $(LIBPQ_API)
	./$(UNIT_BIN) --jobs 2
	sh tools/run-integ.sh ./$(INTEG_BIN)
	PGBROKER_LOOP=epoll sh tools/run-integ.sh ./$(INTEG_BIN)
	$(CHECK_INSTALL_ENV) PGB_MAKE='$(MAKE)' sh tools/check-install.sh
	$(CHECK_INSTALL_ENV) sh tools/check-docs.sh
	sh tools/run-integ.sh tests/libpq/run.sh
	$(MAKE) test-node

# Install into a temporary DESTDIR and check the result: files, the library's
# exports, man pages, agents built with pkg-config alone against the installed
# broker, then uninstall. Its make runs inherit this make's flags (SANITIZE,
# CC, ...), so nothing is rebuilt with other flags; a sanitizer build needs
# the same -fsanitize for the agents.
CHECK_INSTALL_ENV = CC='$(CC)' PGB_AGENT_CFLAGS='$(if $(SANITIZE),-fsanitize=$(SANITIZE))'
check-install: all
	$(CHECK_INSTALL_ENV) PGB_MAKE='$(MAKE)' sh tools/check-install.sh

# Every code block of README.md and docs/*.md as written: C compiles, shell
# parses with real flags, the README's walk-through by hand runs.
check-docs: all
	$(CHECK_INSTALL_ENV) sh tools/check-docs.sh

unit: $(UNIT_BIN)
	./$(UNIT_BIN)

# The npm package in client/node: its dependencies from the npm registry as
# package-lock.json pins them, then the N-API addon, built by npm's own
# node-gyp against the installed node's headers and linked with
# libpgbroker.a. A sanitizer build is not loadable into node: test-node
# says so and skips.
NODE_DIR   := client/node
NODE_ADDON := $(NODE_DIR)/build/Release/pgbroker.node
.PHONY: node test-node bench-node test-libpq
# A libpq program of our own, linked with the system's libpq (-lpq):
# tests/libpq/run.sh compares its output direct and through the drop-in.
LIBPQ_API := tests/libpq/api
$(LIBPQ_API): tests/libpq/api.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# pgbench, psql and psycopg2, unmodified, through client/libpq/libpq.so.5
# (tests/libpq/run.sh [SECTION...]).
test-libpq: all $(LIBPQ_API)
	sh tools/run-integ.sh tests/libpq/run.sh

node: $(NODE_ADDON)

$(NODE_DIR)/node_modules/.stamp: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@sh tools/deps.sh
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

$(NODE_ADDON): $(NODE_DIR)/node_modules/.stamp $(NODE_DIR)/binding.gyp $(NODE_DIR)/src/addon.cc \
		client/libpgbroker.a client/pgbroker.h
	cd $(NODE_DIR) && node scripts/build.js >build.log 2>&1 || { cat build.log; exit 1; }

# Node agents side by side (client/node/bench): pgbroker's package, pg with a
# pg.Pool per process, pg through PgBouncer; for 1, 50 and 200 processes
# (PGB_NODE_BENCH_AGENTS), writes client/node/bench/results.md.
bench-node: all
	$(MAKE) node
	@sh tools/deps.sh --bench
	PGB_TEST_TIMEOUT=3600 sh tools/run-integ.sh $(NODE_DIR)/bench/run.sh

test-node: all
ifdef SANITIZE
	@echo "test-node: skipped under SANITIZE (node cannot load a sanitized libpgbroker)"
else
	$(MAKE) node
	sh tools/run-integ.sh $(NODE_DIR)/test/run.sh
endif

demo: deps
	$(MAKE) all
	sh tools/demo.sh

# poolbench --compare (direct, pgbouncer, broker) on a throwaway PostgreSQL;
# writes bench/results.md and bench/results.svg. Then pgbench itself, direct,
# through PgBouncer and through the drop-in libpq (tools/pgbench-bench.sh):
# bench/pgbench.md.
bench:
	@sh tools/deps.sh --bench
	$(MAKE) all
	sh tools/bench.sh
	PGB_TEST_TIMEOUT=1800 sh tools/run-integ.sh tools/pgbench-bench.sh

# libFuzzer on the request decoder, the ring and the channel's framing
# (tests/fuzz/fuzz_req.c), built
# by clang into build-fuzz/ (never mixed with the gcc objects), seeded with
# valid encodings, run for FUZZ_SECONDS. `make soak`: SOAK_SECONDS of mixed
# load with agents killed at random (tools/soak.sh), not part of `make test`.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -D_GNU_SOURCE -Icommon $(CFLAGS_WARN) \
	-fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_DEPS    := common/proto.c common/proto.h common/ring.c common/ring.h common/chan.c \
	common/chan.h tests/fuzz/fuzz_req.c
FUZZ_OBJ     := $(FUZZ_DIR)/obj/proto.o $(FUZZ_DIR)/obj/ring.o $(FUZZ_DIR)/obj/chan.o
.PHONY: fuzz soak
fuzz:
	@sh tools/deps.sh --fuzz
	$(Q)mkdir -p $(FUZZ_DIR)/obj $(FUZZ_DIR)/seeds $(FUZZ_DIR)/corpus
	$(Q)$(MAKE) --no-print-directory $(FUZZ_DIR)/fuzz_req $(FUZZ_DIR)/gen_seeds
	$(Q)./$(FUZZ_DIR)/gen_seeds $(FUZZ_DIR)/seeds
	./$(FUZZ_DIR)/fuzz_req -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds

$(FUZZ_DIR)/obj/%.o: common/%.c common/proto.h common/ring.h common/chan.h
	@mkdir -p $(FUZZ_DIR)/obj
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

$(FUZZ_DIR)/fuzz_req: $(FUZZ_DEPS) $(FUZZ_OBJ)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ \
		tests/fuzz/fuzz_req.c $(FUZZ_OBJ)

$(FUZZ_DIR)/gen_seeds: $(FUZZ_DEPS) $(FUZZ_OBJ)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_SEED_MAIN -fsanitize=address,undefined -o $@ \
		tests/fuzz/fuzz_req.c $(FUZZ_OBJ)

soak:
	@sh tools/deps.sh
	$(MAKE) all tools/soak
	sh tools/soak.sh

tools/soak: tools/soak.o client/libpgbroker.a $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# `make install PREFIX=/usr DESTDIR=/tmp/pkg`; each directory can also be
# set on its own. The .pc file, the unit and the man pages are filled in
# from their templates on the way.
BINDIR       = $(PREFIX)/bin
LIBDIR       = $(PREFIX)/lib
INCLUDEDIR   = $(PREFIX)/include
MANDIR       = $(PREFIX)/share/man
DOCDIR       = $(PREFIX)/share/doc/pgbroker
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
UNITDIR      = $(PREFIX)/lib/systemd/system
SYSUSERSDIR  = $(PREFIX)/lib/sysusers.d
SERVICE_TYPE = $(if $(filter 1,$(HAVE_SYSTEMD)),notify,simple)
# The directories the dynamic linker searches (ld.so.conf, the trusted ones).
# A library installed there is found through ldconfig's cache (install runs
# ldconfig when DESTDIR is empty); anywhere else the .pc file gives agents an
# rpath, so that an agent built with pkg-config finds the library at run time.
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
LDSO_DIRS := $(shell /sbin/ldconfig -v -N 2>/dev/null | sed -n 's|^\(/[^:]*\):.*|\1|p') \
	/lib /usr/lib /lib64 /usr/lib64 $(if $(MULTIARCH),/lib/$(MULTIARCH) /usr/lib/$(MULTIARCH))
SYSTEM_LIBDIR = $(filter $(patsubst %/,%,$(LIBDIR)),$(LDSO_DIRS))
PC_RPATH = $(if $(SYSTEM_LIBDIR),,-Wl,-rpath,$${libdir})
RUN_LDCONFIG = $(and $(SYSTEM_LIBDIR),$(if $(DESTDIR),,1))
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
	-e 's|@RPATH@|$(PC_RPATH)|g' \
	-e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	-e 's|@DOCDIR@|$(DOCDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	-e 's|@SERVICE_TYPE@|$(SERVICE_TYPE)|g'
MAN_PAGES := man/pgbroker.8 man/poolstat.1 man/poolbench.1 man/libpgbroker.3
man_path = $(MANDIR)/man$(subst .,,$(suffix $(1)))/$(notdir $(1))
# Every path install creates below $(DESTDIR); uninstall removes exactly these.
# The drop-in libpq.so.5 goes into a directory of its own, never over the
# system's libpq: programs take it with LD_LIBRARY_PATH or LD_PRELOAD.
LIBPQ_DIR    = $(LIBDIR)/pgbroker
INSTALLED = $(addprefix $(BINDIR)/,pgbroker poolstat poolbench) \
	$(addprefix $(LIBDIR)/,libpgbroker.a $(SOFILE) $(SONAME) libpgbroker.so) \
	$(LIBPQ_DIR)/libpq.so.5 \
	$(INCLUDEDIR)/pgbroker.h $(PKGCONFIGDIR)/libpgbroker.pc \
	$(foreach m,$(MAN_PAGES),$(call man_path,$(m))) \
	$(DOCDIR)/pgbroker.conf.example $(UNITDIR)/pgbroker.service \
	$(SYSUSERSDIR)/pgbroker.conf

# $(call install_file,MODE,FROM,TO), $(call install_subst,FROM,TO): one file
# (the second through $(SUBST)), one quiet line; TO is below $(DESTDIR).
install_file = $(Q)$(if $(Q),echo "  INSTALL $(DESTDIR)$(3)" && )install -m $(1) $(2) \
	"$(DESTDIR)$(3)"
install_subst = $(Q)$(if $(Q),echo "  INSTALL $(DESTDIR)$(2)" && )$(SUBST) $(1) \
	>"$(DESTDIR)$(2)" && chmod 644 "$(DESTDIR)$(2)"
define install_man
$(call install_subst,$(1),$(call man_path,$(1)))

endef

install: all
	$(Q)for d in $(sort $(dir $(INSTALLED))); do install -d "$(DESTDIR)$$d" || exit 1; done
	$(call install_file,755,broker/pgbroker,$(BINDIR)/pgbroker)
	$(call install_file,755,tools/poolstat,$(BINDIR)/poolstat)
	$(call install_file,755,tools/poolbench,$(BINDIR)/poolbench)
	$(call install_file,644,client/libpgbroker.a,$(LIBDIR)/libpgbroker.a)
	$(call install_file,755,client/libpgbroker.so,$(LIBDIR)/$(SOFILE))
	$(Q)ln -sf $(SOFILE) "$(DESTDIR)$(LIBDIR)/$(SONAME)"
	$(Q)ln -sf $(SONAME) "$(DESTDIR)$(LIBDIR)/libpgbroker.so"
	$(call install_file,755,$(LIBPQ_SO),$(LIBPQ_DIR)/libpq.so.5)
	$(call install_file,644,client/pgbroker.h,$(INCLUDEDIR)/pgbroker.h)
	$(call install_subst,client/libpgbroker.pc.in,$(PKGCONFIGDIR)/libpgbroker.pc)
	$(foreach m,$(MAN_PAGES),$(call install_man,$(m)))
	$(call install_file,644,etc/pgbroker.conf.example,$(DOCDIR)/pgbroker.conf.example)
	$(call install_subst,etc/pgbroker.service.in,$(UNITDIR)/pgbroker.service)
	$(call install_file,644,etc/pgbroker.sysusers,$(SYSUSERSDIR)/pgbroker.conf)
	$(Q)$(if $(RUN_LDCONFIG),$(if $(Q),echo "  LDCONFIG $(LIBDIR)" && )(ldconfig || \
		echo "make install: ldconfig failed: run it as root so that $(SONAME) is found"))

# Directories stay (other packages may use them), except our own doc
# directory once it is empty.
uninstall:
	$(Q)for f in $(INSTALLED); do \
		$(if $(Q),echo "  RM      $(DESTDIR)$$f";) rm -f "$(DESTDIR)$$f" || exit 1; \
	done
	$(Q)if [ -d "$(DESTDIR)$(DOCDIR)" ]; then rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null || :; fi
	$(Q)if [ -d "$(DESTDIR)$(LIBPQ_DIR)" ]; then rmdir "$(DESTDIR)$(LIBPQ_DIR)" 2>/dev/null || :; fi
	$(Q)$(if $(RUN_LDCONFIG),ldconfig || :)

clean:
	rm -f $(ALL) $(UNIT_BIN) $(LIBPQ_API) client/libpq/*.o client/libpq/*.d $(INTEG_BIN) */*.o */*/*.o */*.d */*/*.d tools/soak tools/no_uring
	rm -rf $(NODE_DIR)/build $(NODE_DIR)/build.log

-include $(wildcard */*.d */*/*.d)
