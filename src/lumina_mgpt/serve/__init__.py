"""Serving: an OpenAI-compatible HTTP API that batches concurrent requests, and a Gradio web UI.

    from lumina_mgpt.serve.app import create_app        # or, from a shell: lumina-mgpt serve --model ...
    from lumina_mgpt.serve.limits import Limits
    app = create_app(LuminaMGPTPipeline.from_pretrained(), Limits(max_images=4))

Modules: `schemas` (request bodies), `limits`, `jobs` (validation and units of work), `batcher` (the decode
worker), `app` (routes, streaming, errors), `ui` (Gradio), `media` (PNG/base64/data URLs), `cli`, `launch`
(a server subprocess for tests and benchmarks). Nothing is imported here, so the CLI stays light.
"""
