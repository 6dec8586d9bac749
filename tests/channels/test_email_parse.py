"""Reading real-world-shaped mail (tests/channels/mail/*.eml): headers, body, attachments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.headers import read_headers
from channels.email.htmltext import html_to_text
from channels.email.parse import parse
from channels.email.quotes import new_text

MAIL = Path(__file__).parent / "mail"
OURS = "<th_018f9a2b3c4d5e6f708192a3b4-1@frontdesk.localhost>"


def raw(name: str) -> bytes:
    """A corpus message as it travels over SMTP: CRLF line ends."""
    return (MAIL / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def read(name: str):
    data = raw(name)
    return read_headers(data, "sender@example.com"), parse(data)


@pytest.mark.parametrize(
    "name, sender, expected",
    [
        (
            "gmail_reply.eml",
            "alice.example@gmail.com",
            "Yes, it's the printer on the 3rd floor — the one by the kitchen.\n\nThanks!",
        ),
        ("outlook_reply.eml", "bob.brown@contoso.com", "APPROVE\n\nThat’s fine, go ahead with 1.4.2.\n\nBob"),
        (
            "apple_mail_reply.eml",
            "carol@icloud.com",
            "The laptop is a 2021 MacBook Pro, and the problem started after the latest update.",
        ),
        (
            "thunderbird_reply.eml",
            "dave@example.org",
            "Room B, please. The one with the big whiteboard and the window that does not open.",
        ),
    ],
)
def test_replies_from_common_clients_give_the_new_text_only(name, sender, expected):
    headers, mail = read(name)
    assert headers.sender == sender
    assert headers.in_reply_to == [OURS] or name == "outlook_reply.eml"
    assert new_text(mail.text) == expected
    assert len(mail.text) > len(expected)  # the full body, history included, stays available


def test_html_only_base64_is_converted_to_text():
    headers, mail = read("html_only_base64.eml")
    assert mail.html
    assert "alert" not in mail.text and "font-family" not in mail.text
    text = new_text(mail.text)
    assert text.startswith("Hello,\n\nThe printer on the 4th floor prints blank pages since Monday.")
    assert "- turning it off and on\n- a new toner cartridge" in text
    assert "the wiki page (https://wiki.example.com/printers/4f)" in text
    assert "describe the problem" not in text  # the blockquote was history


@pytest.mark.parametrize(
    "name, subject, body",
    [
        (
            "iso_8859_1_qp.eml",
            "Kaffeemaschine im 2. Stock (Grüße)",
            "Grüße aus Köln! Die Kaffeemaschine im 2. Stock ist kaputt",
        ),
        ("windows_1252_mislabeled.eml", "Password reset", "Could you “reset” my password – it expired … again."),
        ("shift_jis_base64.eml", "プロジェクターの件", "会議室のプロジェクターが映りません。"),
        (
            "eight_bit_headers.eml",
            "Drucker im Büro druckt nur Müll",
            "Der Drucker im Büro druckt seit heute früh nur Zeichensalat.",
        ),
    ],
)
def test_charsets_and_encoded_words(name, subject, body):
    headers, mail = read(name)
    assert headers.subject == subject
    assert body in mail.text
    assert not mail.problems


def test_encoded_word_display_names_do_not_hide_the_address():
    headers, _ = read("shift_jis_base64.eml")
    assert headers.sender == "taro@example.co.jp"
    headers, _ = read("iso_8859_1_qp.eml")
    assert headers.sender == "francois@example.de"


def test_nested_multiparts_give_the_body_and_every_attachment():
    headers, mail = read("nested_multipart.eml")
    assert headers.subject == "Invoice question – résumé attached"
    assert mail.text == "Hi, please check the attached invoice and résumé.\nThe logo is inline."
    found = [(a.filename, a.content_type) for a in mail.attachments]
    assert found == [
        (None, "image/png"),
        ("invoice-2024-06.pdf", "application/pdf"),
        ("résumé.pdf", "application/octet-stream"),
    ]
    assert mail.attachments[1].data.startswith(b"%PDF-1.4")


def test_malformed_headers_are_read_as_far_as_they_go():
    headers, mail = read("malformed_headers.eml")
    assert headers.sender == "broken@example.com"  # an unclosed angle bracket
    assert headers.message_id.endswith("@frontdesk.invalid>")  # none given: one from the content
    assert headers.message_id == read_headers(raw("malformed_headers.eml")).message_id  # stable for dedupe
    assert mail.text.startswith("Hello, my vpn is broken.")  # broken base64, unknown charset
    assert mail.problems


def test_a_missing_message_id_is_derived_from_the_content():
    a = read_headers(b"From: a@example.com\r\n\r\none\r\n")
    b = read_headers(b"From: a@example.com\r\n\r\ntwo\r\n")
    assert a.message_id != b.message_id


@pytest.mark.parametrize(
    "name, reason",
    [
        ("auto_reply.eml", "auto_submitted"),
        ("bounce.eml", "bounce"),
        ("list_mail.eml", "precedence"),
    ],
)
def test_automatic_mail_is_recognised(name, reason):
    assert read_headers(raw(name), "sender@example.com").robot == reason


@pytest.mark.parametrize(
    "headers, mail_from, reason",
    [
        ("From: a@example.com\r\n", "<>", "bounce"),
        ("From: a@example.com\r\nReturn-Path: <>\r\n", "a@example.com", "bounce"),
        ("From: a@example.com\r\nAuto-Submitted: auto-generated\r\n", "a@example.com", "auto_submitted"),
        ("From: a@example.com\r\nAuto-Submitted: no\r\n", "a@example.com", None),
        ("From: a@example.com\r\nPrecedence: bulk\r\n", "a@example.com", "precedence"),
        ("From: a@example.com\r\nPrecedence: junk\r\n", "a@example.com", "precedence"),
        ("From: a@example.com\r\nList-Id: <x.example.com>\r\n", "a@example.com", "list"),
        ("From: a@example.com\r\nX-Autoreply: yes\r\n", "a@example.com", "auto_reply"),
        ("From: MAILER-DAEMON@example.com\r\n", "x@example.com", "robot_sender"),
        ("From: postmaster@example.com\r\n", "x@example.com", "robot_sender"),
        ("From: no-reply@example.com\r\n", "x@example.com", "robot_sender"),
        ("From: noreply+news@example.com\r\n", "x@example.com", "robot_sender"),
        ("From: donotreply@example.com\r\n", "x@example.com", "robot_sender"),
        ("From: replying.person@example.com\r\n", "x@example.com", None),
    ],
)
def test_loop_protection_headers(headers, mail_from, reason):
    assert read_headers(f"{headers}Subject: x\r\n\r\nbody\r\n".encode(), mail_from).robot == reason


def test_a_bounce_wrapped_in_multipart_mixed_is_found_by_the_full_parse():
    headers, mail = read("wrapped_bounce.eml")
    assert headers.robot is None
    assert mail.report


def test_threading_headers_and_the_root():
    data = (
        b"From: a@example.com\r\nMessage-ID: <c@x>\r\nIn-Reply-To: <b@x> (a's message)\r\n"
        b"References: <a@x>\r\n <b@x>\r\nSubject: Re: hi\r\n\r\nbody\r\n"
    )
    headers = read_headers(data, "a@example.com")
    assert headers.references == ["<a@x>", "<b@x>"]
    assert headers.root == "<a@x>"
    assert headers.ancestors() == ["<b@x>", "<a@x>"]
    assert read_headers(b"From: a@example.com\r\nMessage-ID: <solo@x>\r\n\r\nx\r\n").root == "<solo@x>"


def test_huge_headers_are_trimmed_not_choked_on():
    refs = " ".join(f"<r{i}@x>" for i in range(2000))
    received = "".join(
        f"Received: from hop{i}.example.com by hop{i + 1}.example.com; Mon, 3 Jun 2024 10:00:00 +0000\r\n"
        for i in range(2000)
    )
    data = f"{received}From: a@example.com\r\nReferences: {refs}\r\nSubject: {'long ' * 3000}\r\n\r\nbody\r\n".encode()
    headers = read_headers(data, "a@example.com")
    assert headers.references[0] == "<r0@x>" and headers.references[-1] == "<r1999@x>"
    assert len(headers.references) == 30
    assert len(headers.subject) <= 998


def test_html_to_text_handles_broken_markup():
    assert html_to_text("<p>unclosed <b>bold <i>both</p><div>next") == "unclosed bold both\n\nnext"
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>") == "a b"
    assert html_to_text("<pre>  keep\n    indent</pre>") == "keep\n    indent"


def test_a_blank_plain_part_gives_way_to_the_html_one():
    data = (
        b'From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n \r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Only here</p>\r\n--b--\r\n"
    )
    mail = parse(data)
    assert mail.text == "Only here" and mail.html and mail.attachments == []


@pytest.mark.parametrize(
    "markup",
    [
        # Gmail
        '<div dir="ltr">Tuesday works.</div><br><div class="gmail_quote"><div class="gmail_attr">On Mon, Jun 3, 2024 at 10:02 AM'
        ' helpdesk &lt;helpdesk@frontdesk.localhost&gt; wrote:<br></div><blockquote class="gmail_quote">Which day?</blockquote></div>',
        # Outlook on the web
        '<div>Tuesday works.</div><hr><div id="divRplyFwdMsg"><b>From:</b> helpdesk<br><b>Sent:</b> Monday<br>'
        "<b>To:</b> Bob<br><b>Subject:</b> Which day?</div><div>Which day?</div>",
        # Apple Mail
        '<div>Tuesday works.<br><div><br><blockquote type="cite"><div>On 3 Jun 2024, at 10:02, helpdesk wrote:</div>'
        "<div>Which day?</div></blockquote></div></div>",
    ],
)
def test_html_replies_from_common_clients_strip_to_the_new_text(markup):
    assert new_text(html_to_text(markup)) == "Tuesday works."


CORPUS = sorted(p.name for p in MAIL.glob("*.eml"))


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.sampled_from(CORPUS), cuts=st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=12)), max_size=8))
def test_damaged_mail_never_breaks_the_reader(name, cuts):
    data = bytearray(raw(name))
    for at, junk in cuts:
        at = min(at, len(data))
        data[at : at + len(junk)] = junk
    headers = read_headers(bytes(data), "a@example.com")
    mail = parse(bytes(data))
    # Whatever came out is text that can be stored as JSON.
    (headers.subject + headers.sender + headers.message_id + mail.text + new_text(mail.text)).encode("utf-8")


def test_nesting_too_deep_for_the_parser_still_reads_the_text():
    levels = [b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    levels += [b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i) for i in range(1, 3000)]
    mail = parse(b"".join(levels) + b"--b2999\r\nContent-Type: text/plain\r\n\r\ndeep inside\r\n")
    assert "deep inside" in mail.text and mail.problems
