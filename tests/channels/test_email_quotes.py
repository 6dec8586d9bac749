"""Quote and signature stripping: the new text of a reply, for the common clients."""

from __future__ import annotations

import pytest

from channels.email.quotes import new_text, unflow

CASES = {
    "gmail": (
        "Sounds good, ship it.\n\nOn Mon, Jun 3, 2024 at 10:02 AM helpdesk <helpdesk@frontdesk.localhost> wrote:\n\n> Shall I deploy?\n> \n",
        "Sounds good, ship it.",
    ),
    "gmail wrapped attribution": (
        "Yes.\n\nOn Mon, Jun 3, 2024 at 10:02 AM Helpdesk Agent <\nhelpdesk@frontdesk.localhost> wrote:\n\n> Shall I deploy?\n",
        "Yes.",
    ),
    "apple mail": (
        "Room 4.\n\nSent from my iPhone\n\n> On 3 Jun 2024, at 10:02, helpdesk <helpdesk@frontdesk.localhost> wrote:\n>\n> Which room?\n",
        "Room 4.",
    ),
    "thunderbird": (
        "On 6/3/24 10:02 AM, helpdesk wrote:\n> Which room?\n\nRoom 4, thanks.\n\n-- \nDave\n",
        "Room 4, thanks.",
    ),
    "outlook rule and header block": (
        "DENY not today\n\n________________________________\nFrom: helpdesk <helpdesk@frontdesk.localhost>\nSent: Monday, June 3, 2024 10:02 AM\nTo: Bob\nSubject: Approval needed\n\nApproval needed: deploy()\n",
        "DENY not today",
    ),
    "outlook original message": (
        "Approve.\n\n-----Original Message-----\nFrom: helpdesk\nSent: Monday\nSubject: x\n\nold text\n",
        "Approve.",
    ),
    "outlook header block without a marker": (
        "Fine by me.\n\nFrom: helpdesk <helpdesk@frontdesk.localhost>\nDate: Monday, June 3, 2024\nTo: Bob\nSubject: Re: x\n\nold\n",
        "Fine by me.",
    ),
    "french gmail": (
        "Oui, merci.\n\nLe lun. 3 juin 2024 à 10:02, helpdesk <helpdesk@frontdesk.localhost> a écrit :\n\n> Question ?\n",
        "Oui, merci.",
    ),
    "german": (
        "Ja, bitte.\n\nAm 03.06.2024 um 10:02 schrieb helpdesk <helpdesk@frontdesk.localhost>:\n> Frage?\n",
        "Ja, bitte.",
    ),
    "inline reply keeps the writer's lines": (
        "> Which room?\nRoom 4.\n> Which day?\nTuesday.\n",
        "Room 4.\nTuesday.",
    ),
    "bottom posting": (
        "On Mon, Jun 3, 2024 at 10:02 AM helpdesk wrote:\n> Which room?\n\nRoom 4.\n",
        "Room 4.",
    ),
    "outlook mobile footer": ("Yes\n\nGet Outlook for Android\n", "Yes"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_new_text(name):
    text, expected = CASES[name]
    assert new_text(text) == expected


def test_a_reply_that_is_all_quote_is_kept_whole():
    text = "> only a quote\n> nothing else"
    assert new_text(text) == text


def test_a_plain_mail_is_unchanged():
    text = "Hello,\n\nthe printer is broken.\nFrom the 4th floor: nothing prints.\n\nErin"
    assert new_text(text) == text


def test_wrote_in_the_middle_of_a_sentence_is_not_an_attribution():
    text = "On Monday I wrote: the printer is broken.\nStill broken."
    assert new_text(text) == text


def test_unflow_joins_soft_breaks_and_keeps_hard_ones():
    flowed = "This is one \nparagraph.\nNew line.\n> quoted \n> soft\n-- \nsig"
    assert unflow(flowed) == "This is one paragraph.\nNew line.\n> quoted soft\n-- \nsig"


def test_unflow_delsp_removes_the_space_of_a_soft_break():
    assert unflow("abc \ndef", delsp=True) == "abcdef"
