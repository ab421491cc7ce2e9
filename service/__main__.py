"""`python -m service [--host H] [--port P] [--workers N|auto]`: check settings and models, then serve with uvicorn.

Start-up problems (a bad setting, a missing or corrupt model) end the process with one log line and
exit status 2, before uvicorn runs: its own lifespan-failure path would print a stack of tracebacks.
One worker is this process itself; several are spawned by a supervisor, after the same checks (service/workers.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from service.admission import Admission
from service.main import create_app
from service.manifest import ModelError
from service.runtime import Runtime
from service.server import DrainingServer, server_config
from service.settings import SettingsError, load_settings
from service.workers import supervise, worker_count

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the face detection models.")
    parser.add_argument("--host", help="bind address (default: FACEDET_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: FACEDET_PORT, else 8000)")
    parser.add_argument("--workers", help="worker processes, or auto: one per usable core "
                                          "(default: FACEDET_WORKERS, else auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    flags = (("host", args.host), ("port", args.port), ("workers", args.workers))
    overrides = {k: v for k, v in flags if v is not None}
    try:
        settings = load_settings(**overrides)
        logging.getLogger().setLevel(settings.log_level.upper())
        runtime = Runtime.load(settings)
    except (SettingsError, ModelError) as exc:
        log.error("cannot start: %s", exc)
        return 2

    count = worker_count(settings, (graph.providers[0] for graph in runtime.graphs.values()))
    if count > 1:
        del runtime  # checked; each worker opens its own sessions
        return supervise(settings, count)
    admission = Admission(settings)
    app = create_app(settings, runtime, admission)
    DrainingServer(server_config(settings, app), admission, settings.shutdown_delay_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
