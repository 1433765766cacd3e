"""Feed-to-Telegram alerts with Arabic-aware watchlist matching."""

import os

__version__ = "0.1.0"

# python-telegram-bot 22 warns on every RetryAfter unless it may give retry_after as a
# timedelta (its coming default). The delivery code reads both forms; opting in here, before
# any module imports telegram, keeps the warning out of operators' logs.
os.environ.setdefault("PTB_TIMEDELTA", "1")
