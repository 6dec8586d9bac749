"""The README's example channel, loaded the way a newcomer's would be, through a real worker and outbox."""

from __future__ import annotations

from helpers import background, eventually, make_settings
from plugins import EchoAgent

from channels.filedrop import FileDropChannel
from gateway.outbox import Outbox
from gateway.protocols import Channel, Listener
from gateway.runtime import running
from gateway.worker import Worker


def _replies(folder) -> list[str]:
    return sorted(p.read_text() for p in folder.glob("*.txt")) if folder.exists() else []


async def test_a_dropped_file_is_asked_back_and_the_answer_finishes_the_thread(redis_url, prefix, tmp_path):
    settings = make_settings(
        redis_url, prefix, data_dir=tmp_path, channels="channels.filedrop:channel", default_agent="echo"
    )
    async with running(settings, builtins=False, agents=[EchoAgent()]) as rt:
        channel = rt.channels["filedrop"]
        assert isinstance(channel, FileDropChannel) and isinstance(channel, Channel) and isinstance(channel, Listener)
        incoming, replies = tmp_path / "drop" / "in", tmp_path / "drop" / "out" / "ann"
        incoming.mkdir(parents=True)
        (incoming / "ann.1.txt").write_text("order more paper")
        async with background(Worker(rt, "w1"), Outbox(rt, "o1"), _Listening(channel)):
            assert await eventually(lambda: _replies(replies)) == ["you said 'order more paper'?"]
            (incoming / "ann.2.txt").write_text("yes, ten boxes")
            await eventually(lambda: len(_replies(replies)) == 2)
            thread_id = await rt.ingest.thread_for("filedrop", "ann")
            thread = await eventually(lambda: _done(rt, thread_id))
    assert sorted(_replies(replies)) == ["ok: yes, ten boxes", "you said 'order more paper'?"]
    assert not list(incoming.iterdir())  # each file was taken
    assert [e.type for e in thread.events if e.type != "delivery"] == [
        "user_message",
        "request_human_input",
        "human_response",
        "done_for_now",
    ]


async def _done(rt, thread_id):
    thread = await rt.store.load(thread_id)
    return thread if thread is not None and thread.status == "done" else None


class _Listening:
    """A channel's listener as a `background` runner."""

    def __init__(self, channel: Listener) -> None:
        self.channel = channel

    async def run(self, stop) -> None:
        await self.channel.serve(stop)
