"""What the daemon keeps about chats: subscribers, migrated groups, paused chats.

It lives in the store's ``meta`` table (each change one durable write), so it outlives
restarts: a subscriber keeps getting alerts, a group that became a supergroup keeps getting
them at its new id even though the config still names the old one, and a chat the bot cannot
post to keeps the time it was first refused.

    subscriptions    {watchlist: [chat, ...]}
    chat_moves       {old chat id: new chat id}
    paused_chats     {chat: {"since": epoch seconds, "reason": text}}
    delivery_paused  true while an admin has paused all delivery (/pause)
"""

from __future__ import annotations

from typing import Any, cast

from .config import Config
from .store import Store

SUBSCRIPTIONS = "subscriptions"
CHAT_MOVES = "chat_moves"
PAUSED_CHATS = "paused_chats"
DELIVERY_PAUSED = "delivery_paused"


class Chats:
    """Typed access to the chat state kept in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _get(self, key: str) -> dict[str, Any]:
        value = self._store.get_meta(key)
        return cast(dict[str, Any], value) if isinstance(value, dict) else {}

    # -- subscriptions -----------------------------------------------------------------------

    def subscribers(self, watchlist: str) -> tuple[str, ...]:
        """The private chats subscribed to a watchlist, in the order they subscribed."""
        return tuple(self._get(SUBSCRIPTIONS).get(watchlist, ()))

    def all_subscribers(self) -> dict[str, tuple[str, ...]]:
        """Watchlist -> its subscribers, for every watchlist (one read of the store)."""
        return {name: tuple(chats) for name, chats in self._get(SUBSCRIPTIONS).items()}

    def subscriptions(self, chat: str) -> list[str]:
        """The watchlists a chat is subscribed to, sorted."""
        return sorted(name for name, chats in self._get(SUBSCRIPTIONS).items() if chat in chats)

    def subscribe(self, chat: str, watchlist: str) -> bool:
        """Durably subscribe; False if it already was."""
        table = self._get(SUBSCRIPTIONS)
        chats = list(table.get(watchlist, ()))
        if chat in chats:
            return False
        table[watchlist] = [*chats, chat]
        self._store.set_meta(SUBSCRIPTIONS, table)
        return True

    def unsubscribe(self, chat: str, watchlist: str) -> bool:
        """Durably unsubscribe; False if it was not subscribed."""
        table = self._get(SUBSCRIPTIONS)
        chats = list(table.get(watchlist, ()))
        if chat not in chats:
            return False
        chats.remove(chat)
        if chats:
            table[watchlist] = chats
        else:
            del table[watchlist]
        self._store.set_meta(SUBSCRIPTIONS, table)
        return True

    # -- migrated groups ---------------------------------------------------------------------

    def moves(self) -> dict[str, str]:
        """Old chat id -> the id it moved to (a group that became a supergroup)."""
        return {str(old): str(new) for old, new in self._get(CHAT_MOVES).items()}

    def current(self, chat: str) -> str:
        """The id a chat has now, following every recorded move."""
        return follow(self.moves(), chat)

    def record_move(self, old: str, new: str) -> None:
        """Durably remember that ``old`` is now ``new``."""
        table = self._get(CHAT_MOVES)
        if table.get(old) != new:
            table[old] = new
            self._store.set_meta(CHAT_MOVES, table)

    # -- paused chats ------------------------------------------------------------------------

    def paused(self) -> dict[str, tuple[float, str]]:
        """Chats the bot could not post to: (first refused at, reason)."""
        return {
            chat: (float(value["since"]), str(value["reason"]))
            for chat, value in self._get(PAUSED_CHATS).items()
        }

    def pause(self, chat: str, reason: str, since: float) -> float:
        """Durably mark a chat paused, keeping the first refusal's time; return that time."""
        table = self._get(PAUSED_CHATS)
        first = float(table.get(chat, {}).get("since", since))
        table[chat] = {"since": first, "reason": reason}
        self._store.set_meta(PAUSED_CHATS, table)
        return first

    def unpause(self, chat: str) -> None:
        """Durably forget that a chat was paused."""
        table = self._get(PAUSED_CHATS)
        if table.pop(chat, None) is not None:
            self._store.set_meta(PAUSED_CHATS, table)

    # -- all delivery ------------------------------------------------------------------------

    @property
    def delivery_paused(self) -> bool:
        """True while an admin has paused all delivery."""
        return self._store.get_meta(DELIVERY_PAUSED) is True

    def set_delivery_paused(self, paused: bool) -> None:
        """Durably pause (or resume) all delivery."""
        self._store.set_meta(DELIVERY_PAUSED, True if paused else None)


def follow(moves: dict[str, str], chat: str) -> str:
    """The id ``chat`` has now, following ``moves`` (old id -> new id) to the end."""
    seen = {chat}
    while chat in moves and moves[chat] not in seen:
        chat = moves[chat]
        seen.add(chat)
    return chat


def configured_chats(config: Config, chats: Chats) -> set[str]:
    """Every chat the config sends to: the watchlists' channels (also at the ids groups moved
    to), the subscribers of watchlists open to subscription, and the admins.

    Per chat, not per (chat, watchlist): a queued alert names only the first watchlist that
    matched it (one alert per story per chat), so another that still sends to the chat may
    have matched it too; a chat in this set keeps all that is queued for it."""
    moves = chats.moves()
    channels = {chat for watchlist in config.watchlists for chat in watchlist.channels}
    found = channels | {follow(moves, chat) for chat in channels}
    subscribable = {watchlist.name for watchlist in config.watchlists if watchlist.subscribable}
    for name, subscribers in chats.all_subscribers().items():
        if name in subscribable:
            found.update(subscribers)
    found.update(str(admin) for admin in config.telegram.admins)
    return found
