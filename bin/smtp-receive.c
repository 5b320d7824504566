/* smtp-receive: the SMTP / ESMTP server for one connection (UCSPI: session on fd 0/1), or
 * for one connection after another as a worker of tcp-pool (lib/tcppool: every per-session
 * state is reset between two sessions, see forget(); the settings, lib/smtpconf, are kept
 * while control/ is unchanged).
 *
 * The session, command by command: the greeting (after the per-address connection cap and
 * the early-talker check), EHLO, AUTH (lib/smtpd, lib/saslserv), STARTTLS (UCSPI-TLS), MAIL, RCPT
 * (recipients checked at once: unknown, relay, quota), DATA / BDAT streamed into the queue
 * through lib/inject (the injection socket in-process, or a qmail-queue chain) while they
 * arrive. The envelope is sent only when the data is complete and valid, so a refused or
 * interrupted message is never committed; the reply comes after the queue's answer.
 * See doc/smtp-receive.8, doc/smtp.md.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <skalibs/bytestr.h>
#include <skalibs/djbunix.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "addr.h"
#include "connlimit.h"
#include "lookup.h"
#include "owner.h"
#include "queue.h"
#include "quotastate.h"
#include "saslserv.h"
#include "smtp.h"
#include "smtpconf.h"
#include "smtpd.h"
#include "smtpmsg.h"
#include "tcppool.h"
#include "ucspitls.h"

char const *PROG = "smtp-receive";
#define USAGE "smtp-receive (no arguments; UCSPI session on fd 0/1)"

/* Configuration (control/, kept by a pool worker while unchanged; the environment) */
static smtpconf cf;
static int strict;           /* a network peer: pipelining is checked */
static stralloc qualified = STRALLOC_ZERO;

/* Session and transaction */
static stralloc helo = STRALLOC_ZERO;
static int seen_helo, esmtp, in_mail;
static smtp_mailparams mailp;
static stralloc sender = STRALLOC_ZERO;
static stralloc rcpts = STRALLOC_ZERO; /* each "T" addr NUL */
static unsigned long nrcpt, njunk, nmessages;
static stralloc line = STRALLOC_ZERO, tmp = STRALLOC_ZERO, targets = STRALLOC_ZERO;

/* TLS and AUTH */
static int ctlfd = -1;       /* SSLCTLFD, or -1: STARTTLS not available */
static int tls;              /* inside TLS */
static unsigned int authfailures;
static stralloc authuser = STRALLOC_ZERO; /* the authenticated account, empty if none */
static stralloc tlsproto = STRALLOC_ZERO, tlscipher = STRALLOC_ZERO;

static connlimit slot = CONNLIMIT_ZERO;

static void logsession(int code, char const *why)
{
  char n1[ULONG_FMT], n2[ULONG_FMT];
  (void)code;
  connlimit_release(&slot);
  n1[ulong_fmt(n1, nmessages)] = 0;
  n2[ulong_fmt(n2, smtpd_errors)] = 0;
  strerr_warni("session ip=", cf.remoteip, " helo=", helo.len ? helo.s : "-", " messages=", n1,
               " errors=", n2, " end=", why);
}

static void synch_error(char const *why) gccattr_noreturn;
static void synch_error(char const *why)
{
  strerr_warni("pipelining violation ip=", cf.remoteip, " ", why);
  smtpd_errors++;
  smtpd_die(554, "5.5.0", "SMTP protocol synchronization error, closing", "pipelining");
}

/* ---- the transaction ---- */

static void reset_transaction(void)
{
  in_mail = 0;
  sender.len = 0;
  rcpts.len = 0;
  nrcpt = 0;
  memset(&mailp, 0, sizeof mailp);
}

static void reset_session(void)
{
  reset_transaction();
  seen_helo = esmtp = 0;
  helo.len = 0;
}

/* Is s[0..n) an address of the authenticated user? (lib/owner: the account, its aliases,
 * control/sender-allow) A lookup failure counts as no. */
static int owned(char const *s, size_t n)
{
  int r = owner_owns(authuser.s, authuser.len, s, n);
  if (r < 0) strerr_warnwusys("check the sender's owner");
  return r > 0;
}

/* ---- the message: streamed into the queue as it arrives (lib/smtpmsg) ---- */

static smtpmsg msg;

/* Starts the injection with the session facts, and our Received: field. 1, or 0 (451). */
static int msg_start(int bdat)
{
  inject_facts f = INJECT_FACTS_ZERO;
  smtp_trace t;
  f.service = cf.service;
  f.ip = cf.remoteip;
  f.helo = helo.s;
  f.user = authuser.len ? authuser.s : 0;
  f.tls = tls ? tlsproto.s : 0;
  f.relay = cf.relayclient || authuser.len;
  memset(&t, 0, sizeof t);
  t.helo = helo.s;
  t.host = cf.remotehost;
  t.ip = cf.remoteip;
  t.me = cf.me;
  t.proto = smtp_protocol(esmtp, mailp.smtputf8, tls, authuser.len > 0);
  t.tlsproto = tls ? tlsproto.s : 0;
  t.cipher = tls ? tlscipher.s : 0;
  if (nrcpt == 1) { t.rcpt = rcpts.s + 1; t.rcptlen = rcpts.len - 2; }
  if (smtpmsg_start(&msg, &f, (unsigned int)cf.timeout, &t, cf.databytes, bdat,
                    authuser.len > 0))
    return 1;
  strerr_warnwusys("start the injection");
  return 0;
}

static void log_message(char const *result, char const *id)
{
  char n1[ULONG_FMT], n2[UINT64_FMT];
  stralloc *l = &tmp;
  n1[ulong_fmt(n1, nrcpt)] = 0;
  n2[uint64_fmt(n2, msg.size)] = 0;
  smtpd_rcptlist(l, rcpts.s, rcpts.len, 10);
  if (!stralloc_0(&sender)) smtpd_quit(111, "out of memory");
  sender.len--;
  strerr_warni("message ip=", cf.remoteip, " from=<", sender.s, "> rcpts=", n1, " to=", l->s,
               " size=", n2, " tls=", tls ? tlsproto.s : "-", tls ? "/" : "",
               tls ? tlscipher.s : "", " user=", authuser.len ? authuser.s : "-",
               " result=", result, id && *id ? " id=" : "", id ? id : "");
}

/* The From: of an authenticated user's message must be theirs; with MAIL FROM:<> it must
 * be there. */
static int from_ok(void)
{
  if (!authuser.len) return 1;
  if (!msg.from.count) return sender.len > 0;
  if (msg.from.count > 1 || msg.from.toolong) return 0;
  return owner_owns_list(authuser.s, authuser.len, msg.from.value, msg.from.len) > 0;
}

static int quota_toobig(void);

static void refuse(char const *log, unsigned int code, char const *ecode, char const *text)
{
  smtpmsg_abort(&msg);
  log_message(log, 0);
  smtpd_reply(code, ecode, text);
}

/* The end of a message: its reply and its log line. */
static void finish_message(void)
{
  stralloc id = STRALLOC_ZERO;
  char const *ecode, *text;
  unsigned int code;
  int e;
  switch (smtpmsg_verdict(&msg, cf.hoplimit)) {
    case SMTPMSG_TOOBIG: refuse("552", 552, "5.3.4", "message too big"); goto end;
    case SMTPMSG_NUL:
      refuse("550-nul", 550, "5.6.0", "NUL byte in message, message refused");
      goto end;
    case SMTPMSG_BARE:
      refuse("550-bare-cr-lf", 550, "5.6.0",
             "bare CR or LF in message (RFC 5321 2.3.8), message refused");
      goto end;
    case SMTPMSG_HOPS:
      refuse("554-too-many-hops", 554, "5.4.6", "too many hops, mail loop");
      goto end;
  }
  if (quota_toobig()) {
    refuse("552-quota", 552, "5.2.2", "message exceeds the mailbox quota");
    goto end;
  }
  if (!from_ok()) {
    refuse("550-from-not-owned", 550, "5.7.1", "From: header not owned by the authenticated user");
    goto end;
  }
  e = smtpmsg_commit(&msg, sender.s, sender.len, rcpts.s, rcpts.len, &id);
  if (!stralloc_0(&id)) smtpd_quit(111, "out of memory");
  code = inject_reply(e, &ecode, &text);
  if (!e) {
    nmessages++;
    njunk = 0;
    log_message("250", id.s);
    tmp.len = 0;
    if (!stralloc_cats(&tmp, text) || (id.len > 1 && (!stralloc_cats(&tmp, " as ") ||
        !stralloc_cats(&tmp, id.s))) || !stralloc_0(&tmp))
      smtpd_quit(111, "out of memory");
    smtpd_reply(250, ecode, tmp.s);
  } else {
    char n[UINT_FMT];
    n[uint_fmt(n, (unsigned int)e)] = 0;
    log_message(e == INJECT_UNREAD ? "451-injector-did-not-read" : n, 0);
    smtpd_reply(code, ecode, text);
  }
end:
  stralloc_free(&id);
  reset_transaction();
}

/* DATA */
static void do_data(smtp_cmd const *c)
{
  if (c->arglen) { smtpd_reply(501, "5.5.4", "DATA takes no argument"); return; }
  if (!in_mail) { smtpd_reply(503, "5.5.1", "MAIL first"); return; }
  if (!nrcpt) { smtpd_reply(503, "5.5.1", "no valid recipients"); return; }
  if (!msg_start(0)) {
    smtpd_reply(451, "4.3.0", "unable to start the queue, try again later");
    return;
  }
  smtpd_reply(354, 0, "End data with <CR><LF>.<CR><LF>");
  for (;;) {
    size_t n = smtpd_fill();
    int done;
    if (!n) {
      smtpmsg_abort(&msg);
      log_message("disconnected", 0);
      smtpd_quit(0, "disconnected in DATA");
    }
    smtpd_consume(smtpmsg_data(&msg, smtpd_input(), n, &done));
    if (done) break;
  }
  finish_message();
}

/* BDAT (RFC 3030): chunks of one message; a failure is told after the chunk is read. */
static int bdat_active;
static unsigned int bdat_failed;

static void bdat_abandon(void)
{
  if (bdat_active) smtpmsg_abort(&msg);
  bdat_active = 0;
}

static void bdat_fail_reply(void)
{
  if (bdat_failed == 503) smtpd_reply(503, "5.5.1", "MAIL and RCPT first");
  else if (bdat_failed == 451) smtpd_reply(451, "4.3.0", "unable to start the queue");
  else smtpd_reply(552, "5.3.4", "message too big");
}

static void do_bdat(smtp_cmd const *c)
{
  unsigned long long n, left;
  int last, done;
  if (!smtp_parse_bdat(c->arg, c->arglen, ~0ULL >> 1, &n, &last))
    smtpd_die(421, "4.5.4", "BDAT syntax error, closing", "bad BDAT");
  if (!bdat_active) {
    bdat_failed = 0;
    if (!in_mail || !nrcpt) bdat_failed = 503;
    else if (!msg_start(1)) bdat_failed = 451;
    bdat_active = 1;
  }
  for (left = n; left;) {
    size_t avail = smtpd_fill(), take;
    if (!avail) {
      smtpmsg_abort(&msg);
      smtpd_quit(0, "disconnected in BDAT");
    }
    take = avail < left ? avail : (size_t)left;
    if (!bdat_failed) smtpmsg_data(&msg, smtpd_input(), take, &done);
    smtpd_consume(take);
    left -= take;
  }
  if (!bdat_failed && msg.toobig) {
    smtpmsg_abort(&msg);
    bdat_failed = 552;
    log_message("552", 0);
  }
  if (!last) {
    if (bdat_failed) bdat_fail_reply();
    else {
      char num[UINT64_FMT + 32];
      size_t k = uint64_fmt(num, n);
      memcpy(num + k, " octets received", 17);
      smtpd_reply(250, "2.0.0", num);
    }
    return;
  }
  bdat_active = 0;
  if (bdat_failed) {
    bdat_fail_reply();
    if (bdat_failed == 552) reset_transaction();
    return;
  }
  smtpmsg_bdat_end(&msg);
  finish_message();
}

/* ---- EHLO, MAIL, RCPT ---- */

static int auth_offered(void)
{
  return !authuser.len && cf.offer_auth && (tls || cf.plainok);
}

static void do_helo(smtp_cmd const *c, int ext)
{
  char num[ULONG_FMT + 8];
  if (!c->arglen) {
    smtpd_reply(501, "5.5.4", ext ? "EHLO needs a domain" : "HELO needs a domain");
    return;
  }
  bdat_abandon();
  reset_transaction();
  helo.len = 0;
  if (!stralloc_catb(&helo, c->arg, c->arglen > 255 ? 255 : c->arglen) || !stralloc_0(&helo))
    smtpd_quit(111, "out of memory");
  helo.len--;
  seen_helo = 1;
  esmtp = ext;
  tmp.len = 0;
  if (!stralloc_cats(&tmp, cf.me) ||
      (ext && (!stralloc_cats(&tmp, " greets ") || !smtp_cat_safe(&tmp, c->arg, c->arglen, 64))) ||
      !stralloc_0(&tmp))
    smtpd_quit(111, "out of memory");
  if (!ext) { smtpd_reply(250, 0, tmp.s); return; }
  smtpd_reply_more(250, 0, tmp.s);
  smtpd_reply_more(250, 0, "PIPELINING");
  memcpy(num, "SIZE ", 5);
  num[5 + ulong_fmt(num + 5, cf.databytes)] = 0;
  smtpd_reply_more(250, 0, num);
  smtpd_reply_more(250, 0, "8BITMIME");
  smtpd_reply_more(250, 0, "SMTPUTF8");
  smtpd_reply_more(250, 0, "CHUNKING");
  if (ctlfd >= 0 && !tls) smtpd_reply_more(250, 0, "STARTTLS");
  if (auth_offered()) smtpd_reply_more(250, 0, "AUTH " SASLSERV_MECHS);
  smtpd_reply(250, 0, "ENHANCEDSTATUSCODES");
}

/* Submission: 1 (and a reply) if MAIL / DATA must be refused now. */
static int submission_refused(void)
{
  if (!cf.authrequired) return 0;
  if (!tls && !cf.plainok) smtpd_reply(530, "5.7.0", "must issue a STARTTLS command first");
  else if (!authuser.len) smtpd_reply(530, "5.7.0", "authentication required");
  else return 0;
  return 1;
}

static void do_mail(smtp_cmd const *c)
{
  int r;
  if (!seen_helo) { smtpd_reply(503, "5.5.1", "say EHLO first"); return; }
  if (in_mail) { smtpd_reply(503, "5.5.1", "nested MAIL command"); return; }
  if (submission_refused()) return;
  r = smtp_parse_mail(c->arg, c->arglen, &sender, &mailp);
  switch (r) {
    case SMTP_OK: break;
    case SMTP_EADDR: smtpd_reply(501, "5.1.7", addr_strerror(mailp.addrerr)); return;
    case SMTP_EPARAM: smtpd_reply(555, "5.5.4", "unsupported parameter"); return;
    case SMTP_EPARAMVAL: smtpd_reply(501, "5.5.4", "bad parameter value"); return;
    case SMTP_ENOMEM: smtpd_quit(111, "out of memory");
    default: smtpd_reply(501, "5.5.4", "syntax: MAIL FROM:<address>"); return;
  }
  if (!esmtp && (mailp.has_size || mailp.body || mailp.smtputf8)) {
    smtpd_reply(555, "5.5.4", "parameters need EHLO");
    sender.len = 0;
    return;
  }
  if (mailp.has_size && mailp.size > cf.databytes) {
    smtpd_reply(552, "5.3.4", "message size exceeds fixed maximum message size");
    sender.len = 0;
    return;
  }
  /* the null sender is checked at the end of data: it needs a From: the user owns */
  if (authuser.len && sender.len && !owned(sender.s, sender.len)) {
    smtpd_reply(553, "5.7.1", "sender address not owned by the authenticated user");
    sender.len = 0;
    return;
  }
  if (!stralloc_0(&sender)) smtpd_quit(111, "out of memory");
  sender.len--;
  in_mail = 1;
  smtpd_reply(250, "2.1.0", "Ok");
}

/* 1 if the local recipient's mailbox can take the message (else a reply was given). */
static int quota_ok(void);

static void do_rcpt(smtp_cmd const *c)
{
  smtp_mailparams p;
  size_t i;
  int r;
  if (!in_mail) { smtpd_reply(503, "5.5.1", "MAIL first"); return; }
  r = smtp_parse_rcpt(c->arg, c->arglen, mailp.smtputf8 ? ADDR_UTF8 : 0, &tmp, &p);
  switch (r) {
    case SMTP_OK: break;
    case SMTP_EADDR: smtpd_reply(501, "5.1.3", addr_strerror(p.addrerr)); return;
    case SMTP_EPARAM: smtpd_reply(555, "5.5.4", "unsupported parameter"); return;
    case SMTP_EPARAMVAL: smtpd_reply(501, "5.5.4", "bad parameter value"); return;
    case SMTP_ENOMEM: smtpd_quit(111, "out of memory");
    default: smtpd_reply(501, "5.5.4", "syntax: RCPT TO:<address>"); return;
  }
  if (p.postmaster) {
    if (!cf.firstdomain.len) { smtpd_reply(550, "5.1.1", "no postmaster here"); return; }
    if (!stralloc_catb(&tmp, "@", 1) ||
        !stralloc_catb(&tmp, cf.firstdomain.s, cf.firstdomain.len))
      smtpd_quit(111, "out of memory");
  }
  if (nrcpt >= cf.rcptmax) { smtpd_reply(452, "4.5.3", "too many recipients"); return; }
  {
    stralloc folded = STRALLOC_ZERO;
    if (!addr_fold(tmp.s, tmp.len, &folded)) smtpd_quit(111, "out of memory");
    targets.len = 0;
    r = lookup_resolve(folded.s, folded.len, &targets);
    stralloc_free(&folded);
  }
  switch (r) {
    case LOOKUP_FOUND: if (!quota_ok()) return; break;
    case LOOKUP_UNKNOWN: smtpd_reply(550, "5.1.1", "no such user here"); return;
    case LOOKUP_REMOTE:
      if (cf.relayclient || authuser.len) break;
      smtpd_reply(554, "5.7.1", "relay access denied");
      return;
    case LOOKUP_ELOOP: smtpd_reply(550, "5.4.6", "alias loop or expansion too large"); return;
    default: smtpd_reply(451, "4.3.0", "temporary lookup failure, try again later"); return;
  }
  /* The same recipient twice is one (one delivery). A local domain's lookups fold case;
   * a remote local part is the remote host's to interpret (RFC 5321 2.4). */
  for (i = 0; i < rcpts.len; i += strlen(rcpts.s + i) + 1)
    if (smtp_rcpt_same(rcpts.s + i + 1, strlen(rcpts.s + i + 1), tmp.s, tmp.len,
                       r == LOOKUP_FOUND)) {
      smtpd_reply(250, "2.1.5", "Ok (duplicate)");
      return;
    }
  if (!stralloc_catb(&rcpts, "T", 1) || !stralloc_catb(&rcpts, tmp.s, tmp.len) ||
      !stralloc_0(&rcpts))
    smtpd_quit(111, "out of memory");
  nrcpt++;
  smtpd_reply(250, "2.1.5", "Ok");
}

/* Quota at RCPT (lib/quotastate: the record deliver-maildir keeps outside the Maildir), for
 * a recipient that is one mailbox: a list is not refused for one full member. The first
 * recipient's account is kept for the check at the end of data. */
static stralloc q1 = STRALLOC_ZERO;
static uint64_t q1limit;

static int quota_ok(void)
{
  char const *t = targets.s;
  account acc = ACCOUNT_ZERO;
  quotastate q;
  size_t n;
  int r;
  if (!nrcpt) q1.len = 0;
  if (!targets.len || t[0] != 'L' || (n = strlen(t)) + 1 != targets.len) return 1;
  r = quotastate_read(0, t + 1, n - 1, &q);
  if (r < 0) strerr_warnwusys("read the quota state of ", t + 1);
  if (r <= 0 || lookup_account_nohash(t + 1, n - 1, &acc) <= 0) {
    account_free(&acc);
    return 1;
  }
  r = quotastate_check(&q, acc.quota, mailp.has_size ? mailp.size : 0);
  if (!nrcpt && r == QUOTASTATE_OK && acc.quota && !stralloc_copyb(&q1, t + 1, n - 1))
    smtpd_quit(111, "out of memory");
  q1limit = acc.quota;
  account_free(&acc);
  if (r == QUOTASTATE_FULL) smtpd_reply(452, "4.2.2", "mailbox full");
  if (r == QUOTASTATE_TOOBIG) smtpd_reply(552, "5.2.2", "message exceeds the mailbox quota");
  return r == QUOTASTATE_OK;
}

/* At the end of data, for a message to one mailbox: is it alone over the quota? */
static int quota_toobig(void)
{
  quotastate q;
  if (nrcpt != 1 || !q1.len || quotastate_read(0, q1.s, q1.len, &q) <= 0) return 0;
  return quotastate_check(&q, q1limit, msg.size) == QUOTASTATE_TOOBIG;
}

/* ---- STARTTLS and AUTH ---- */

static int tls_facts(void)
{
  int r = ucspitls_facts(&tlsproto, &tlscipher);
  if (r > 0) tls = 1;
  return r >= 0;
}

/* 1: TLS started (the caller resets the session), 0: refused with a reply, -1: broken. */
static int do_starttls(size_t arglen)
{
  int r;
  if (arglen) { smtpd_reply(501, "5.5.4", "STARTTLS takes no argument"); return 0; }
  if (tls) { smtpd_reply(554, "5.5.1", "TLS already active"); return 0; }
  if (ctlfd < 0) { smtpd_reply(502, "5.5.1", "STARTTLS not available"); return 0; }
  if (!ucspitls_ready(ctlfd)) {
    ctlfd = -1;
    smtpd_reply(454, "4.7.0", "TLS not available due to temporary reason");
    return 0;
  }
  smtpd_reply(220, "2.0.0", "Ready to start TLS");
  r = smtpd_starttls();
  ctlfd = -1;
  if (!r) return -1;
  if (!tls_facts()) smtpd_quit(111, "out of memory");
  tls = 1;
  authuser.len = 0;
  return 1;
}

static saslserv sasl; /* static, so that forget() can wipe what a broken-off dialogue left */

static void do_auth(char const *arg, size_t arglen)
{
  if (authuser.len) { smtpd_reply(503, "5.5.1", "already authenticated"); return; }
  if (!tls && !cf.plainok) {
    smtpd_reply(530, "5.7.0", "must issue a STARTTLS command first");
    return;
  }
  if (!cf.offer_auth) {
    smtpd_reply(503, "5.5.1", "AUTH not available on this service");
    return;
  }
  smtpd_auth(&sasl, arg, arglen, cf.remoteip, cf.authdelay, &authfailures, &authuser);
}

/* ---- set-up ---- */

/* The per-address connection cap (control/smtp-peermax; 0: none). */
static void take_slot(void)
{
  int r;
  if (!cf.peermax || !getenv("TCPREMOTEIP") || cf.local) return;
  r = connlimit_take(&slot, "smtpd", cf.remoteip, (unsigned int)cf.peermax, cf.v6prefix, 0);
  if (r < 0) strerr_warnwusys("take a connection slot (running without the per-address cap)");
  if (!r) {
    strerr_warni("too many connections ip=", cf.remoteip);
    smtpd_die(421, "4.7.0", "too many connections from your address, try later", "peer limit");
  }
}

static void greet(void)
{
  if (strict && smtpd_pending(cf.greetdelay)) synch_error("before the greeting");
  tmp.len = 0;
  if (!stralloc_cats(&tmp, cf.me) || !stralloc_cats(&tmp, " ESMTP pillarbox") ||
      !stralloc_0(&tmp))
    smtpd_quit(111, "out of memory");
  smtpd_reply(220, 0, tmp.s);
}

/* ---- the command loop ---- */

static void junk(void)
{
  if (++njunk > cf.junkmax)
    smtpd_die(421, "4.7.0", "too many commands without mail, closing", "junk");
}

/* sendmail -bs (the local service): a bare name in MAIL FROM:<root> or RCPT TO:<root> lives
 * in the default domain (control/defaultdomain), as sendmail's command-line addresses do.
 * Returns c, or a copy whose argument has the name qualified. */
static smtp_cmd const *qualify(smtp_cmd const *c, smtp_cmd *copy)
{
  int r;
  if (!cf.local || (c->verb != SMTP_V_MAIL && c->verb != SMTP_V_RCPT)) return c;
  r = smtp_qualify(c->arg, c->arglen, cf.defdomain.s, cf.defdomain.len, &qualified);
  if (r < 0) smtpd_quit(111, "out of memory");
  if (!r) return c;
  *copy = *c;
  copy->arg = qualified.s;
  copy->arglen = qualified.len;
  return copy;
}

static void command(smtp_cmd const *c)
{
  smtp_cmd copy;
  c = qualify(c, &copy);
  switch (c->verb) {
    case SMTP_V_EHLO: do_helo(c, 1); break;
    case SMTP_V_HELO: do_helo(c, 0); break;
    case SMTP_V_MAIL: do_mail(c); break;
    case SMTP_V_RCPT: do_rcpt(c); break;
    case SMTP_V_DATA:
      if (strict && smtpd_pending(0)) synch_error("after DATA");
      if (!submission_refused()) do_data(c);
      break;
    case SMTP_V_BDAT: do_bdat(c); break;
    case SMTP_V_RSET:
      junk();
      if (c->arglen) { smtpd_reply(501, "5.5.4", "RSET takes no argument"); break; }
      reset_transaction();
      smtpd_reply(250, "2.0.0", "Ok");
      break;
    case SMTP_V_NOOP: junk(); smtpd_reply(250, "2.0.0", "Ok"); break;
    case SMTP_V_QUIT:
      smtpd_reply(221, "2.0.0", "Bye");
      smtpd_quit(0, "quit");
    case SMTP_V_VRFY:
      junk();
      smtpd_reply(252, "2.5.0", "cannot VRFY user, but will accept message and attempt delivery");
      break;
    case SMTP_V_EXPN: junk(); smtpd_reply(502, "5.5.1", "EXPN not implemented"); break;
    case SMTP_V_HELP:
      junk();
      smtpd_reply_more(214, "2.0.0",
                       "pillarbox SMTP: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY");
      smtpd_reply(214, "2.0.0", "see RFC 5321");
      break;
    case SMTP_V_STARTTLS: {
      int r;
      if (in_mail) { smtpd_reply(503, "5.5.1", "STARTTLS inside a transaction"); break; }
      r = do_starttls(c->arglen);
      if (r < 0) smtpd_quit(0, "TLS failed");
      if (r > 0) reset_session(); /* RFC 3207 4.2: forget everything known */
      smtpd_flush();
      break;
    }
    case SMTP_V_AUTH:
      if (in_mail) { smtpd_reply(503, "5.5.1", "AUTH inside a transaction"); break; }
      if (!seen_helo) { smtpd_reply(503, "5.5.1", "say EHLO first"); break; }
      do_auth(c->arg, c->arglen);
      break;
    default: smtpd_reply(500, "5.5.1", "command unrecognized"); break;
  }
}

static sigjmp_buf next; /* a pool worker: where a session's end goes */

/* One session, to its end: smtpd_quit exits, or jumps back to the pool worker's loop. */
static void session(int pooled) gccattr_noreturn;
static void session(int pooled)
{
  struct stat st;
  smtpconf_session(&cf, pooled);
  /* implicit TLS (smtps) through the engine service: before a byte is said (ucspitls.h) */
  if (!ucspitls_implicit_session(pooled)) siglongjmp(next, 1);
  /* Pipelining rules are enforced for a network peer: fd 0 a socket, or implicit TLS */
  strict = (fstat(0, &st) == 0 && S_ISSOCK(st.st_mode)) || getenv("SSL_PROTOCOL");
  ctlfd = ucspitls_setup();
  if (!tls_facts() || !stralloc_0(&helo)) strerr_diefusys(111, "allocate");
  helo.len = 0;
  if (!smtpd_init(0, 1, (unsigned int)cf.timeout, (unsigned int)cf.sessionmax, &logsession))
    strerr_diefusys(111, "set fd 0/1 non-blocking");
  take_slot();
  greet();
  for (;;) {
    smtp_cmd c;
    int r;
    if (smtpd_errors > cf.errmax)
      smtpd_die(421, "4.7.0", "too many errors, closing", "too many errors");
    r = smtpd_getline(&line, cf.linemax);
    if (!r) smtpd_quit(0, "disconnected");
    if (r < 0) { smtpd_reply(500, "5.5.2", "line too long"); continue; }
    if (!smtp_parse_cmd(line.s, line.len, &c)) {
      smtpd_reply(501, "5.5.2", "control characters in command");
      continue;
    }
    if (bdat_active && c.verb != SMTP_V_BDAT && c.verb != SMTP_V_NOOP) {
      bdat_abandon();
      reset_transaction();
      if (c.verb != SMTP_V_RSET && c.verb != SMTP_V_QUIT && c.verb != SMTP_V_EHLO &&
          c.verb != SMTP_V_HELO) {
        smtpd_reply(503, "5.5.1", "BDAT transaction abandoned");
        continue;
      }
    }
    command(&c);
  }
}

/* Between two sessions of a pool worker: nothing of the last one is left (RFC 5321 state,
 * AUTH, TLS, the rules' environment: tcppool rebuilds it; lib/smtpd's buffers and fds; an
 * injection or an engine connection left open; the per-address slot). */
static void forget(void)
{
  bdat_active = 0;
  bdat_failed = 0;
  smtpmsg_abort(&msg);
  reset_session();
  nmessages = njunk = 0;
  authfailures = 0;
  authuser.len = 0;
  tls = 0;
  ctlfd = -1;
  q1.len = 0;
  q1limit = 0;
  saslserv_wipe(&sasl);
  if (line.s) byte_zzero(line.s, line.a);
  line.len = tmp.len = 0;
  connlimit_release(&slot);
  smtpd_reset();
  ucspitls_reset();
  tcppool_done();
}

int main(int argc, char const *const *argv)
{
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefusys(111, "ignore SIGPIPE");
  if (!tcppool_worker()) session(0);
  smtpd_keepalive(&next);
  while (tcppool_next()) {
    if (!sigsetjmp(next, 0)) session(1);
    forget();
  }
  return 0;
}
