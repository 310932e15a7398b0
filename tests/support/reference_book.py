"""A deliberately simple, pure-Python MBO order book with Databento semantics (tests only).

It is the independent reference that generated data and, later, the numba engine are checked against,
so it favours readability over speed: a dict of orders and, per side, a dict price -> FIFO list of ids.

Semantics (see ../shared/notes/databento.md, section (d)):
- A: insert at the back of its level. A duplicate id is counted and ignored; a size-0 Add is counted.
- C: subtract `size` (partial cancel); the order goes at 0, the level goes when empty.
- M: new absolute price and size. A price change or a size increase sends the order to the back of the
  (new) level; a size decrease keeps its queue position. An unknown id is counted and inserted as an Add.
- R: clear everything. T, F and N never change the book (F on an unknown id is counted).
Problems are counted, never raised, so a test can assert on the counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BID = b"B"
ASK = b"A"
NO_SIDE = b"N"


def _byte(value: bytes | str | int) -> bytes:
    """b'A' from b'A', 'A', numpy bytes_ or an int code."""
    if isinstance(value, int):
        return bytes([value])
    if isinstance(value, str):
        return value.encode("ascii")
    return bytes(value)


@dataclass
class Order:
    side: bytes
    price: int
    size: int


@dataclass
class BookProblems:
    duplicate_add: int = 0
    zero_size_add: int = 0
    bad_side: int = 0
    unknown_cancel: int = 0
    unknown_modify: int = 0
    unknown_fill: int = 0
    over_cancel: int = 0  # C larger than the order's remaining size
    fill_mismatch: int = 0  # F whose side/price differs from the order, or larger than it
    unknown_action: int = 0
    details: list[str] = field(default_factory=list)

    def total(self) -> int:
        return (self.duplicate_add + self.zero_size_add + self.bad_side + self.unknown_cancel
                + self.unknown_modify + self.unknown_fill + self.over_cancel + self.fill_mismatch
                + self.unknown_action)

    def note(self, text: str) -> None:
        if len(self.details) < 20:
            self.details.append(text)


class ReferenceBook:
    """Price-time FIFO book for one instrument."""

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.levels: dict[bytes, dict[int, list[int]]] = {BID: {}, ASK: {}}
        self.problems = BookProblems()

    # ---- mutation ---------------------------------------------------------------------------
    def clear(self) -> None:
        self.orders.clear()
        self.levels = {BID: {}, ASK: {}}

    def _insert(self, order_id: int, side: bytes, price: int, size: int) -> None:
        self.orders[order_id] = Order(side, price, size)
        self.levels[side].setdefault(price, []).append(order_id)

    def _unlink(self, order_id: int) -> Order:
        order = self.orders[order_id]
        queue = self.levels[order.side][order.price]
        queue.remove(order_id)
        if not queue:
            del self.levels[order.side][order.price]
        return order

    def apply(self, action, side, price: int, size: int, order_id: int, flags: int = 0) -> None:
        """Apply one MBO record (action/side as bytes, str or int code)."""
        action, side = _byte(action), _byte(side)
        price, size, order_id = int(price), int(size), int(order_id)
        p = self.problems
        if action == b"R":
            self.clear()
            return
        if action in (b"T", b"N"):
            return
        if action == b"F":
            order = self.orders.get(order_id)
            if order is None:
                p.unknown_fill += 1
                p.note(f"F unknown order {order_id}")
            elif order.side != side or order.price != price or size > order.size or size <= 0:
                p.fill_mismatch += 1
                p.note(f"F {order_id} {side!r}@{price} x{size} vs book {order}")
            return
        if action not in (b"A", b"C", b"M"):
            p.unknown_action += 1
            return
        if side not in (BID, ASK):
            p.bad_side += 1
            p.note(f"{action!r} {order_id} with side {side!r}")
            return
        if action == b"A":
            if order_id in self.orders:
                p.duplicate_add += 1
                p.note(f"A duplicate order {order_id}")
                return
            if size <= 0:
                p.zero_size_add += 1
                p.note(f"A {order_id} with size {size}")
                return
            self._insert(order_id, side, price, size)
        elif action == b"C":
            order = self.orders.get(order_id)
            if order is None:
                p.unknown_cancel += 1
                p.note(f"C unknown order {order_id}")
                return
            if size > order.size:
                p.over_cancel += 1
                p.note(f"C {order_id} x{size} > remaining {order.size}")
            order.size -= size
            if order.size <= 0:
                self._unlink(order_id)
                del self.orders[order_id]
        else:  # M
            order = self.orders.get(order_id)
            if order is None:
                p.unknown_modify += 1
                p.note(f"M unknown order {order_id}")
                if size > 0:
                    self._insert(order_id, side, price, size)
                return
            if size <= 0:
                self._unlink(order_id)
                del self.orders[order_id]
            elif price != order.price or side != order.side or size > order.size:
                self._unlink(order_id)
                self._insert(order_id, side, price, size)  # loses priority: back of the level
            else:
                order.size = size  # size decrease keeps the queue position

    # ---- reading ----------------------------------------------------------------------------
    @property
    def best_bid(self) -> int | None:
        return max(self.levels[BID]) if self.levels[BID] else None

    @property
    def best_ask(self) -> int | None:
        return min(self.levels[ASK]) if self.levels[ASK] else None

    def is_crossed(self) -> bool:
        """True when both sides exist and best bid >= best ask (locked counts as crossed)."""
        bb, ba = self.best_bid, self.best_ask
        return bb is not None and ba is not None and bb >= ba

    def depth(self, side) -> dict[int, int]:
        """Total resting size per price level on one side, best level first."""
        side = _byte(side)
        prices = sorted(self.levels[side], reverse=(side == BID))
        return {px: sum(self.orders[oid].size for oid in self.levels[side][px]) for px in prices}

    def queue(self, side, price: int) -> list[int]:
        """Order ids resting at one level, in priority order."""
        return list(self.levels[_byte(side)].get(int(price), []))

    def __len__(self) -> int:
        return len(self.orders)
