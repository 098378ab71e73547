"""`larvseg-demo`: the Gradio demo of demo/app.py (shipped in the package as `larvseg_hf.demo_app`)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Console entry; `argv` defaults to the command line (see `larvseg-demo --help`)."""
    try:
        from larvseg_hf import demo_app
    except ImportError as err:
        if getattr(err, "name", None) in ("gradio", "gradio_client", "pandas"):
            raise SystemExit(
                f"larvseg-demo needs the demo extra ({err.name} is missing): pip install 'larvseg-hf[demo]'"
            ) from err
        raise
    demo_app.main(argv)


if __name__ == "__main__":
    main()
