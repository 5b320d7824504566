# pillarbox: plain GNU make. Programs and objects are built in place (bin/, lib/).
# Every bin/*.c is one program; every lib/*.c goes into lib/libpillarbox.a.

PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
SHAREDIR  ?= $(PREFIX)/share/pillarbox
MAILROOT_DEFAULT ?= /var/lib/pillarbox
PYTHON    ?= /usr/bin/python3

CC        ?= cc
CFLAGS    ?= -O2 -g
STDFLAGS  := -std=c99 -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700 -Wall -Wextra -Werror \
             -Ilib -DMAILROOT_DEFAULT='"$(MAILROOT_DEFAULT)"' -DPILLARBOX_BINDIR='"$(BINDIR)"' \
             -DPILLARBOX_SHAREDIR='"$(SHAREDIR)"'
ifeq ($(SANITIZE),1)
STDFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN     := -fsanitize=address,undefined
endif
# tinycdb before skalibs: both export cdb_* symbols (see doc/hacking.md).
LIBS      := lib/libpillarbox.a -l:libcdb.a -l:libbearssl.a -l:libskarnet.a -lcrypt -lresolv

LIB_SRC   := $(sort $(wildcard lib/*.c))
LIB_OBJ   := $(LIB_SRC:.c=.o)
PROG_SRC  := $(sort $(wildcard bin/*.c))
PROGS     := $(PROG_SRC:.c=)
MANPAGES  := $(sort $(wildcard doc/*.[18]))

.PHONY: all check bench fuzz run install clean deps deps-test FORCE

all: $(PROGS)

# Rebuild everything when the flags change (SANITIZE=1 and back).
.build-flags: FORCE
	@echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDSAN)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDSAN)' > $@
FORCE:

lib/%.o: lib/%.c lib/*.h .build-flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

lib/libpillarbox.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

bin/%.o: bin/%.c lib/*.h .build-flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

bin/%: bin/%.o lib/libpillarbox.a
	$(CC) $(LDFLAGS) $(LDSAN) -o $@ $< $(LIBS)

deps:
	@sh package/ensure-deps build run

deps-test:
	@sh package/ensure-deps build run test

check: deps-test
	$(MAKE) all
	cd tests && SANITIZE=$(SANITIZE) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) .

bench: deps-test all
	sh bench/run-all

fuzz: all
	$(MAKE) -C fuzz

run: deps all
	sh services/make-run

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SHAREDIR)
	for p in $(PROGS); do install -m 755 $$p $(DESTDIR)$(BINDIR)/; done
	for m in $(MANPAGES); do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	cp -R services $(DESTDIR)$(SHAREDIR)/

clean:
	rm -f bin/*.o lib/*.o lib/libpillarbox.a $(PROGS) .build-flags tests/unit/*.bin
	-$(MAKE) -C fuzz clean

.SECONDARY:
