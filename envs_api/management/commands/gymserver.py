"""Serve gymsite like the seed server: ``python manage.py gymserver -l HOST -p PORT``."""

from __future__ import annotations

import ipaddress
import signal
import sys
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.wsgi import get_wsgi_application
from waitress.server import create_server

from envs_api import services


class Command(BaseCommand):
    help = (
        "Apply pending migrations, then serve the API with a threaded HTTP/1.1 server."
    )

    requires_system_checks: list[str] = []  # checked below, after argument parsing

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-l", "--listen", default="127.0.0.1", help="interface to listen to"
        )
        parser.add_argument(
            "-p", "--port", type=int, default=5000, help="port to bind to"
        )
        parser.add_argument(
            "--threads", type=int, default=8, help="worker threads (default 8)"
        )
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="do not apply pending migrations first",
        )
        parser.add_argument(
            "--allow-anonymous-remote",
            action="store_true",
            help="listen on a non-loopback address even though anonymous access is on",
        )

    def handle(self, *args: Any, **options: Any) -> str:
        self.check(display_num_errors=False)
        if (
            settings.GYM_ALLOW_ANONYMOUS
            and not _is_loopback(options["listen"])
            and not options["allow_anonymous_remote"]
        ):
            raise CommandError(
                f"Refusing to listen on {options['listen']} with anonymous access on: anyone "
                "who can reach the port could use and close every anonymous instance. Set "
                "GYM_ALLOW_ANONYMOUS=false and give users tokens (manage.py gymuser NAME), "
                "or pass --allow-anonymous-remote if this network is yours alone."
            )
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        server = create_server(
            get_wsgi_application(),
            host=options["listen"],
            port=options["port"],
            threads=max(1, options["threads"]),
            ident="gymsite",
            # Refused with waitress's own 413 before being read; smaller oversized
            # bodies get the JSON 413 of BodySizeLimitMiddleware. Bodies over 512 KiB
            # are spooled to disk, not memory, until then.
            max_request_body_size=max(16 * 2**20, 4 * settings.GYM_MAX_BODY_BYTES),
            clear_untrusted_proxy_headers=True,
        )
        signal.signal(signal.SIGTERM, _exit)
        db = settings.DATABASES["default"]
        self.stdout.write(
            f"gymsite serving on http://{options['listen']}:{server.effective_port}/ "
            f"({db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}; "
            f"monitor root {settings.GYM_MONITOR_ROOT})"
        )
        self.stdout.flush()
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            server.close()
            services.shutdown()  # write the counters still held in memory
        return "gymsite stopped"


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave the serve loop so the counters are flushed."""
    sys.exit(0)
