# pillarbox: plain GNU make. Sources stay in bin/ and lib/; everything built goes into build/:
#   build/lib/NAME.o       one object per lib/NAME.c
#   build/libpillarbox.a   every lib object
#   build/obj/PROG.o       one object per bin/PROG.c
#   build/bin/PROG         one program per bin/PROG.c (tests put build/bin on PATH)
#   build/tests/, build/fuzz/   unit-test and fuzz executables
# Headers of lib/ are included as "name.h" (-iquote lib), so lib/spawn.h does not hide <spawn.h>.
# `make WERROR=` builds without -Werror (packagers with newer compilers); `make check` always
# builds with it. `make SANITIZE=1` builds with ASan and UBSan.

PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
SHAREDIR  ?= $(PREFIX)/share/pillarbox
MAILROOT_DEFAULT ?= /var/lib/pillarbox
PYTHON    ?= /usr/bin/python3
B         := build

CC        ?= cc
CFLAGS    ?= -O2 -g
WERROR    ?= -Werror
STDFLAGS  := -std=c99 -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700 -Wall -Wextra $(WERROR) \
             -iquote lib -DMAILROOT_DEFAULT='"$(MAILROOT_DEFAULT)"' -DPILLARBOX_BINDIR='"$(BINDIR)"' \
             -DPILLARBOX_SHAREDIR='"$(SHAREDIR)"'
ifeq ($(SANITIZE),1)
STDFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN     := -fsanitize=address,undefined
endif
# tinycdb before skalibs: both export cdb_* symbols (see doc/hacking.md).
LIBS      := $(B)/libpillarbox.a -l:libcdb.a -l:libbearssl.a -l:libskarnet.a -lcrypt -lresolv

LIB_SRC   := $(sort $(wildcard lib/*.c))
LIB_OBJ   := $(patsubst lib/%.c,$(B)/lib/%.o,$(LIB_SRC))
PROG_SRC  := $(sort $(wildcard bin/*.c))
PROGS     := $(patsubst bin/%.c,$(B)/bin/%,$(PROG_SRC))
MANPAGES  := $(sort $(wildcard doc/*.[18]))

.PHONY: all check bench fuzz run install clean deps deps-test FORCE

all: $(PROGS)

# Rebuild everything when the flags change (SANITIZE=1 and back, WERROR=).
$(B)/.flags: FORCE
	@mkdir -p $(B)/lib $(B)/obj $(B)/bin
	@echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDFLAGS) $(LDSAN)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDFLAGS) $(LDSAN)' > $@
FORCE:

$(B)/lib/%.o: lib/%.c lib/*.h $(B)/.flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

$(B)/libpillarbox.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/obj/%.o: bin/%.c lib/*.h $(B)/.flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

$(B)/bin/%: $(B)/obj/%.o $(B)/libpillarbox.a
	$(CC) $(LDFLAGS) $(LDSAN) -o $@ $< $(LIBS)

deps:
	@sh package/ensure-deps build run

deps-test:
	@sh package/ensure-deps build run test

check: deps-test
	$(MAKE) all WERROR=-Werror
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
	rm -rf $(B)
	-$(MAKE) -C fuzz clean

.SECONDARY:
