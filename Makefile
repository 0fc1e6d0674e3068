# herd: the Hurd's multi-server idea on stock Linux.
#   make build     every program in cmd/ into ./bin
#   make test      build, vet, all tests, the net server under the race
#                  detector, and a bounded run of every fuzzer
#   make bench     benchmarks against native and the peers (prints tables)
#   make demo      run the scripted demos on this machine
#   make install   copy ./bin to $(PREFIX)/bin
#   make iso       build examples/iso/out/herd-live.iso
#   make iso-test  boot the ISO in qemu and check every demo passes

GO       ?= go
PREFIX   ?= /usr/local
FUZZTIME ?= 100000x
PROGRAMS := $(notdir $(wildcard cmd/*))

.PHONY: all build test vet unit race fuzz bench demo install iso iso-test clean

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/... ./examples/...

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 40m ./...

# The net server's connection churn under the race detector: a
# connection's endpoint is shared by gVisor's TCP processor and our
# splice, and a race there crashed herd-net once under load.
race:
	$(GO) test -race -count=1 -timeout 10m -run 'TestNoLeaks|TestForward' ./servers/net/

fuzz:
	bash .ci/fuzz.sh $(FUZZTIME)

test: build vet unit race fuzz

bench: build
	bash bench/run.sh

demo: build
	PATH=$(CURDIR)/bin:$$PATH; for d in examples/demos/*.sh; do sh $$d || exit 1; done

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bin/* $(DESTDIR)$(PREFIX)/bin/

iso:
	bash examples/iso/build.sh

iso-test:
	bash examples/iso/test.sh

clean:
	rm -rf bin examples/iso/out
