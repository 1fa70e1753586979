"""python -m demo [--port 7860]: the demo alone, on 127.0.0.1, with no share link."""

from __future__ import annotations

import argparse

DEFAULT_PORT = 7860  # Gradio's usual port; the BentoML service uses 3000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Launch the Gradio demo over the models in $MODELS_STORE "
                                                 "(default ./models_store).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    import uvicorn

    from serving import http_limits

    from serving.ui_app import ui_app  # the page and its API as the service mounts them, behind serving.ui_guard

    http_limits.install()  # the service's limits on request heads

    print(f"The demo: http://{args.host}:{args.port}/")
    uvicorn.run(ui_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
