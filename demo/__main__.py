"""python -m demo [--port 7860]: the demo alone, on 127.0.0.1, with no share link."""

from __future__ import annotations

import argparse

from .ui import LAUNCH_OPTIONS

DEFAULT_PORT = 7860  # Gradio's usual port; the BentoML service uses 3000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Launch the Gradio demo over the models in $MODELS_STORE "
                                                 "(default ./models_store).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    from .app import demo  # builds the page and loads the models

    demo.launch(server_name=args.host, server_port=args.port, share=False, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
