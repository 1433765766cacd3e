"""The ``aggregator`` command: run, once, check-config, match, health, status, feeds.

Exit codes (scripts rely on them): 0 success; 1 ``once`` left alerts queued, ``health`` found the
daemon unhealthy (for any reason, a bad config included: Docker reserves 2), ``status`` found no
status to show; 2 the config, an OPML file or the command line is invalid; 3 the program could
not start (store locked or unreadable) or Telegram rejected the token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from . import __version__
from .compose import MessageOptions, render_console
from .config import LoadedConfig, load_config, read_token, resolve_config_path
from .daemon import Daemon, run_once
from .errors import ConfigError, DeliveryError, StoreError
from .health import check as check_health
from .logs import register_secret, setup_logging
from .matching import Matcher, format_explanations
from .models import FIELDS
from .opml import OpmlError, import_opml, read_opml_file, render_opml
from .pipeline import Alert
from .status import format_status, public_view

EXIT_OK, EXIT_QUEUED, EXIT_CONFIG, EXIT_START = 0, 1, 2, 3
EXIT_UNHEALTHY = EXIT_NO_STATUS = 1

log = logging.getLogger("aggregator.cli")

_EXAMPLES = {
    "run": "example:\n  aggregator run -c /etc/aggregator/config.toml",
    "once": "examples:\n  aggregator once -c config.toml\n"
    "  aggregator once --dry-run --json | jq .title",
    "check-config": "example:\n"
    "  aggregator check-config -c config.toml && systemctl reload aggregator",
    "match": 'examples:\n  aggregator match "أكّد وزير الدفاع ان #التدخل_الروسي في سوريا خطأ"\n'
    "  cat titles.txt | aggregator match --json",
    "health": "examples:\n  aggregator health -c /etc/aggregator/config.toml\n"
    '  HEALTHCHECK CMD ["aggregator", "health"]    (in a Dockerfile)',
    "status": "examples:\n  aggregator status -c /etc/aggregator/config.toml\n"
    "  aggregator status --json | jq '.feeds[] | select(.failures > 0) | .name'",
    "feeds": "examples:\n  aggregator feeds import subscriptions.opml -c config.toml\n"
    "  aggregator feeds export -c config.toml > feeds.opml",
    "feeds import": "examples:\n  aggregator feeds import --dry-run feedly.opml -c config.toml\n"
    "  aggregator feeds import feedly.opml -c config.toml && systemctl reload aggregator",
    "feeds export": "example:\n  aggregator feeds export -c config.toml > feeds.opml",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="config file (default: $AGGREGATOR_CONFIG, else ./config.toml)",
    )
    common.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )
    common.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: key=value lines; json: one object per line",
    )
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Watch news feeds and alert Telegram chats when a story matches a watchlist.",
        epilog="example:\n  aggregator run -c config.example.toml\n\n"
        "Run 'aggregator COMMAND --help' for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aggregator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary,
            epilog=_EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    add(
        "run",
        "Run the daemon: poll feeds on schedule and deliver alerts until SIGTERM/SIGINT. "
        "With no bot token configured, alerts are printed to the terminal.",
    )
    once = add(
        "once",
        "Poll every feed once, deliver every resulting alert, and exit: 0 when "
        "the outbox is empty, 1 when alerts are left queued for the next run.",
    )
    once.add_argument(
        "--dry-run", action="store_true", help="send nothing and change no state; print the alerts"
    )
    once.add_argument(
        "--json", action="store_true", help="print one JSON object per alert on stdout"
    )
    once.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for Telegram to take the alerts (default: 300)",
    )
    add(
        "check-config",
        "Validate the config: exit 0 when valid, else exit 2 and list every "
        "problem with its key path. Warnings do not fail.",
    )
    match = add(
        "match",
        "Show which watchlists match each text, which terms, and why; texts are "
        "the arguments, or stdin one per line.",
    )
    match.add_argument("texts", nargs="*", metavar="TEXT")
    match.add_argument(
        "--json",
        action="store_true",
        help='one object per text: {"text", "matches": [{"watchlist", "terms"}]}',
    )
    match.add_argument(
        "--field",
        default="title",
        choices=FIELDS,
        help="which item field the text stands for (default: title)",
    )
    add(
        "health",
        "Exit 0 when the daemon is running and healthy: polls keep succeeding and delivery is "
        "not blocked. Otherwise exit 1 and say why. Reads the status file the daemon keeps "
        "beside its store.",
    )
    status = add(
        "status",
        "Show what the daemon is doing: each feed's last and next poll, failures and items, "
        "each watchlist's matches in the last 24 hours, and the alerts queued per chat.",
    )
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    feeds_summary = "Import feeds from an OPML file into the config, or export them as OPML."
    # No common options at this level: argparse would let the action's defaults overwrite them.
    feeds = sub.add_parser(
        "feeds",
        help=feeds_summary,
        description=feeds_summary,
        epilog=_EXAMPLES["feeds"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    feeds_sub = feeds.add_subparsers(dest="feeds_command", required=True, metavar="ACTION")

    def add_feeds(name: str, summary: str) -> argparse.ArgumentParser:
        return feeds_sub.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary,
            epilog=_EXAMPLES[f"feeds {name}"],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    feeds_import = add_feeds(
        "import",
        "Add the feeds of an OPML file (a feed reader's export) to the config file, keeping its "
        "comments and layout. Feeds already there (same URL or name) are skipped; each folder "
        "becomes a tag. Reload the daemon afterwards (systemctl reload aggregator).",
    )
    feeds_import.add_argument(
        "file", metavar="FILE.opml", type=Path, help="an OPML export (Feedly, Inoreader, ...)"
    )
    feeds_import.add_argument(
        "--dry-run", action="store_true", help="show what would be added; change nothing"
    )
    add_feeds("export", "Write the config's feeds as OPML 2.0 to stdout, folders by tag.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    path = resolve_config_path(args.config)
    if args.command == "check-config":
        return _check_config(path)
    if args.command == "feeds" and args.feeds_command == "import":
        return _feeds_import(path, args.file, dry_run=args.dry_run)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY if args.command == "health" else EXIT_CONFIG
    if args.command == "match":
        return _match(loaded, args.texts, as_json=args.json, field=args.field)
    if args.command == "health":
        verdict, _ = check_health(loaded.storage_path, time.time())
        print(verdict.line())
        return EXIT_OK if verdict.healthy else EXIT_UNHEALTHY
    if args.command == "status":
        return _status(loaded, as_json=args.json)
    if args.command == "feeds":
        print(
            render_opml(
                loaded.config.feeds, title=f"aggregator feeds ({path})", now=datetime.now(UTC)
            ),
            end="",
        )
        return EXIT_OK
    try:
        token = read_token(loaded)
    except ConfigError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if token:
        register_secret(token)
    try:
        if args.command == "run":
            return asyncio.run(Daemon(loaded, token).run())
        return asyncio.run(_once(loaded, token, args))
    except StoreError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_START
    except ConfigError as exc:  # e.g. a proxy variable of the environment that cannot be used
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DeliveryError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_START


async def _once(loaded: LoadedConfig, token: str | None, args: argparse.Namespace) -> int:
    # With --json, standard output is the JSON lines alone: alerts printed for want of a token
    # go to standard error.
    outcomes, left = await run_once(
        loaded,
        token,
        dry_run=args.dry_run,
        timeout_s=args.timeout,
        console=sys.stderr if args.json else None,
    )
    alerts = [alert for outcome in outcomes for alert in outcome.alerts]
    options = MessageOptions(timezone=ZoneInfo(loaded.config.telegram.timezone))
    for alert in alerts:
        if args.json:
            print(json.dumps(alert_json(alert), ensure_ascii=False), flush=True)
        elif args.dry_run:
            print(
                render_console(
                    alert.item,
                    alert.match,
                    source=alert.source,
                    options=options,
                    color=sys.stdout.isatty(),
                ),
                flush=True,
            )
    failed = [o for o in outcomes if o.status == "error"]
    print(
        f"aggregator: polled {len(outcomes)} feeds ({len(failed)} failed), "
        f"{len(alerts)} alerts{' (dry run: nothing sent, nothing saved)' if args.dry_run else ''}",
        file=sys.stderr,
    )
    if left:
        print(
            f"aggregator: {left} alerts could not be delivered within {args.timeout:g}s; "
            "they stay queued for the next run",
            file=sys.stderr,
        )
        return EXIT_QUEUED
    return EXIT_OK


def alert_json(alert: Alert) -> dict[str, object]:
    """The documented --json object of one alert."""
    item = alert.item
    return {
        "watchlist": alert.match.watchlist,
        "channels": list(alert.channels),
        "feed": item.feed,
        "title": item.title,
        "link": item.link,
        "published": item.published.isoformat() if item.published else None,
        "matched": [{"term": h.term, "field": h.field} for h in alert.match.hits],
        "text": alert.message.html,
    }


def _check_config(path: Path) -> int:
    try:
        loaded = load_config(path)
        read_token(loaded)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for key, message in exc.problems:
            print(f"  {key}: {message}" if key else f"  {message}", file=sys.stderr)
        return EXIT_CONFIG
    for key, message in loaded.warnings:
        print(f"warning: {key}: {message}", file=sys.stderr)
    config = loaded.config
    print(
        f"{path}: valid ({len(config.feeds)} feeds, {len(config.watchlists)} watchlists"
        f"{f', {len(loaded.warnings)} warnings' if loaded.warnings else ''})"
    )
    return EXIT_OK


def _status(loaded: LoadedConfig, *, as_json: bool) -> int:
    now = time.time()
    verdict, status = check_health(loaded.storage_path, now)
    if status is None:
        print(f"aggregator: {verdict.summary}", file=sys.stderr)
        return EXIT_NO_STATUS
    if as_json:
        data = public_view(status)
        data["health"] = {
            "healthy": verdict.healthy,
            "summary": verdict.line(),
            "problems": [{"kind": p.kind, "message": p.message} for p in verdict.problems],
        }
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(format_status(status, f"health: {verdict.line()}", now))
    return EXIT_OK


def _feeds_import(path: Path, opml_path: Path, *, dry_run: bool) -> int:
    try:
        feeds = read_opml_file(opml_path)
        plan = import_opml(path, feeds, dry_run=dry_run)
    except OpmlError as exc:
        print(f"aggregator: {exc}; {path} is unchanged", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        print(f"aggregator: {path} is unchanged", file=sys.stderr)
        return EXIT_CONFIG
    verb = "would add" if dry_run else "added"
    for table in plan.added:
        tags = f" tags={','.join(table['tags'])}" if table.get("tags") else ""
        print(f"{verb} {table['name']} {table['url']}{tags}")
    for feed, reason in plan.skipped:
        print(f"skipped {feed.title or '(untitled)'} {feed.url}: {reason}")
    if dry_run:
        outcome = f"{len(plan.added)} feeds would be added (dry run: {path} is unchanged)"
    elif plan.added:
        outcome = (
            f"{len(plan.added)} feeds added to {path}; reload the daemon to poll them "
            "(systemctl reload aggregator, or SIGHUP)"
        )
    else:
        outcome = f"nothing to add; {path} is unchanged"
    print(
        f"aggregator: {len(feeds)} feeds in {opml_path}: {outcome}, {len(plan.skipped)} skipped",
        file=sys.stderr,
    )
    return EXIT_OK


def _match(loaded: LoadedConfig, texts: list[str], *, as_json: bool, field: str) -> int:
    matcher = Matcher([w.rules() for w in loaded.config.watchlists])
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in texts:
        fields = {name: (text if name == field else "") for name in FIELDS}
        if as_json:
            matches = [
                {
                    "watchlist": m.watchlist,
                    "terms": list(dict.fromkeys(h.term for h in m.hits)),
                    "hits": [{"term": h.term, "field": h.field, "text": h.text} for h in m.hits],
                }
                for m in matcher.match(fields)
            ]
            print(json.dumps({"text": text, "matches": matches}, ensure_ascii=False))
        else:
            print(format_explanations(text, matcher.explain(fields)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
