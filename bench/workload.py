"""The live workload of bench/suite.py: synthetic customers cloned from The Complete Journey, offered through Kafka.

Each synthetic customer replays one household's baskets (its events of one
timestamp, in the file's order) with a new id, ``h<household>~<clone>``, and
every event is stamped with the time it is produced: the basket and group mix
are The Complete Journey's, the number of customers and the rate are ours.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np


class CloneWorkload:
    """``customers`` synthetic customers cloned from The Complete Journey's households, basket by basket.

    Customer ``c`` is clone ``c // H`` of household ``c % H`` (households
    sorted by id), named ``h<household>~<clone>``. Round ``r`` gives every
    customer (in a seeded random order) its household's ``r``-th basket (the
    household's events of one timestamp, in the file's order); a customer
    whose household has fewer baskets sits the round out. After the last
    round the rounds start again.

    >>> from schemas.events import EventRecord
    >>> rec = lambda u, i, t: EventRecord(u, i, 0, t, f"{u}{i}{t}", 1.0, 100, "")
    >>> w = CloneWorkload([rec("1", "a", 5), rec("1", "b", 5), rec("2", "c", 7), rec("1", "d", 9)], 4, seed=1)
    >>> sorted({u for u, _ in w.events(rounds=2)})
    ['h1~0', 'h1~1', 'h2~0', 'h2~1']
    >>> [r.item_id for u, r in w.events(rounds=2) if u == "h1~1"]
    ['a', 'b', 'd']
    """

    def __init__(self, records: list, customers: int, seed: int = 0):
        baskets: dict[str, list[list]] = {}
        last_ts: dict[str, int] = {}
        for rec in records:
            own = baskets.setdefault(rec.user_id, [])
            if not own or last_ts[rec.user_id] != rec.ts_ms:
                own.append([])
                last_ts[rec.user_id] = rec.ts_ms
            own[-1].append(rec)
        self.households = sorted(baskets)
        self.baskets = [baskets[h] for h in self.households]
        self.customers = customers
        self.order = np.random.default_rng(seed).permutation(customers)
        self.rounds = max(len(b) for b in self.baskets)

    def name(self, customer: int) -> str:
        """The id of synthetic customer ``customer``."""
        h = len(self.households)
        return f"h{self.households[customer % h]}~{customer // h}"

    def events(
        self, first: int = 0, last: int | None = None, rounds: int | None = None
    ) -> Iterator[tuple[str, object]]:
        """(customer id, household's EventRecord) of customers ``first..last`` (by number), round after round.

        ``rounds`` None: endless (the rounds start again after the last one).
        """
        last = self.customers if last is None else last
        order = [int(c) for c in self.order if first <= c < last]
        h = len(self.households)
        names = {c: self.name(c) for c in order}
        r = 0
        while rounds is None or r < rounds:
            rr = r % self.rounds
            for c in order:
                own = self.baskets[c % h]
                if rr < len(own):
                    user = names[c]
                    for rec in own[rr]:
                        yield user, rec
            r += 1


def payload(user: str, rec, now_ms: int, event_id: str) -> bytes:
    """The event on the wire: the household's item, type, quantity and value, the customer's id, ``now_ms``."""
    from schemas.events import TYPE_NAMES

    value = {
        "user_id": user,
        "item_id": rec.item_id,
        "type": TYPE_NAMES[rec.type_index],
        "timestamp": now_ms,
        "event_id": event_id,
        "quantity": rec.quantity,
        "value": rec.value_cents / 100,
    }
    return json.dumps(value).encode()


class Wire:
    """``payload``'s bytes for event ids ``<run>-<n>``, from fragments of each record and customer made once.

    The generator shares the machine with the broker and the streams it
    measures: ``json.dumps`` of every event was a third of its ~15 µs an event.
    A record's fragments are kept with the record itself, so its ``id`` cannot
    be reused while they are.

    >>> from schemas.events import EventRecord
    >>> rec = EventRecord("1", 'it"em', 0, 5, "x", 2.5, 199, "")
    >>> Wire("r")("h1~0", rec, 1700000000000, 7) == payload("h1~0", rec, 1700000000000, "r-7")
    True
    """

    def __init__(self, run: str) -> None:
        self._run = json.dumps(run)[:-1] + "-"  # the event id's opening quote and prefix
        self._records: dict[int, tuple[object, str, str]] = {}
        self._users: dict[str, str] = {}

    def __call__(self, user: str, rec, now_ms: int, n: int) -> bytes:
        """The wire bytes of ``rec`` as customer ``user``'s, the offer's event number ``n``, produced at ``now_ms``."""
        parts = self._records.get(id(rec))
        if parts is None:
            parts = self._records[id(rec)] = (rec, *self._record_parts(rec))
        head = self._users.get(user)
        if head is None:
            head = self._users[user] = '{"user_id": ' + json.dumps(user)
        return f'{head}{parts[1]}{now_ms}, "event_id": {self._run}{n}"{parts[2]}'.encode()

    @staticmethod
    def _record_parts(rec) -> tuple[str, str]:
        """The text between the customer's id and the timestamp, and after the event id (``payload``'s order)."""
        from schemas.events import TYPE_NAMES

        d = json.dumps
        mid = f', "item_id": {d(rec.item_id)}, "type": {d(TYPE_NAMES[rec.type_index])}, "timestamp": '
        return mid, f', "quantity": {d(rec.quantity)}, "value": {d(rec.value_cents / 100)}}}'


def producer(bootstrap: str):
    """A confluent-kafka Producer that batches (linger 5 ms, up to 10,000 messages, lz4)."""
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "lz4",
        }
    )


def offer(bootstrap: str, topic: str, events: Iterator, rate: float, seconds: float, run: str) -> dict:
    """Produce ``rate`` events/s (0: as fast as possible) for ``seconds``, each stamped with its produce time.

    Returns ``produced`` (customer -> produce times, ms), the events sent, the
    seconds the offer took (the producer's flush excluded) and the achieved rate.
    """
    prod = producer(bootstrap)
    wire = Wire(run)
    produced: dict[str, list[int]] = defaultdict(list)
    total = int(rate * seconds) if rate else None
    t0 = time.time()
    i = 0
    while True:
        elapsed = time.time() - t0
        if (total is not None and i >= total) or (total is None and elapsed >= seconds):
            break
        due = min(total, int(elapsed * rate) + 1) if total is not None else i + 2000
        now_ms = int(time.time() * 1000)
        for _ in range(i, due):
            nxt = next(events, None)
            if nxt is None:  # a finite workload ran out
                total = i
                break
            user, rec = nxt
            data = wire(user, rec, now_ms, i)
            while True:
                try:
                    prod.produce(topic, data, key=user.encode())
                    break
                except BufferError:
                    prod.poll(0.01)
            produced[user].append(now_ms)
            i += 1
        prod.poll(0)
        if total is not None:
            time.sleep(0.002)
    took = time.time() - t0
    prod.flush(120)
    return {"produced": produced, "events": i, "seconds": took, "achieved": i / took if took else 0.0}


def offer_customers(bootstrap: str, topic: str, events: Iterator, customers_per_s: float, seconds: float) -> int:
    """Offer one basket per customer to ``customers_per_s`` customers a second, for ``seconds``; events sent."""
    baskets = _baskets(events)
    prod = producer(bootstrap)
    t0 = time.time()
    done = sent = 0
    while time.time() - t0 < seconds:
        due = int((time.time() - t0) * customers_per_s) + 1
        now_ms = int(time.time() * 1000)
        for _ in range(done, due):
            user, recs = next(baskets)
            for j, rec in enumerate(recs):
                prod.produce(topic, payload(user, rec, now_ms, f"s{now_ms}-{done}-{j}"), key=user.encode())
            sent += len(recs)
            done += 1
        prod.poll(0)
        time.sleep(0.01)
    prod.flush(60)
    return sent


def _baskets(events: Iterator) -> Iterator[tuple[str, list]]:
    """Group consecutive events of one customer (a basket) from ``CloneWorkload.events``."""
    user, recs = None, []
    for u, rec in events:
        if u != user and recs:
            yield user, recs
            recs = []
        user = u
        recs.append(rec)
    if recs:
        yield user, recs
