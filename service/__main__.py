"""`python -m service [--host H] [--port P]`: check settings and models, then serve with uvicorn.

Start-up problems (a bad setting, a missing or corrupt model) end the process with one log line and
exit status 2, before uvicorn runs: its own lifespan-failure path would print a stack of tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from service.admission import Admission
from service.http import protocol_class
from service.main import create_app
from service.manifest import ModelError
from service.runtime import Runtime
from service.server import DrainingServer
from service.settings import SettingsError, load_settings

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the face detection models.")
    parser.add_argument("--host", help="bind address (default: FACEDET_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: FACEDET_PORT, else 8000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
        logging.getLogger().setLevel(settings.log_level.upper())
        runtime = Runtime.load(settings)
    except (SettingsError, ModelError) as exc:
        log.error("cannot start: %s", exc)
        return 2

    admission = Admission(settings)
    # The httptools protocol with header, timeout and connection limits (service/http.py).
    config = uvicorn.Config(create_app(settings, runtime, admission), host=settings.host, port=settings.port,
                            http=protocol_class(settings), timeout_keep_alive=settings.keepalive_s,
                            log_level=settings.log_level, access_log=settings.access_log,
                            timeout_graceful_shutdown=settings.graceful_timeout_s)
    DrainingServer(config, admission, settings.shutdown_delay_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
