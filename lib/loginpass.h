/* loginpass: handing a client's connection and credentials to the login broker.
 *
 * The pre-login program's side (login-handoff, uid pb-login) connects to the broker's UNIX
 * socket (MAILROOT/run/login/NAME, served by s6-ipcserver running login-broker under the
 * delivery uid; its directory's group, pb-loginc, decides who may connect) and sends one
 * message, with three descriptors attached to its first byte (SCM_RIGHTS):
 *   fds     the client's input (fd 0), its output (fd 1), and the session's notification fd
 *           (the one named by $POP3_NOTIFYFD or $IMAP_NOTIFYFD; fd 1 again when there is none)
 *   "PBL1"  4 octets: version
 *   length  4 octets, big-endian: the length of what follows, at most LOGINPASS_MAX
 *   creds   2 octets big-endian length, then "user\0password\0..." (checkpassword's fd 3,
 *           at most 512 octets)
 *   env     "NAME=VALUE\0" for each variable of loginpass_names that is set (the UCSPI and
 *           TLS facts, the protocol's hand-over variables); NOTIFY=NAME names the variable
 *           that must hold the notification fd's number in the session
 * The broker never believes a variable outside loginpass_names. When the broker is done with
 * the login, it either writes one octet, the status (1 bad credentials, 111 trouble), and
 * closes; or execs the session, which keeps the socket open until it exits: EOF without a
 * status octet means "the session ran and has ended".
 */
#ifndef PILLARBOX_LOGINPASS_H
#define PILLARBOX_LOGINPASS_H

#include <stddef.h>
#include <skalibs/stralloc.h>
#include <skalibs/tai.h>

#define LOGINPASS_MAX 65536
#define LOGINPASS_CREDS_MAX 512
#define LOGINPASS_VALUE_MAX 32768

/* The variables that cross (NULL-terminated). */
extern char const *const loginpass_names[];
/* The notification variables among them: their value is an fd number, renumbered. */
extern char const *const loginpass_notify_names[];

/* 1 if name[0..len) is one of loginpass_names. */
int loginpass_allowed(char const *name, size_t len);

/* Sends the message on sock: fds (3 of them), creds, and the allowed variables found in the
 * environment (notifyvar: the name whose fd is fds[2], or 0). 1 ok, 0 error (errno). */
int loginpass_send(int sock, int const fds[3], char const *creds, size_t credlen,
                   char const *notifyvar, tain const *deadline);

/* Receives it: fds[3] (close-on-exec), creds and env ("NAME=VALUE\0"..., only allowed names,
 * NOTIFY= included) appended. 1 ok, 0 error (errno; EPROTO: malformed). */
int loginpass_recv(int sock, int fds[3], stralloc *creds, stralloc *env, tain const *deadline);

#endif
