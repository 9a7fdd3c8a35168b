# blockd - top-level entry points.  The real build is meson + ninja:
#   build/        gcc, -O2 -g, -Werror          (the default)
#   build-tsan/   clang-19, -Wthread-safety, ThreadSanitizer (the clang build:
#                 it proves the lock annotations too)
#   build-asan/   AddressSanitizer + UndefinedBehaviorSanitizer

MESON ?= meson
NINJA ?= ninja

.PHONY: all deps build run check fresh-check bench clean

all: build

deps:
	@scripts/install-deps.sh

build/build.ninja:
	$(MESON) setup build

build: deps build/build.ninja
	$(NINJA) -C build

# Start blockd in the foreground on the demo image; Ctrl-C stops it.
run: build
	@scripts/run-demo.sh

# Every test in every build variant; ends with "N passed, N failed".
check: deps
	@scripts/check.sh

# make check and make run inside a fresh minimal Debian 12 root (needs root;
# not part of make check).  Run it whenever a dependency is added.
fresh-check:
	@scripts/fresh-check.sh

bench: build
	@bench/run.sh

clean:
	rm -rf build build-clang build-tsan build-asan
