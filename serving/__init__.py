"""The HTTP API of the feature engine: features, tips, feedback and deletion.

`serving.app.create_app` builds the FastAPI app; `oo-features serve` runs it.
It reads the store and publishes events through `connectors`, and uses the
registry of `features`; it never writes features and never names an agent.
"""
