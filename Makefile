# koophone — build, test, demo, bench. `make help` lists the targets.
LUA        ?= lua5.4
LUA_INC    ?= $(shell pkg-config --cflags-only-I $(LUA) 2>/dev/null || echo -I/usr/include/$(LUA))
CURL_CFLAGS ?= $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS  ?= $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
CRYPTO_CFLAGS ?= $(shell pkg-config --cflags libcrypto 2>/dev/null)
CRYPTO_LIBS ?= $(shell pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)
CC         ?= cc
OPT        ?= -O2 -g
CFLAGS_ALL  = $(OPT) -fPIC -pthread -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow \
              -Wstrict-prototypes -Wmissing-prototypes $(LUA_INC) $(CURL_CFLAGS) $(CRYPTO_CFLAGS) $(CFLAGS)
BUILD      ?= build/$(LUA)
SO          = $(BUILD)/koophone/core.so
SRC         = $(wildcard src/*.c)
BUSTED     ?= $(LUA) /usr/bin/busted
ENV         = LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="$(BUILD)/?.so;;"

.PHONY: tidy all deps test test-only luajit-core matrix fuzz soak demo bench lint asan valgrind rock-check rock-install docs \
        clean help

all: $(SO)

$(SO): $(SRC) src/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(SRC) $(CURL_LIBS) $(CRYPTO_LIBS) $(LDFLAGS)

deps:
	@bash .ci/deps

test: deps all luajit-core
	$(ENV) $(BUSTED) $(BUSTED_FLAGS) spec

# The other builds the specs load into child processes: LuaJIT for the
# OpenResty spec (nginx), 5.1 and 5.3 for the cqueues and luv hosts.
luajit-core:
	@if [ -f /usr/include/luajit-2.1/lua.h ]; then \
	  $(MAKE) --no-print-directory LUA=luajit LUA_INC=-I/usr/include/luajit-2.1 BUILD=build/luajit all; fi
	@for v in lua5.1 lua5.3; do if [ -f /usr/include/$$v/lua.h ]; then \
	  $(MAKE) --no-print-directory LUA=$$v BUILD=build/$$v all || exit 1; fi; done

# The spec suite under Lua 5.1, 5.3 and LuaJIT (make test covers 5.4).
# (the emulator's own spec is left out: it tests nginx, not the Lua version)
# Left out of the matrix and the sanitizer run (CI time): specs of the
# emulator itself (they test nginx, not a Lua version or our C), and the
# long Lua-level runs that make test covers once (fault matrix, both reply
# shapes, the rate-limit rollout). The hosts and OpenResty specs already
# start 5.1/5.3/LuaJIT children from make test.
ONCE_SPECS = $(wildcard spec/emulator*_spec.lua) spec/fault_matrix_spec.lua spec/sdk_shapes_spec.lua \
             spec/ratelimit_spec.lua
MATRIX_SPECS ?= $(filter-out $(ONCE_SPECS) spec/hosts_spec.lua spec/openresty_spec.lua,$(wildcard spec/*_spec.lua))
ASAN_SPECS ?= $(filter-out $(ONCE_SPECS),$(wildcard spec/*_spec.lua))
matrix: deps
	SPECS="$(MATRIX_SPECS)" BUSTED_ARGS="$(BUSTED_FLAGS)" bash .ci/matrix lua5.1 lua5.3 luajit

# clang-tidy's static analyzer and bugprone checks over the C core;
# any finding fails.
TIDY_CHECKS = -*,clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-bugprone-narrowing-conversions,-bugprone-implicit-widening-of-multiplication-result
tidy:
	clang-tidy --quiet --checks='$(TIDY_CHECKS)' --warnings-as-errors='*' $(SRC) -- \
	  -std=c99 -D_POSIX_C_SOURCE=200809L $(LUA_INC) $(CURL_CFLAGS)

lint: deps
	luacheck lua bin/koophone spec examples bench emulator
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --suppress=missingIncludeSystem -I src src

demo: deps all
	LUA=$(LUA) bash examples/demo.sh

bench: deps all luajit-core
	$(ENV) $(LUA) bench/run.lua

# The spec suite against a build with AddressSanitizer and UBSan.
asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all" all
	preload="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)"; \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	KOOPHONE_CHILD_PRELOAD="$$preload" LD_PRELOAD="$$preload" $(MAKE) BUILD=build/asan SPECS="$(ASAN_SPECS)" test-only

# The specs that drive the C core hardest, under valgrind's memcheck; any
# error or definite leak fails.
VALGRIND_SPECS ?= spec/core_spec.lua spec/waker_spec.lua spec/client_spec.lua spec/retry_spec.lua spec/sched_spec.lua spec/loop_spec.lua spec/batch_spec.lua spec/engine_spec.lua spec/promises_spec.lua spec/conventions_spec.lua
valgrind: all
	$(ENV) valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --trace-children=no $(BUSTED) $(BUSTED_FLAGS) $(VALGRIND_SPECS)

# `luarocks make` into a fresh tree, then the installed commands and a batch
# from outside the checkout (see .ci/rock-check and docs/luarocks.md).
rock-check: deps
	bash .ci/rock-check
	ROCK_LUA_VERSION=default bash .ci/rock-check

# The rockspec's one step (luarocks passes PREFIX, LUADIR, LIBDIR, BINDIR: the
# rock's own directory, plus CFLAGS, LIBFLAG, LUA_INCDIR and the CURL_ and
# CRYPTO_ INCDIR and LIBDIR): the core is compiled straight into LIBDIR, so the checkout gets
# no object file and no koophone/core.so; the emulator's template, handlers and
# scenarios go to PREFIX/emulator, where the installed koophone-emulator looks.
rock-install: LUA_INC = -I$(LUA_INCDIR)
rock-install: CURL_CFLAGS = -I$(CURL_INCDIR)
rock-install: CURL_LIBS = -L$(CURL_LIBDIR) -lcurl
rock-install: CRYPTO_CFLAGS = -I$(CRYPTO_INCDIR)
rock-install: CRYPTO_LIBS = -L$(CRYPTO_LIBDIR) -lcrypto
rock-install:
	@test -n "$(PREFIX)" -a -n "$(LIBDIR)" -a -n "$(LUADIR)" -a -n "$(BINDIR)" -a -n "$(LUA_INCDIR)" || \
	  { echo "make rock-install is the step of luarocks make: run luarocks make" >&2; exit 2; }
	mkdir -p "$(LIBDIR)/koophone" "$(BINDIR)" "$(PREFIX)/emulator/lua/koophone_emulator" "$(PREFIX)/emulator/scenarios"
	$(CC) $(CFLAGS_ALL) $(LIBFLAG) -o "$(LIBDIR)/koophone/core.so" $(SRC) $(CURL_LIBS) $(CRYPTO_LIBS) $(LDFLAGS)
	cd lua && for f in $$(find koophone -name '*.lua'); do install -D -m 644 "$$f" "$(LUADIR)/$$f" || exit 1; done
	install -m 755 bin/koophone "$(BINDIR)/koophone"
	sed 's|^EMULATOR_DIR=.*|EMULATOR_DIR=$${KOOPHONE_EMULATOR_DIR:-$(PREFIX)/emulator}|' bin/koophone-emulator \
	  >"$(BINDIR)/koophone-emulator"
	chmod 755 "$(BINDIR)/koophone-emulator"
	install -m 644 emulator/nginx.conf.in "$(PREFIX)/emulator/"
	install -m 644 emulator/lua/koophone_emulator/*.lua "$(PREFIX)/emulator/lua/koophone_emulator/"
	install -m 644 emulator/scenarios/*.json "$(PREFIX)/emulator/scenarios/"

# The API reference from the doc comments (LDoc; config.ld), warnings fatal.
# Under Lua 5.1: Debian's markdown module (lua-markdown) exists only for it,
# and without it LDoc quietly falls back to plain text.
LDOC ?= lua5.1 /usr/bin/ldoc
docs:
	rm -rf build/docs
	@mkdir -p build
	@rc=0; $(LDOC) --fatalwarnings . >build/docs.log 2>&1 || rc=$$?; cat build/docs.log; \
	if grep -q "falling back" build/docs.log; then echo "make docs: no markdown (apt-get install lua-markdown)" >&2; rc=1; fi; \
	exit $$rc
	@echo "API reference: build/docs/index.html"

# The response path under ~1,000,000 generated bodies (see fuzz/run.sh).
FUZZ_ARG ?= 60
fuzz: all
	$(ENV) bash fuzz/run.sh $(FUZZ_ARG)

# About 10 minutes of batches with injected faults (SOAK_SECONDS to change).
soak: all
	$(ENV) $(LUA) bench/soak.lua
	KOOPHONE_MATRIX_N=1000 $(ENV) $(BUSTED) spec/fault_matrix_spec.lua

SPECS ?= spec
test-only:
	$(ENV) $(BUSTED) $(BUSTED_FLAGS) $(SPECS)

clean:
	rm -rf build

help:
	@echo "make          build koophone.core for $(LUA) into $(BUILD)"
	@echo "make test     install missing Debian packages, build, run the specs"
	@echo "make demo     build, start the emulator, run a rollout on 1,000 emulated phones"
	@echo "make bench    benchmarks beside curl (see bench/)"
	@echo "make lint     luacheck and cppcheck"
	@echo "make matrix   the specs under Lua 5.1, 5.3 and LuaJIT"
	@echo "make fuzz     the response path under generated bodies (FUZZ_ARG seconds, default 60)"
	@echo "make soak     ~10 minutes of batches with faults: RSS, fds, connections"
	@echo "make asan / make valgrind   the specs under sanitizers / memcheck"
	@echo "make docs     the API reference (LDoc) into build/docs/index.html"
	@echo "make rock-check   luarocks make into a fresh tree, then the installed commands and a batch"
