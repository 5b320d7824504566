"""tls-engine -p: engines forked in advance (spares), already under the engine's uid, each
waiting for one connection. A handshake is served by a spare that was waiting and a new one
replaces it; a spare SIGKILLed is replaced and the service goes on; a spare is not root before
anything reaches it; a key reload lets the old spares go and the new ones have the new key;
the spares count in -c and go away with the service."""
import os
import signal
import subprocess

import pytest

from conftest import prog, wait_for
from test_tls_engine import Engine, children_of, engine_ids, smtp_reply
from test_tls_implicit import implicit, tls_connect

HOST = "mx.example.test"


@pytest.fixture
def cafile(instance):
    return instance.path("tls", "cert.pem")


def comm(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split("(", 1)[1].rsplit(")", 1)[0]
    except OSError:
        return None


def spares(eng):
    return {p for p in children_of(eng.p.pid) if comm(p) == "tls-engine-idle"}


def serving(eng):
    return {p for p in children_of(eng.p.pid) if comm(p) == "tls-engine"}


def n_spares(eng, n):
    """Waits until exactly n spares wait; returns their pids."""
    return wait_for(lambda: len(spares(eng)) == n and spares(eng), timeout=10,
                    what="%d spare engines" % n)


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def smtps(inst, eng):
    return implicit(inst, eng, [prog("smtp-receive")], env={"SMTPAUTH": "1"})


def session(srv, cafile):
    """An SMTPS session from greeting to 221; returns the server's certificate."""
    s = tls_connect(srv, cafile)
    assert smtp_reply(s)[0].startswith(b"220 ")
    cert = s.getpeercert(binary_form=True)
    s.sendall(b"QUIT\r\n")
    assert smtp_reply(s)[0].startswith(b"221 ")
    s.close()
    return cert


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)


def test_handshake_served_by_a_waiting_spare_then_replaced(instance, cafile):
    with Engine(instance, args=["-p", "2"]) as eng, smtps(instance, eng) as srv:
        before = n_spares(eng, 2)
        s = tls_connect(srv, cafile)
        assert smtp_reply(s)[0].startswith(b"220 ")
        # the engine holding this session is one of the spares that were waiting
        # (a spare forked a moment ago may not have taken its idle name yet: count only the
        # engines that were waiting before)
        (kid,) = wait_for(lambda: len(serving(eng) & before) == 1 and serving(eng) & before,
                          timeout=10, what="the serving engine")
        # and a new spare took its place
        after = n_spares(eng, 2)
        assert kid not in after and after - before
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s)[0].startswith(b"221 ")
        s.close()
        wait_for(lambda: not alive(kid), timeout=10, what="the engine to end with its session")
        # no engine was forked for the connection: the service only ever forked spares
        assert b"fork an engine" not in eng.logbytes()


def test_spare_is_not_root_before_the_client_hello(instance, cafile):
    if os.geteuid():
        pytest.skip("needs root: the drop to TLS_UID is what is checked")
    ids = engine_ids()
    with Engine(instance, args=["-p", "1"]) as eng, smtps(instance, eng) as srv:
        (spare,) = n_spares(eng, 1)
        st = status(spare)
        assert [int(x) for x in st["Uid"].split()] == [int(ids["TLS_UID"])] * 4
        assert [int(x) for x in st["Gid"].split()] == [int(ids["TLS_GID"])] * 4
        assert st["Groups"].split() == [ids["TLS_GID"]]
        # a client connects and says nothing: the spare holds its connection, still not root
        raw = srv.connect()
        wait_for(lambda: spare in serving(eng), timeout=10, what="the spare to take it")
        assert [int(x) for x in status(spare)["Uid"].split()] == [int(ids["TLS_UID"])] * 4
        assert "Uid:\t0\t0\t0\t0" in open("/proc/%d/status" % eng.p.pid).read()
        raw.close()


def test_sigkilled_spare_is_replaced_and_the_service_goes_on(instance, cafile):
    with Engine(instance, args=["-p", "2"]) as eng, smtps(instance, eng) as srv:
        before = n_spares(eng, 2)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        after = wait_for(lambda: len(spares(eng)) == 2 and victim not in spares(eng)
                         and spares(eng), timeout=10, what="a replacement spare")
        assert after != before
        for _ in range(3):
            session(srv, cafile)
        # every spare killed at once: once they are gone, the next connection is served all
        # the same (one given to a spare in the instant it is killed is lost with it, as with
        # any engine killed while it holds a connection)
        killed = spares(eng)
        for p in killed:
            os.kill(p, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in killed), timeout=10, what="the spares gone")
        session(srv, cafile)
        assert eng.p.poll() is None
        n_spares(eng, 2)


def test_key_reload_reaches_new_spares(instance, cafile, tmp_path):
    with Engine(instance, args=["-p", "2"]) as eng, smtps(instance, eng) as srv:
        old_cert = session(srv, cafile)
        old = n_spares(eng, 2)
        new_c, new_k = tmp_path / "c.pem", tmp_path / "k.pem"
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                            "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST,
                            "-keyout", str(new_k), "-out", str(new_c)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        os.replace(str(new_k), instance.path("tls", "key.pem"))
        os.replace(str(new_c), instance.path("tls", "cert.pem"))
        # the next connection has the new certificate, and the spares forked with the old
        # keys are gone
        assert session(srv, cafile) != old_cert
        assert b"loaded again" in eng.logbytes()
        wait_for(lambda: not any(alive(p) for p in old), timeout=10,
                 what="the old spares to exit")
        # a spare forked after the reload serves the new certificate too
        new = n_spares(eng, 2)
        assert not new & old
        wait_for(lambda: not serving(eng), timeout=10, what="the last session's engine to end")
        s = tls_connect(srv, cafile)
        assert smtp_reply(s)[0].startswith(b"220 ")
        assert s.getpeercert(binary_form=True) != old_cert
        assert serving(eng) <= new and serving(eng)
        s.close()


def test_spares_count_in_maxconn_and_end_with_the_service(instance, cafile):
    with Engine(instance, args=["-c", "2", "-p", "4"]) as eng, smtps(instance, eng) as srv:
        n_spares(eng, 2)      # -c 2 bounds the spares as well
        s = tls_connect(srv, cafile)
        assert smtp_reply(s)[0].startswith(b"220 ")
        wait_for(lambda: len(serving(eng)) == 1, timeout=10, what="the serving engine")
        left = n_spares(eng, 1)   # one session and one spare: 2 engines
        assert len(children_of(eng.p.pid)) == 2
        # the service is killed: the spares exit (EOF on their socket), the session goes on
        eng.kill()
        wait_for(lambda: not any(alive(p) for p in left), timeout=10,
                 what="the spares to exit with the service")
        s.sendall(b"NOOP\r\n")
        assert smtp_reply(s)[0].startswith(b"250 ")
        s.close()


def test_spares_option_bounds(instance):
    r = subprocess.run([prog("tls-engine"), "-p", "65"], env=instance.env, capture_output=True,
                       timeout=10)
    assert r.returncode == 100 and b"usage" in r.stderr.lower()
