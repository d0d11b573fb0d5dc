# faiss-proxy - the habits of a C user, over CMake.
#
#   make        build everything into build/ (installs missing Debian packages first)
#   make run    build, then run the server with the embedded defaults
#   make test   every test: C unit tests, integration tests against the real
#               server, then all of them again under ASan+UBSan and under TSan
#   make bench  the benchmark suite, full sizes (about 15 minutes): table and
#               plot in bench/results/ (bench/README.md)
#   make bench-short  the same code paths at sizes that take seconds (part of
#               make test, so the suite cannot rot)
#   make faiss-avx2   build FAISS 1.7.3 for AVX2 from Debian's source package
#               into FAISS_AVX2_PREFIX, ~/.cache/faiss-proxy (scripts/faiss-avx2.sh)
#   make build-avx2   the project against it, in build-avx2/: the same as
#               make build FAISS_AVX2=1 (bench/run.sh then measures both builds;
#               docs/faiss-avx2.md)
#   make test-tsan  C unit tests and integration tests under ThreadSanitizer
#               (build-tsan/)
#   make fuzz   run the libFuzzer target of the decoder for FUZZ_SECONDS
#   make fuzz-short  the same for FUZZ_SHORT_SECONDS (part of make test), from
#               the seed corpus in tests/fuzz/corpus (scripts/fuzz-corpus.py
#               writes it); inputs found go to a scratch copy, never the repo
#   make faiss-suite  FAISS 1.7.3's own Python tests, with real faiss and through
#               the drop-in (python/faissproxy) against a server of their own:
#               rewrites docs/faiss-suite.md (scripts/faiss-suite.py, docs/python.md)
#   make faiss-suite-short  a few of them that pass through the server (part of
#               make test): fails when one that passes with faiss no longer does
#               through the server, or no longer sends it a request
#   make cluster  a cluster on this machine: 3 nats-server + 3 nodes on loopback,
#               data in ./cluster-data; prints the endpoints, Ctrl-C stops all
#               (scripts/cluster.sh, docs/cluster.md)
#   make format clang-format every C/C++ source in place

BUILD      ?= $(if $(AVX2_ON),build-avx2,build)
SAN_BUILD  ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON     ?= /usr/bin/python3
# FAISS_AVX2=1: build against FAISS compiled for AVX2 (make faiss-avx2, run
# first if needed) instead of Debian's generic one, by default in build-avx2/.
# Off, nothing changes: a build folder keeps the FAISS it was configured with.
FAISS_AVX2 ?= 0
FAISS_AVX2_PREFIX ?= $(HOME)/.cache/faiss-proxy/faiss-1.7.3-avx2
AVX2_ON    := $(filter 1,$(FAISS_AVX2))
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 25
FUZZ_CORPUS := tests/fuzz/corpus
SOURCES    := $(shell git ls-files '*.c' '*.h' '*.cpp' 2>/dev/null)

TSAN_BUILD ?= build-tsan
# FAISS, OpenBLAS and libgomp are not built for ThreadSanitizer: tests/tsan.supp
# silences reports inside them, and the TSan run is pinned to one CPU so that
# FAISS (which sizes its OpenMP teams by the CPUs it may use) runs every call
# on the calling thread: libgomp's pool, whose barriers TSan cannot see, then
# never starts, while our own threads (workers, batcher, store) all still run.
# The integration tests run in TEST_JOBS pytest workers (pytest-xdist); under
# TSan each worker pins itself, and so its servers, to a CPU of its own
# (FPX_ONE_CPU=1, tests/integration/conftest.py).
TSAN_CPU   := $(shell $(PYTHON) -c 'import os; print(min(os.sched_getaffinity(0)))' 2>/dev/null || echo 0)
TSAN_OPTS  := TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan.supp:halt_on_error=0:second_deadlock_stack=1
TSAN_ENV   := $(TSAN_OPTS) taskset -c $(TSAN_CPU)
# Integration tests run this many at a time: most of a test's time is spent
# waiting on servers, so two workers keep two cores busy. 1 runs them in order.
TEST_JOBS  ?= 2
PYTEST     := $(PYTHON) -m pytest -q -p no:cacheprovider $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS)) --durations=15

SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all deps build run cluster install test test-release test-sanitize test-tsan bench bench-short faiss-avx2 build-avx2 fuzz fuzz-build fuzz-short faiss-suite faiss-suite-short format clean

all: build

deps:
	@./scripts/deps.sh

build: deps $(if $(AVX2_ON),faiss-avx2)
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    $(if $(AVX2_ON),-DFPX_FAISS_PREFIX=$(FAISS_AVX2_PREFIX)) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/faiss-proxy-server

cluster: build
	BUILD=$(BUILD) ./scripts/cluster.sh

# make install [PREFIX=/usr/local] [DESTDIR=...]: see README.md, "Installing".
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

test: test-release test-sanitize test-tsan fuzz-short bench-short faiss-suite-short
	@echo "make test: all suites passed (release, ASan+UBSan, TSan), the decoder fuzzed (short), benchmarks ran (short), FAISS's own tests passed through the server (short)"

test-release: build
	@./scripts/deps.sh --with-test
	cd $(BUILD) && ctest --output-on-failure
	FPX_BUILD_DIR=$(CURDIR)/$(BUILD) $(PYTEST) tests/integration

test-sanitize: deps
	@./scripts/deps.sh --with-test
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=sanitize >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)
	cd $(SAN_BUILD) && $(SAN_ENV) ctest --output-on-failure
	$(SAN_ENV) FPX_BUILD_DIR=$(CURDIR)/$(SAN_BUILD) FPX_SANITIZED=1 \
	    $(PYTEST) tests/integration

test-tsan: deps
	@./scripts/deps.sh --with-test
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=tsan >/dev/null
	@cmake --build $(TSAN_BUILD) -j$(JOBS)
	cd $(TSAN_BUILD) && $(TSAN_ENV) ctest --output-on-failure
	FPX_BUILD_DIR=$(CURDIR)/$(TSAN_BUILD) FPX_SANITIZED=1 FPX_ONE_CPU=1 \
	    $(TSAN_OPTS) $(PYTEST) tests/integration

bench: build
	./bench/run.sh

bench-short: build
	./bench/run.sh --short

# FAISS's sources come from Debian's source package (scripts/faiss-source.sh),
# cached in ~/.cache/faiss-proxy/src. FAISS_SUITE_FILES: files of it to run
# (tests/test_io.py tutorial/python/1-Flat.py ...; empty: all of tests/test_*.py
# and tutorials 1-3); FAISS_SUITE_TIMEOUT: seconds each run of one file may take.
FAISS_SUITE_FILES ?=
FAISS_SUITE_TIMEOUT ?= 450
FAISS_SUITE_OUT ?= docs/faiss-suite.md
# Chosen among the tests that pass through the server: a few seconds in all.
# (TestBinaryFlat::test_empty_flat sets use_heap, and IDRemap::test_id_remap_ivf builds an
# L2 IVF over an inner-product quantizer: neither is served, both raise; docs/faiss-suite.md.)
FAISS_SUITE_SHORT ?= tests/test_index.py::TestIndexFlat tests/test_contrib.py::TestExhaustiveSearch \
    tests/test_index_binary.py::TestBinaryFlat::test_flat \
    tests/test_index_binary.py::TestBinaryFlat::test_range_search \
    tests/test_meta_index.py::IDRemap::test_id_remap_idmap tutorial/python/2-IVFFlat.py

faiss-suite: build
	@./scripts/deps.sh --with-faiss-suite
	$(PYTHON) scripts/faiss-suite.py --build $(BUILD) --timeout $(FAISS_SUITE_TIMEOUT) \
	    --out $(FAISS_SUITE_OUT) $(if $(strip $(FAISS_SUITE_FILES)),--files $(FAISS_SUITE_FILES))

faiss-suite-short: build
	@./scripts/deps.sh --with-faiss-suite
	$(PYTHON) scripts/faiss-suite.py --build $(BUILD) --timeout 120 --check \
	    --out $(BUILD)/faiss-suite-short.md --files $(FAISS_SUITE_SHORT)

faiss-avx2:
	FPX_FAISS_AVX2_PREFIX=$(FAISS_AVX2_PREFIX) ./scripts/faiss-avx2.sh

build-avx2:
	@$(MAKE) --no-print-directory build BUILD=build-avx2 FAISS_AVX2=1

fuzz-build:
	@./scripts/deps.sh --with-clang
	@cmake -S . -B build-fuzz -DFPX_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
	@cmake --build build-fuzz --target fuzz_proto -j$(JOBS)

# libFuzzer writes new inputs into its first corpus folder only: a scratch one
# (kept across long runs, fresh for every short run); the repo's seeds are read.
fuzz: fuzz-build
	mkdir -p build-fuzz/corpus
	./build-fuzz/fuzz_proto -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build-fuzz/ \
	    build-fuzz/corpus $(FUZZ_CORPUS)

fuzz-short: fuzz-build
	rm -rf build-fuzz/corpus-short && mkdir -p build-fuzz/corpus-short
	./build-fuzz/fuzz_proto -max_total_time=$(FUZZ_SHORT_SECONDS) -artifact_prefix=build-fuzz/ \
	    -print_final_stats=1 build-fuzz/corpus-short $(FUZZ_CORPUS)

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(TSAN_BUILD) build-fuzz build-avx2
