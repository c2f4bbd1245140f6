"""HTTP API: FastAPI app, wire schemas, errors and one module per area under routes/."""
