"""`fillframe serve` as it was before engine hosts: the engine loaded in the API's own process and
filled in its threads. Only for `bench/e2e.py`, which measures the process hop against it.

Usage: .venv/bin/python -m bench.serve_in_thread --port 8001   (settings from FILLFRAME_* as usual)
"""

from __future__ import annotations

import argparse

import uvicorn

from fillframe.api.app import create_app
from fillframe.cli.common import load_and_log, migrate_db
from fillframe.engines import create_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_and_log()
    migrate_db(settings)
    engine = create_engine(settings)
    engine.load()
    uvicorn.run(create_app(settings, run_worker=True, engine=engine), port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
