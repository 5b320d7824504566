"""mx-resolve against a dnsmasq on a loopback port: MX order, implicit MX, null MX, CNAME,
NXDOMAIN, a dead zone, a server that never answers, malformed answers, address literals."""
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import ROOT, base_env, prog
from outbound_helpers import dnsmasq_fixture, free_udp_port

RECORDS = [
    "--mx-host=mx.test,mx1.mx.test,10",
    "--mx-host=mx.test,mx2.mx.test,20",
    "--mx-host=mx.test,mx3.mx.test,20",
    "--host-record=mx1.mx.test,127.0.0.2",
    "--host-record=mx2.mx.test,127.0.0.3,::1",
    "--host-record=mx3.mx.test,127.0.0.4",
    "--mx-host=null.test,.,0",
    "--host-record=impl.test,127.0.0.5",
    "--host-record=impl6.test,::1",
    "--cname=alias.test,mx.test",
    "--mx-host=cnamemx.test,www.cnamemx.test,5",
    "--cname=www.cnamemx.test,real.cnamemx.test",
    "--host-record=real.cnamemx.test,127.0.0.6",
    "--mx-host=noaddr.test,ghost.noaddr.test,10",
    "--mx-host=half.test,ghost.half.test,10",
    "--mx-host=half.test,ok.half.test,20",
    "--host-record=ok.half.test,127.0.0.7",
]


dns = dnsmasq_fixture(*RECORDS)


def resolve(env, domain, timeout=30):
    return subprocess.run([prog("mx-resolve"), domain], env=base_env(**env), capture_output=True,
                          timeout=timeout)


def lines(r):
    return [l.split(" ") for l in r.stdout.decode().splitlines()]


def test_mx_order_and_addresses(dns):
    r = resolve(dns.env, "mx.test")
    assert r.returncode == 0, r.stderr
    out = lines(r)
    assert out[0] == ["10", "mx1.mx.test", "127.0.0.2"]
    prefs = [int(l[0]) for l in out]
    assert prefs == sorted(prefs)
    rest = [tuple(l) for l in out[1:]]
    assert sorted(rest) == sorted([("20", "mx2.mx.test", "::1"), ("20", "mx2.mx.test", "127.0.0.3"),
                                   ("20", "mx3.mx.test", "127.0.0.4")])
    # IPv6 before IPv4 for one host
    hosts = [l[1] for l in out]
    i6 = [i for i, l in enumerate(out) if l[2] == "::1"][0]
    i4 = [i for i, l in enumerate(out) if l[2] == "127.0.0.3"][0]
    assert i6 < i4 and hosts.count("mx2.mx.test") == 2


def test_equal_preferences_are_shuffled(dns):
    firsts = set()
    for _ in range(40):
        r = resolve(dns.env, "mx.test")
        assert r.returncode == 0
        firsts.add(lines(r)[1][1])
        if len(firsts) == 2:
            break
    assert firsts == {"mx2.mx.test", "mx3.mx.test"}


def test_implicit_mx(dns):
    r = resolve(dns.env, "impl.test")
    assert r.returncode == 0, r.stderr
    assert lines(r) == [["0", "impl.test", "127.0.0.5"]]
    r = resolve(dns.env, "impl6.test")
    assert r.returncode == 0, r.stderr
    assert lines(r) == [["0", "impl6.test", "::1"]]


def test_null_mx_is_permanent(dns):
    r = resolve(dns.env, "null.test")
    assert r.returncode == 100
    assert b"null MX" in r.stderr and r.stdout == b""


def test_nxdomain_is_permanent(dns):
    r = resolve(dns.env, "nosuch.test")
    assert r.returncode == 100
    assert b"NXDOMAIN" in r.stderr


def test_cname_to_domain_and_mx_target(dns):
    r = resolve(dns.env, "alias.test")
    assert r.returncode == 0, r.stderr
    assert lines(r)[0] == ["10", "mx1.mx.test", "127.0.0.2"]
    r = resolve(dns.env, "cnamemx.test")
    assert r.returncode == 0, r.stderr
    assert lines(r) == [["5", "www.cnamemx.test", "127.0.0.6"]]


def test_mx_host_without_address(dns):
    r = resolve(dns.env, "noaddr.test")
    assert r.returncode == 100, r.stderr
    r = resolve(dns.env, "half.test")
    assert r.returncode == 0, r.stderr
    assert lines(r) == [["20", "ok.half.test", "127.0.0.7"]]


def test_dead_zone_is_temporary(dns):
    t = time.monotonic()
    r = resolve(dns.env, "dead.test")
    assert r.returncode == 111, r.stderr
    assert time.monotonic() - t < 20


def test_literals_resolve_to_themselves(dns):
    r = resolve(dns.env, "[127.0.0.9]")
    assert r.returncode == 0 and lines(r) == [["0", "[127.0.0.9]", "127.0.0.9"]]
    r = resolve(dns.env, "[IPv6:::1]")
    assert r.returncode == 0 and lines(r) == [["0", "[IPv6:::1]", "::1"]]
    for bad in ("[127.0.0.300]", "[IPv6:zz::1]", "[]"):
        assert resolve(dns.env, bad).returncode == 100, bad


def test_bad_names_and_usage(dns):
    for bad in ("a..b", "-x.test", "a b.test", "x" * 300 + ".test"):
        r = resolve(dns.env, bad)
        if bad == "-x.test":
            assert r.returncode == 100  # an option: usage
        else:
            assert r.returncode == 100 and b"invalid" in r.stderr, bad
    assert subprocess.run([prog("mx-resolve")], env=base_env(), capture_output=True,
                          timeout=10).returncode == 100
    r = resolve({"PILLARBOX_DNS": "not-an-ip"}, "mx.test")
    assert r.returncode == 111 and b"PILLARBOX_DNS" in r.stderr


class FakeDns:
    """A UDP 'DNS server' that either never answers or answers with a given mangling."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.stopping = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            self.queries += 1
            if self.mode == "silent":
                continue
            qid = q[:2]
            question = q[12:]
            if self.mode == "servfail":
                hdr = qid + struct.pack(">HHHHH", 0x8182, 1, 0, 0, 0)
                self.sock.sendto(hdr + question, peer)
            elif self.mode == "truncated":
                # TC set and nothing usable: the resolver retries over TCP, where nobody
                # listens on this port.
                hdr = qid + struct.pack(">HHHHH", 0x8380, 1, 0, 0, 0)
                self.sock.sendto(hdr + question, peer)
            elif self.mode == "malformed":
                # Claims one MX answer whose rdata runs past the end of the packet.
                hdr = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
                ans = b"\xc0\x0c" + struct.pack(">HHIH", 15, 1, 60, 40) + b"\x00\x0a\x03abc"
                self.sock.sendto(hdr + question + ans, peer)

    def stop(self):
        self.stopping = True
        self.t.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("mode", ["silent", "servfail", "malformed", "truncated"])
def test_broken_servers_are_temporary(mode):
    f = FakeDns(mode)
    try:
        t = time.monotonic()
        r = resolve({"PILLARBOX_DNS": "127.0.0.1:%d" % f.port, "PILLARBOX_DNS_TIMEOUT": "1"},
                    "example.test")
        assert r.returncode == 111, (r.returncode, r.stderr)
        assert f.queries >= 1
        assert time.monotonic() - t < 20
    finally:
        f.stop()


def _name(n):
    return b"".join(bytes([len(l)]) + l for l in n.encode().split(b".")) + b"\0"


def _reply(qtype, answers):
    q = _name("example.test") + struct.pack(">HH", qtype, 1)
    out = struct.pack(">HHHHHH", 0x1234, 0x8180, 1, len(answers), 0, 0) + q
    for owner, t, rdata in answers:
        out += owner + struct.pack(">HHIH", t, 1, 60, len(rdata)) + rdata
    return out


SEEDS = {
    "mx": b"\x01" + _reply(15, [(b"\xc0\x0c", 15, b"\x00\x0a" + _name("mx1.example.test")),
                                (b"\xc0\x0c", 15, b"\x00\x14\x03mx2\xc0\x0c")]),
    "cname": b"\x01" + _reply(15, [(b"\xc0\x0c", 5, _name("other.test")),
                                   (_name("other.test"), 15, b"\x00\x05" + _name("mx.test"))]),
    "null": b"\x01" + _reply(15, [(b"\xc0\x0c", 15, b"\x00\x00\x00")]),
    "addr": b"\x00" + _reply(1, [(b"\xc0\x0c", 1, b"\x7f\x00\x00\x02"),
                                 (b"\xc0\x0c", 28, b"\x00" * 15 + b"\x01")]),
}


@pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed")
def test_dns_reply_parser_fuzz(tmp_path):
    """libFuzzer on lib/dns's reply parsing, seeded with well-formed replies: nothing found."""
    exe = str(tmp_path / "dns_fuzz")
    r = subprocess.run(["clang", "-g", "-O1", "-std=c99", "-D_POSIX_C_SOURCE=200809L",
                        "-D_XOPEN_SOURCE=700", "-iquote", os.path.join(ROOT, "lib"),
                        "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
                        "-o", exe, os.path.join(ROOT, "fuzz", "dns_fuzz.c"),
                        os.path.join(ROOT, "lib", "dns.c"), "-l:libskarnet.a", "-lresolv"],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
    r = subprocess.run([exe, "-runs=300000", "-seed=1", "-max_len=1024",
                        "-artifact_prefix=%s/" % tmp_path, str(corpus)],
                       capture_output=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert b"Done 300000 runs" in r.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "leak-", "oom-"))]



class RecordingDns:
    """A DNS server (python3-dnslib) that records every question it gets and answers any MX
    question with "10 mx.<name>" (for badmx.*: "10 mx-.<name>") and any A question with 127.0.0.2."""

    def __init__(self):
        import dnslib
        self.dnslib = dnslib
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.questions = []
        self.stopping = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        d = self.dnslib
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            req = d.DNSRecord.parse(q)
            name = str(req.q.qname)
            self.questions.append((name, d.QTYPE[req.q.qtype]))
            reply = req.reply()
            if req.q.qtype == d.QTYPE.MX:
                host = ("mx-." if name.startswith("badmx.") else "mx.") + name
                reply.add_answer(d.RR(name, d.QTYPE.MX, rdata=d.MX(host, 10)))
            elif req.q.qtype == d.QTYPE.A:
                reply.add_answer(d.RR(name, d.QTYPE.A, rdata=d.A("127.0.0.2")))
            self.sock.sendto(reply.pack(), peer)

    @property
    def env(self):
        return {"PILLARBOX_DNS": "127.0.0.1:%d" % self.port, "PILLARBOX_DNS_TIMEOUT": "1"}

    def stop(self):
        self.stopping = True
        self.t.join(timeout=5)
        self.sock.close()


def test_hyphen_labels_refused_without_a_query():
    """RFC 5321 4.1.2: a label is Let-dig [Ldh-str]; '-', '-foo', 'foo-' exit 100 and the DNS
    server never hears of them."""
    dns = RecordingDns()
    try:
        r = resolve(dns.env, "good-name.test")  # the server answers and records
        assert r.returncode == 0, r.stderr
        assert lines(r) == [["10", "mx.good-name.test", "127.0.0.2"]]
        assert ("good-name.test.", "MX") in dns.questions
        seen = len(dns.questions)
        for bad in ("-", "-foo", "foo-", "-foo.test", "foo-.test", "a.-b.test", "a.b-.test",
                    "a.b.test-", "x.-.test"):
            r = subprocess.run([prog("mx-resolve"), "--", bad], env=base_env(**dns.env),
                               capture_output=True, timeout=30)
            assert r.returncode == 100, (bad, r.returncode, r.stderr)
            assert b"invalid domain name" in r.stderr, (bad, r.stderr)
        assert dns.questions[seen:] == []
        # an MX host with such a name is skipped, never looked up: no host left, exit 100
        r = resolve(dns.env, "badmx.test")
        assert r.returncode == 100, r.stderr
        assert dns.questions[seen:] == [("badmx.test.", "MX")]
    finally:
        dns.stop()
