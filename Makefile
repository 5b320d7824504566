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
LIBEXECDIR ?= $(PREFIX)/libexec/pillarbox
MANDIR    ?= $(PREFIX)/share/man
SHAREDIR  ?= $(PREFIX)/share/pillarbox
DOCDIR    ?= $(PREFIX)/share/doc/pillarbox
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
# The names other software calls (doc/operations.md, "Installing"):
SENDMAIL_PATH   ?= /usr/sbin/sendmail
MAILQ_PATH      ?= /usr/bin/mailq
NEWALIASES_PATH ?= /usr/bin/newaliases
S6_SVSCAN ?= /usr/bin/s6-svscan
MAILROOT_DEFAULT ?= /var/lib/pillarbox
PYTHON    ?= /usr/bin/python3
B         := build

CC        ?= cc
CFLAGS    ?= -O2 -g
WERROR    ?= -Werror
STDFLAGS  := -std=c99 -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700 -Wall -Wextra $(WERROR) \
             -iquote lib -DMAILROOT_DEFAULT='"$(MAILROOT_DEFAULT)"' -DPILLARBOX_BINDIR='"$(LIBEXECDIR)"' \
             -DPILLARBOX_SHAREDIR='"$(SHAREDIR)"'
# STATIC=1 (the default) links every program statically, except one that uses NSS (getpwnam,
# getpwuid, ...: glibc loads NSS modules at run time even in a static program): its static link
# draws glibc's warning and it is linked again dynamically. A static program starts faster and
# its session costs less memory (bench/process_cost.py, doc/performance.md). STATIC=0 links
# everything dynamically; SANITIZE=1 implies it (ASan needs the dynamic loader).
STATIC    ?= 1
ifeq ($(SANITIZE),1)
STDFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN     := -fsanitize=address,undefined
STATIC    := 0
endif
# tinycdb before skalibs: both export cdb_* symbols (see doc/hacking.md).
# zlib (COMPRESS=DEFLATE in imap-maildir) as its archive, like the others: no run-time libz.
LIBS      := $(B)/libpillarbox.a -l:libcdb.a -l:libbearssl.a -l:libskarnet.a -l:libz.a -lcrypt -lresolv

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
	@echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDFLAGS) $(LDSAN) STATIC=$(STATIC)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(STDFLAGS) $(LDFLAGS) $(LDSAN) STATIC=$(STATIC)' > $@
FORCE:

$(B)/lib/%.o: lib/%.c lib/*.h $(B)/.flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

$(B)/libpillarbox.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/obj/%.o: bin/%.c lib/*.h $(B)/.flags
	$(CC) $(CFLAGS) $(STDFLAGS) -c -o $@ $<

# login-wait (what a logged-in session's front and login-handoff become, to wait) is built
# without a C library on the machines bin/login-wait.c knows: some 16 kB of PSS instead of the
# 650 kB of any program with glibc linked in statically. Elsewhere, and under SANITIZE=1, it is
# an ordinary dynamic program.
NOLIBC    := $(filter x86_64 aarch64,$(firstword $(subst -, ,$(shell $(CC) -dumpmachine))))
ifeq ($(SANITIZE),1)
NOLIBC    :=
endif
ifneq ($(NOLIBC),)
$(B)/bin/login-wait: bin/login-wait.c $(B)/.flags
	$(CC) $(CFLAGS) -std=c99 -Wall -Wextra $(WERROR) -DPB_NOLIBC -ffreestanding \
	  -fno-stack-protector -fno-asynchronous-unwind-tables -static -nostdlib -o $@ $<
else
$(B)/bin/login-wait: bin/login-wait.c $(B)/.flags
	$(CC) $(CFLAGS) $(STDFLAGS) $(LDFLAGS) $(LDSAN) -o $@ $<
endif

# The long-lived session programs (imap-maildir, pop3-maildir) are static like the others: a
# session that waits for its client drops its text (lib/pagedrop), which was the reason they
# were linked dynamically, and then costs 25-45 kB less than a dynamic one, alone or four at
# once (no relocated glibc data, no loader pages; doc/performance.md, 2026-12-05 afternoon).

ifeq ($(STATIC),1)
$(B)/bin/%: $(B)/obj/%.o $(B)/libpillarbox.a
	$(CC) $(LDFLAGS) -static -o $@ $< $(LIBS) 2> $@.ld || { cat $@.ld; rm -f $@.ld; exit 1; }
	@if grep -q 'statically linked applications requires' $@.ld; then \
	  echo "$@ uses NSS: linked dynamically"; \
	  echo '$(CC) $(LDFLAGS) -o $@ $< $(LIBS)'; $(CC) $(LDFLAGS) -o $@ $< $(LIBS) || exit 1; \
	else cat $@.ld; fi; rm -f $@.ld
else
$(B)/bin/%: $(B)/obj/%.o $(B)/libpillarbox.a
	$(CC) $(LDFLAGS) $(LDSAN) -o $@ $< $(LIBS)
endif

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

# Every program goes to LIBEXECDIR (so the daemons and the service templates' @BINDIR@ are one
# directory); the commands people type get relative symlinks in BINDIR, and sendmail, mailq
# and newaliases get theirs where other software looks for them. Relative links work from a
# DESTDIR staging tree as well as once installed. The unit boots s6-svscan on MAILROOT_DEFAULT.
USER_CMDS := mail-instance mail-domain mail-user mail-alias mail-lookup mail-expunge \
             queue-list queue-ctl mx-resolve sendmail
LINK      := sh package/install-link "$(DESTDIR)"

install: all
	mkdir -p $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSTEMDDIR)
	for p in $(PROGS); do install -m 755 $$p $(DESTDIR)$(LIBEXECDIR)/; done
	for c in $(USER_CMDS); do if [ -e $(B)/bin/$$c ]; then \
	  $(LINK) $(LIBEXECDIR)/$$c $(BINDIR)/$$c || exit 1; fi; done
	$(LINK) $(LIBEXECDIR)/sendmail $(SENDMAIL_PATH)
	$(LINK) $(LIBEXECDIR)/queue-list $(MAILQ_PATH)
	$(LINK) $(LIBEXECDIR)/mail-alias $(NEWALIASES_PATH)
	for m in $(MANPAGES); do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	rm -rf $(DESTDIR)$(SHAREDIR)/services && cp -R services $(DESTDIR)$(SHAREDIR)/
	install -m 644 doc/*.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|@MAILROOT@|$(MAILROOT_DEFAULT)|g' -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' \
	  -e 's|@S6_SVSCAN@|$(S6_SVSCAN)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	  package/pillarbox.service.in > $(DESTDIR)$(SYSTEMDDIR)/pillarbox.service
	chmod 644 $(DESTDIR)$(SYSTEMDDIR)/pillarbox.service

clean:
	rm -rf $(B)
	-$(MAKE) -C fuzz clean

.SECONDARY:
