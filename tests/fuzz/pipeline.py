"""The property every fuzzer checks: bytes go through parse → match → compose safely.

Only ParseError may come out of parse; match and compose must not raise at all; every message
must be HTML that Telegram's parser accepts (the fake Bot API's parser is the judge) and at most
4096 UTF-16 units once parsed. Watchlists that fire often, Arabic ones included, make sure that
fuzzed documents get as far as compose.
"""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.compose import MessageOptions, compose_alert
from aggregator.matching import Matcher, WatchlistRules
from aggregator.parse import ParseError, parse_feed
from tests.servers.fake_telegram import parse_telegram_html, utf16_length

TELEGRAM_LIMIT = 4096
MATCHER = Matcher(
    (
        WatchlistRules(name="canary", any=("canary", "Syria", "US", "word*")),
        WatchlistRules(name="arabic", any=("#سوريا", "التدخل_الروسي", "سوري*", "عبد الله")),
        WatchlistRules(name="common", any=("the", "a", "في", "من")),
        WatchlistRules(name="query", query='(سوريا OR Syria) AND NOT "كرة القدم"'),
        WatchlistRules(name="categories", any=("news", "أخبار"), fields=("categories",)),
    )
)
OPTIONS = MessageOptions()


def check_pipeline(body: bytes, headers: Mapping[str, str] | None = None) -> list[int]:
    """Parse, match and compose ``body``; assert every message is valid; return their lengths."""
    try:
        feed = parse_feed(body, feed_name="fuzz", headers=headers, base_url="http://x.example/f")
    except ParseError:
        return []
    lengths = []
    for item in feed.items:
        for match in MATCHER.match(item.fields(), feed="fuzz"):
            message = compose_alert(item, match, source=feed.title or "fuzz", options=OPTIONS)
            shown = parse_telegram_html(message.html)  # raises ValueError where Telegram refuses
            length = utf16_length(shown)
            assert length <= TELEGRAM_LIMIT, f"message of {length} UTF-16 units"
            lengths.append(length)
    return lengths
