"""Every Redis key frontdesk uses, built in one place.

All keys share the prefix. Work is split into partitions: a thread belongs to the
partition of its id, a conversation to the partition of its key, and every key of
a partition carries the same hash tag (`{p3}`) so that on a Redis Cluster a
partition lives on one slot and every multi-key script stays legal.
"""

from __future__ import annotations

import zlib

from gateway.events import new_id


class Keys:
    """Key names for one deployment (prefix) and partition count."""

    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions

    # --- placement
    def partition_of(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self.partitions

    def part(self, p: int) -> str:
        return f"{self.prefix}:{{p{p}}}"

    def thread_partition(self, thread_id: str) -> int:
        return self.partition_of(thread_id)

    def conversation_partition(self, channel: str, conversation: str) -> int:
        return self.partition_of(f"{channel}/{conversation}")

    def new_thread_id(self, partition: int | None = None) -> str:
        """A fresh thread id, placed in `partition` when given (about P tries)."""
        while True:
            tid = new_id("th_")
            if partition is None or self.thread_partition(tid) == partition:
                return tid

    # --- streams (per partition)
    def inbound(self, p: int) -> str:
        return f"{self.part(p)}:inbound"

    def outbox(self, p: int) -> str:
        return f"{self.part(p)}:outbox"

    def dlq(self, p: int) -> str:
        return f"{self.part(p)}:dlq"

    def delayed(self, p: int, stream: str) -> str:
        """Entries waiting for their time before they go (back) onto `stream`."""
        return f"{self.part(p)}:delayed:{stream}"

    def attempts(self, p: int) -> str:
        return f"{self.part(p)}:attempts"

    # --- threads
    def _t(self, thread_id: str) -> str:
        return f"{self.part(self.thread_partition(thread_id))}"

    def thread(self, thread_id: str) -> str:
        return f"{self._t(thread_id)}:thread:{thread_id}"

    def events(self, thread_id: str) -> str:
        return f"{self._t(thread_id)}:events:{thread_id}"

    def inbox(self, thread_id: str) -> str:
        return f"{self._t(thread_id)}:inbox:{thread_id}"

    def lease(self, thread_id: str) -> str:
        return f"{self._t(thread_id)}:lease:{thread_id}"

    def index(self, p: int) -> str:
        """All threads of a partition, scored by last update (ms)."""
        return f"{self.part(p)}:threads"

    def status_index(self, p: int, status: str) -> str:
        return f"{self.part(p)}:status:{status}"

    def facet_index(self, p: int, facet: str, value: str) -> str:
        """Threads of a partition with one agent, origin channel or person, scored like `index`."""
        return f"{self.part(p)}:by:{facet}:{value}"

    def id_index(self, p: int) -> str:
        """Every thread id of a partition, all scored 0, so ZRANGEBYLEX finds an id prefix."""
        return f"{self.part(p)}:ids"

    # --- conversations and dedupe
    def conversation(self, channel: str, conversation: str) -> str:
        p = self.conversation_partition(channel, conversation)
        return f"{self.part(p)}:conv:{channel}/{conversation}"

    def seen(self, p: int, channel: str, inbound_id: str) -> str:
        return f"{self.part(p)}:seen:{channel}/{inbound_id}"

    def sent(self, p: int, outbound_id: str) -> str:
        return f"{self.part(p)}:sent:{outbound_id}"

    def unsettled(self, thread_id: str) -> str:
        """A thread's outbound messages not yet sent, failed or ambiguous, scored by event index."""
        return f"{self._t(thread_id)}:unsettled:{thread_id}"

    def parked(self, thread_id: str) -> str:
        """A thread's messages parked behind an earlier one: outbound id -> their member in the delayed set."""
        return f"{self._t(thread_id)}:parked:{thread_id}"

    def sending(self, p: int, outbound_id: str) -> str:
        """Set while a message that must not be repeated is with its provider (gateway.outbox)."""
        return f"{self.part(p)}:sending:{outbound_id}"

    def rate(self, channel: str, sender: str) -> str:
        """A sender's messages in the rate window (gateway.store.ingest), one key per sender across partitions.

        In no partition's hash tag: on a Cluster it lives on a slot of its own, and the
        ingest counts there in a script of its own.
        """
        return f"{self.prefix}:rate:{channel}/{sender}"

    # --- global, single-key
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def deliveries(self, minute: int) -> str:
        """Delivery outcomes in one minute (epoch minutes): a hash of `channel:status` -> count."""
        return f"{self.prefix}:deliveries:{minute}"

    def models(self) -> str:
        """Each model's server and the request shape it settled on: a hash of model -> JSON."""
        return f"{self.prefix}:models"

    def model_errors(self, model: str) -> str:
        """A model's last errors, newest first (a capped list of JSON)."""
        return f"{self.prefix}:model-errors:{model}"

    def key(self, *parts: str) -> str:
        """A free-standing key under the prefix (locks, channel state)."""
        return ":".join((self.prefix, *parts))
