"""Messages of real-world shapes for the MIME tests (stored as deliver-maildir stores them: LF
line ends, a few with CRLF). Each entry: (name, bytes). Used by test_mime_dovecot.py (against
Dovecot) and as the fuzz seed corpus (fuzz/corpus/mime is written from it)."""

B64_PNG = (b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
           b"RU5ErkJggg==")


def _msgs():
    m = []
    m.append(("plain", b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: plain\n"
              b"Date: Mon, 7 Dec 2026 09:15:00 +0100\nMessage-ID: <p1@example.org>\n\n"
              b"Hello Bob,\nthis is plain text.\n"))
    m.append(("no-final-newline", b"From: a@b.c\nSubject: x\n\nno newline at end"))
    m.append(("no-body", b"From: a@b.c\nSubject: only header\n"))
    m.append(("no-header-end", b"From: a@b.c\nSubject: no empty line"))
    m.append(("empty-body", b"From: a@b.c\nSubject: empty\n\n"))
    m.append(("no-content-type-mime", b"MIME-Version: 1.0\nFrom: a@b.c\nSubject: x\n"
              b"Content-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9\n"))
    m.append(("cte-without-mime", b"From: a@b.c\nContent-Transfer-Encoding: base64\n"
              b"Content-Disposition: inline\n\naGVsbG8=\n"))
    m.append(("alternative", b"From: Alice <alice@example.org>\nTo: bob@example.net\n"
              b"Subject: alt\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/alternative; boundary=\"=_alt_1\"\n\n"
              b"This is a multi-part message in MIME format.\n\n--=_alt_1\n"
              b"Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n"
              b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\n\n--=_alt_1\n"
              b"Content-Type: text/html; charset=UTF-8\n"
              b"Content-Transfer-Encoding: quoted-printable\n\n"
              b"<html><body><p>Gr=C3=BC=C3=9Fe aus K=C3=B6ln</p></body></html>=\n\n"
              b"--=_alt_1--\n\nepilogue text\n"))
    m.append(("mixed-attachment", b"From: Carol <carol@example.com>\nTo: Dave <dave@example.com>, "
              b"Eve <eve@example.com>\nCc: team@example.com\nSubject: report\n"
              b"Date: Tue, 8 Dec 2026 17:00:00 -0500\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed;\n boundary=\"----=_Part_0_12345.67890\"\n\n"
              b"------=_Part_0_12345.67890\nContent-Type: multipart/alternative; boundary=inner\n\n"
              b"--inner\nContent-Type: text/plain; charset=us-ascii\n\nsee attached\n--inner\n"
              b"Content-Type: text/html; charset=us-ascii\n\n<p>see attached</p>\n--inner--\n\n"
              b"------=_Part_0_12345.67890\nContent-Type: image/png; name=\"dot.png\"\n"
              b"Content-Transfer-Encoding: base64\nContent-ID: <dot@example.com>\n"
              b"Content-Disposition: attachment; filename=\"dot.png\"; size=68\n\n"
              + B64_PNG + b"\n------=_Part_0_12345.67890\n"
              b"Content-Type: application/pdf; name=report.pdf\n"
              b"Content-Disposition: attachment;\n filename=report.pdf\n"
              b"Content-Transfer-Encoding: base64\nContent-Description: the quarterly report\n"
              b"Content-Language: en-GB\nContent-Location: https://example.com/r.pdf\n"
              b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\nJVBERi0xLjQKJcOkw7zDtsOfCg==\n"
              b"------=_Part_0_12345.67890--\n"))
    m.append(("forwarded-rfc822", b"From: f@example.org\nTo: g@example.org\nSubject: Fwd: hello\n"
              b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\n"
              b"Content-Type: text/plain\n\nForwarded message below.\n--outer\n"
              b"Content-Type: message/rfc822\nContent-Disposition: inline\n\n"
              b"From: \"Original Sender\" <orig@example.net>\nTo: f@example.org\n"
              b"Subject: hello\nDate: 1 Dec 2026 08:00 GMT\nMessage-ID: <orig@example.net>\n"
              b"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=in2\n\n"
              b"--in2\nContent-Type: text/plain\n\nhi there\n--in2\nContent-Type: text/html\n\n"
              b"<b>hi there</b>\n--in2--\n\n--outer--\n"))
    m.append(("rfc822-simple", b"From: a@b.c\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n"
              b"From: inner@b.c\nSubject: inner plain\n\nbody of inner\n"))
    m.append(("rfc822-empty", b"From: a@b.c\nContent-Type: message/rfc822\n\n"))
    m.append(("digest", b"From: list@example.org\nSubject: digest\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/digest; boundary=dig\n\n--dig\n\n"
              b"From: one@example.org\nSubject: one\n\nfirst\n--dig\n\n"
              b"From: two@example.org\nSubject: two\n\nsecond\n--dig\nContent-Type: text/plain\n\n"
              b"explicit text\n--dig--\n"))
    m.append(("missing-final-boundary", b"From: a@b.c\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\n"
              b"one\n--zz\nContent-Type: text/plain\n\ntwo, never closed\n"))
    m.append(("missing-boundary-param", b"From: a@b.c\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed\n\n--zz\nContent-Type: text/plain\n\nx\n--zz--\n"))
    m.append(("boundary-never-used", b"From: a@b.c\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed; boundary=nope\n\njust text\n"))
    m.append(("boundary-in-header", b"Content-Type: multipart/mixed; boundary=A\n\n--A\n"
              b"Content-Type: text/plain\n--A\nContent-Type: text/plain\n\nb\n--A--\n"))
    m.append(("nested-prefix-boundaries", b"Content-Type: multipart/mixed; boundary=abc\n\n"
              b"--abc\nContent-Type: multipart/alternative; boundary=abcdef\n\n--abcdef\n\n"
              b"inner one\n--abcdef\n\ninner two\n--abcdef--\n--abc\n\nouter two\n--abc--\n"))
    m.append(("outer-boundary-closes-inner", b"Content-Type: multipart/mixed; boundary=O\n\n--O\n"
              b"Content-Type: multipart/alternative; boundary=I\n\n--I\n\ninner, unclosed\n"
              b"--O\n\nsecond outer\n--O--\n"))
    m.append(("preamble-epilogue", b"MIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed; boundary=b\n\n"
              b"preamble line 1\npreamble line 2\n--b\n\npart\n--b--\nepilogue 1\nepilogue 2\n"))
    m.append(("boundary-trailing-junk", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; "
              b"boundary=b\n\n--b   \n\npart one\n--b trailing\n\npart two\n--b--  junk\n"))
    m.append(("bad-base64", b"MIME-Version: 1.0\nContent-Type: text/plain\n"
              b"Content-Transfer-Encoding: base64\n\n!!!not base64 at all***\n"))
    m.append(("bad-qp", b"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
              b"Content-Transfer-Encoding: quoted-printable\n\nbroken =ZZ and =4 and = at end=\n"
              b"caf=E9\n"))
    m.append(("unknown-cte", b"MIME-Version: 1.0\nContent-Type: application/octet-stream\n"
              b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n`\nend\n"))
    m.append(("cte-with-comment", b"MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit (plain)\n"
              b"Content-Type: text/plain (a comment); charset=\"us-ascii\" (another)\n\nx\n"))
    m.append(("rfc2231", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=r\n\n--r\n"
              b"Content-Type: application/octet-stream;\n name*=utf-8''%E2%82%AC%20rates.txt\n"
              b"Content-Disposition: attachment;\n filename*0*=UTF-8''%E2%82%AC%20ra;\n"
              b" filename*1=\"tes 100%.txt\"\n\ndata\n--r\n"
              b"Content-Type: text/plain; title*0=\"long \"; title*1=\"title\"; "
              b"title*3=\"gap\"\n\nx\n--r\n"
              b"Content-Type: text/plain; charset*=iso-8859-1'en'%E9t%E9\n\ny\n--r--\n"))
    m.append(("encoded-words", b"From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <joerg@example.de>\n"
              b"To: =?iso-8859-1?q?Fran=E7ois?= <f@example.fr>, \"=?utf-8?q?quoted?=\" <q@x.y>\n"
              b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?Q?_aus?=\n =?UTF-8?B?IEvDtmxu?=\n"
              b"Date: Wed, 9 Dec 2026 12:00:00 +0000\n\nbody\n"))
    m.append(("8bit-headers", b"From: J\xc3\xb6rg <j@example.de>\nSubject: \xe9t\xe9 latin-1 raw\n"
              b"To: \xe4\xf6\xfc <u@example.de>\nMIME-Version: 1.0\n"
              b"Content-Type: text/plain; charset=\"iso-8859-1\"; name=\"\xe9.txt\"\n"
              b"Content-Description: r\xc3\xa9sum\xc3\xa9\n\n\xe9t\xe9\n"))
    m.append(("folded-headers", b"From: a@b.c\nSubject: this subject\n\tis folded\n  twice\n"
              b"Message-ID:\n <folded@example.org>\nIn-Reply-To: <x@y>\n\t<z@w>\n"
              b"Date: Thu, 10 Dec 2026\n 10:00:00 +0200\n"
              b"Content-Type: text/plain;\n\tcharset=utf-8;\n\tformat=flowed\n"
              b"Content-Description: folded\n description\n\nbody\n"))
    m.append(("header-without-colon", b"From: a@b.c\nThis line has no colon\nSubject: after\n"
              b"Content-Type: text/plain\n\nbody\n"))
    m.append(("duplicate-fields", b"From: first@b.c\nFrom: second@b.c\nSubject: one\n"
              b"Subject: two\nMIME-Version: 1.0\nContent-Type: text/plain; charset=a\n"
              b"Content-Type: text/html; charset=b\n\nbody\n"))
    m.append(("addresses", b"From: \"Doe, John\" <john@example.com>\n"
              b"To: a@b.c (Comment Name), <bare@example.com>, \"q\\\\\\\"x\" <q@e.f>,\n"
              b" Group One: m1@g.h, M2 <m2@g.h>;, EmptyGroup:;, broken@, @nolocal.x,\n"
              b" <@r1.x,@r2.y:routed@e.x>, \"unterminated <u@v.w>\n"
              b"Cc: undisclosed-recipients:;\nBcc: \nReply-To: r@e.f\nSender: s@e.f\n\nx\n"))
    m.append(("crlf-stored", b"From: a@b.c\r\nSubject: crlf\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n"
              b"Content-Type: text/plain\r\n\r\nline1\r\nline2\r\n--c--\r\n"))
    m.append(("mixed-line-ends", b"From: a@b.c\r\nSubject: mixed\n\nline1\r\nline2\nline3\r\n"))
    m.append(("content-type-broken", b"MIME-Version: 1.0\nContent-Type: text\n\nx\n"))
    m.append(("content-type-empty", b"MIME-Version: 1.0\nContent-Type: \n\nx\n"))
    m.append(("content-type-junk", b"MIME-Version: 1.0\nContent-Type: ;;; garbage\n\nx\n"))
    m.append(("content-type-no-subtype-param", b"MIME-Version: 1.0\n"
              b"Content-Type: application/; name=x\n\nx\n"))
    m.append(("uppercase-types", b"MIME-Version: 1.0\nContent-Type: MULTIPART/MIXED; "
              b"BOUNDARY=\"Up\"\n\n--Up\nContent-Type: TEXT/PLAIN; CHARSET=UTF-8\n"
              b"Content-Transfer-Encoding: QUOTED-PRINTABLE\n\nA=3DB\n--Up--\n"))
    m.append(("params-odd", b"MIME-Version: 1.0\nContent-Type: text/plain; charset = \"utf-8\" ;"
              b" format=flowed; delsp=yes; empty=; =novalue; name==?utf-8?b?w6k=?=\n\nx\n"))
    m.append(("quotes-in-values", b"MIME-Version: 1.0\nContent-Type: application/x-y; "
              b"name=\"a \\\"b\\\" c\"; other=\"back\\\\slash\"\n"
              b"Content-ID: <\"q\"@x>\nContent-Description: \"\"\"\"\"\"\n\nx\n"))
    m.append(("deep-nesting", (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=d0\n\n"
              + b"".join(b"--d%d\nContent-Type: multipart/mixed; boundary=d%d\n\n" % (i, i + 1)
                         for i in range(12))
              + b"--d12\nContent-Type: text/plain\n\ndeep\n"
              + b"".join(b"--d%d--\n" % i for i in range(12, -1, -1)))))
    m.append(("many-parts", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=m\n\n"
              + b"".join(b"--m\nContent-Type: text/plain\n\npart %d\n" % i for i in range(40))
              + b"--m--\n"))
    m.append(("empty-multipart", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; "
              b"boundary=e\n\n--e--\n"))
    m.append(("part-without-header", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; "
              b"boundary=h\n\n--h\n\nno header at all\n--h\nno empty line, just text\n--h--\n"))
    m.append(("multipart-signed", b"From: s@example.org\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/signed; micalg=pgp-sha256;\n"
              b" protocol=\"application/pgp-signature\"; boundary=\"sig\"\n\n"
              b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\n--sig\n"
              b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
              b"signed text\n--sig\n"
              b"Content-Type: application/pgp-signature; name=\"signature.asc\"\n"
              b"Content-Description: OpenPGP digital signature\n"
              b"Content-Disposition: attachment; filename=\"signature.asc\"\n\n"
              b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n--sig--\n"))
    m.append(("long-header-line", b"From: a@b.c\nSubject: " + b"x" * 5000 + b"\nX-Long: "
              + b"y " * 3000 + b"\n\nbody\n"))
    m.append(("dates", b"Date: 5 Jan 99 23:59 EST\nFrom: a@b.c\n\nx\n"))
    m.append(("nul-in-body", b"From: a@b.c\nContent-Type: text/plain\n\nnul\x00byte\n"))
    m.append(("language-location", b"MIME-Version: 1.0\nContent-Type: text/plain\n"
              b"Content-Language: de-DE , en (English), fr\nContent-Location:\n http://x/\n y\n"
              b"Content-Disposition: INLINE\n\nx\n"))
    m.append(("message-in-digest-in-mixed", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; "
              b"boundary=a\n\n--a\nContent-Type: multipart/digest; boundary=b\n\n--b\n\n"
              b"Subject: d1\nContent-Type: multipart/alternative; boundary=c\n\n--c\n\nc1\n"
              b"--c--\n--b--\n--a--\n"))
    for i, ct in enumerate([b"text/", b"/plain", b"text/ ; a=b", b"text;a=b", b"text/plain/x; a=b",
                            b"app/x y; a=b", b"image/(c)png; a=b", b" (c) image / png ; a=b",
                            b"multipart/mixed; boundary=\"\"", b"Multipart/Alternative"]):
        m.append(("content-type-%d" % i, b"MIME-Version: 1.0\nContent-Type: " + ct +
                  b"\n\n--\nx\n--\n"))
    m.append(("rfc822-in-rfc822", b"Content-Type: message/rfc822\n\nSubject: level 1\n"
              b"Content-Type: message/rfc822\n\nSubject: level 2\nContent-Type: multipart/mixed;"
              b" boundary=q\n\n--q\n\ndeepest\n--q--\n"))
    m.append(("rfc822-without-mime-version", b"MIME-Version: 1.0\nContent-Type: multipart/mixed; "
              b"boundary=w\n\n--w\nContent-Type: message/rfc822\n\nSubject: inner\n"
              b"Content-Transfer-Encoding: base64\nContent-Disposition: attachment\n\n"
              b"aGk=\n--w--\n"))
    m.append(("crlf-nested", b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
              b"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\nContent-Type: "
              b"multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--i\r\n\r\nb\r\n"
              b"--i--\r\n\r\n--o--\r\n"))
    m.append(("empty-sender-reply-to", b"From: Real Name <user@domain>\nSender: \n"
              b"Reply-To:  (only a comment)\nTo: \nSubject: empty fields\n\nx\n"))
    m.append(("address-comments", b"From: <user-from (comment)@ (comment) domain.org>\n"
              b"To: user (Real Name) @ example . org, (lead) x@y (trail)\n\nx\n"))
    return m


MESSAGES = _msgs()

# Sections fetched for every message (some do not exist in a given message: compared too).
SECTIONS = ["", "HEADER", "TEXT", "1", "2", "3", "1.1", "1.2", "2.1", "2.2", "1.1.1", "2.1.1",
            "1.MIME", "2.MIME", "1.1.MIME", "2.1.MIME", "2.HEADER", "2.TEXT", "1.HEADER",
            "2.1.HEADER", "HEADER.FIELDS (From Subject)", "HEADER.FIELDS.NOT (Subject To)",
            "2.HEADER.FIELDS (Subject)", "1.TEXT"]
# Partial fetches (the origin and count count wire octets, CRLF).
PARTIALS = ["BODY[]<0.10>", "BODY[TEXT]<3.7>", "BODY[1]<5.100000>", "BODY[2]<1.1>",
            "BODY[HEADER.FIELDS (From Subject)]<2.9>", "BODY[TEXT]<100000.5>"]
BINARY_SECTIONS = ["1", "2", "3", "1.1", "2.1", "2.2"]
