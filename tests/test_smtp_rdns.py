"""Port 25's client name in Received: (issue 9: the reverse lookup only where it is used, bounded
in time): smtp-receive with SMTP_RDNS=1 looks the client's address up itself, forward-confirmed,
against a dnsmasq on a loopback port; a resolver that never answers costs at most about 2 s."""
import re
import time


from outbound_helpers import dnsmasq_fixture
from smtp_session import data, expect
from test_dns import FakeDns
from test_smtp import MSG, inst, queue_files, talk  # noqa: F401 (fixture)

RECORDS = [
    "--local=/in-addr.arpa/", "--local=/ip6.arpa/",
    "--host-record=good.rdns.test,192.0.2.7",             # PTR and A agree
    "--host-record=six.rdns.test,2001:db8::7",
    "--ptr-record=8.2.0.192.in-addr.arpa,liar.rdns.test",  # a PTR its A does not confirm
    "--host-record=liar.rdns.test,198.51.100.1",
]


dns = dnsmasq_fixture(*RECORDS)


def received(inst, ip, env):
    """One message from ip through smtp-receive; the first Received: line of the queued file (after the queue's header and envelope)."""
    before = queue_files(inst)
    e = {"TCPREMOTEIP": ip, "TCPLOCALPORT": "25"}
    e.update(env)
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("DATA", 354), data(MSG, 250), env=e)
    [f] = [p for p in queue_files(inst) - before if "/mess/" in p]
    with open(f, "rb") as fh:
        return re.search(rb"Received: [^\n]*", fh.read()).group(0)


def test_confirmed_names_are_in_received(inst, dns):  # noqa: F811
    env = {"SMTP_RDNS": "1", "PILLARBOX_DNS": "127.0.0.1:%d" % dns.port}
    assert received(inst, "192.0.2.7", env) == (
        b"Received: from client.example (good.rdns.test [192.0.2.7])")
    assert received(inst, "2001:db8::7", env) == (
        b"Received: from client.example (six.rdns.test [2001:db8::7])")
    # a PTR that its own A records do not confirm, and an address without a PTR: no name
    assert received(inst, "192.0.2.8", env) == b"Received: from client.example ([192.0.2.8])"
    assert received(inst, "192.0.2.9", env) == b"Received: from client.example ([192.0.2.9])"
    # off (every port but 25 runs without it): no name even where one exists
    assert received(inst, "192.0.2.7", {"PILLARBOX_DNS": "127.0.0.1:%d" % dns.port}) == (
        b"Received: from client.example ([192.0.2.7])")


def test_a_dead_resolver_costs_at_most_two_seconds(inst):  # noqa: F811
    silent = FakeDns("silent")
    try:
        env = {"SMTP_RDNS": "1", "PILLARBOX_DNS": "127.0.0.1:%d" % silent.port}
        t = time.monotonic()
        line = received(inst, "192.0.2.7", env)
        took = time.monotonic() - t
        assert line == b"Received: from client.example ([192.0.2.7])"
        assert silent.queries >= 1 and took < 4, (silent.queries, took)
        # loopback is "localhost" without asking anyone
        n = silent.queries
        assert received(inst, "127.0.0.1", env) == (
            b"Received: from client.example (localhost [127.0.0.1])")
        assert silent.queries == n
    finally:
        silent.stop()
